//! An address → name cache of what DNS answered (the kernel's sniffed
//! responses and the system resolver's) and what /etc/hosts says, each name
//! with how it was learned, so every connect event and alert can carry the
//! hostname and its source.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use agentwatch_common::names::NameSource;

/// Names remembered for addresses; the oldest is forgotten first.
const CACHE_CAPACITY: usize = 8192;

/// What is known of an address: the latest name given for it, and the
/// latest infrastructure name (an address a CDN shares is both).
#[derive(Debug)]
struct Known {
    latest: String,
    source: NameSource,
    latest_is_infrastructure: bool,
    infrastructure: Option<String>,
}

#[derive(Debug, Default)]
pub struct HostCache {
    names: HashMap<IpAddr, Known>,
    order: VecDeque<IpAddr>,
}

impl HostCache {
    /// Remembers `name` for `addrs`; `infrastructure` when the name (or its
    /// CNAME chain) is under the catalog.
    pub fn learn(
        &mut self,
        name: &str,
        addrs: &[IpAddr],
        source: NameSource,
        infrastructure: bool,
    ) {
        for &addr in addrs {
            let infra = infrastructure.then(|| name.to_string());
            match self.names.get_mut(&addr) {
                Some(known) => {
                    // The system resolver reads /etc/hosts first: a DNS
                    // answer repeating its entry (dnsmasq serves it too)
                    // does not make it DNS's.
                    let repeats_hosts_file = known.latest == name
                        && known.source == NameSource::HostsFile
                        && source == NameSource::Dns;
                    known.latest = name.to_string();
                    if !repeats_hosts_file {
                        known.source = source;
                    }
                    known.latest_is_infrastructure = infrastructure;
                    if infra.is_some() {
                        known.infrastructure = infra;
                    }
                }
                None => {
                    self.names.insert(
                        addr,
                        Known {
                            latest: name.to_string(),
                            source,
                            latest_is_infrastructure: infrastructure,
                            infrastructure: infra,
                        },
                    );
                    self.order.push_back(addr);
                }
            }
        }
        while self.order.len() > CACHE_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
    }

    /// The latest name learned for `addr`, and how.
    pub fn name_of(&self, addr: IpAddr) -> Option<(&str, NameSource)> {
        self.names
            .get(&addr)
            .map(|known| (known.latest.as_str(), known.source))
    }

    /// The latest infrastructure name learned for `addr`.
    pub fn infrastructure_name_of(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(&addr)?.infrastructure.as_deref()
    }

    /// Whether the latest name given for `addr` is not infrastructure.
    pub fn latest_is_other(&self, addr: IpAddr) -> bool {
        self.names
            .get(&addr)
            .is_some_and(|known| !known.latest_is_infrastructure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_remembers_the_latest_name() {
        let mut cache = HostCache::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        cache.learn("api.example", &[addr], NameSource::Dns, true);
        cache.learn("b.example", &[addr], NameSource::HostsFile, false);
        assert_eq!(
            cache.name_of(addr),
            Some(("b.example", NameSource::HostsFile))
        );
        // A shared address keeps its infrastructure name.
        assert_eq!(cache.infrastructure_name_of(addr), Some("api.example"));
        assert!(cache.latest_is_other(addr));
        for i in 0..(CACHE_CAPACITY as u32 + 10) {
            cache.learn(
                "x",
                &[IpAddr::from(i.to_be_bytes())],
                NameSource::Dns,
                false,
            );
        }
        assert!(cache.names.len() <= CACHE_CAPACITY);
        assert_eq!(cache.names.len(), cache.order.len());
    }
}
