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

#[derive(Debug, Default)]
pub struct HostCache {
    names: HashMap<IpAddr, (String, NameSource)>,
    order: VecDeque<IpAddr>,
}

impl HostCache {
    pub fn learn(&mut self, name: &str, addrs: &[IpAddr], source: NameSource) {
        for &addr in addrs {
            if self
                .names
                .insert(addr, (name.to_string(), source))
                .is_none()
            {
                self.order.push_back(addr);
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
            .map(|(name, source)| (name.as_str(), *source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_remembers_the_latest_name() {
        let mut cache = HostCache::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        cache.learn("a.example", &[addr], NameSource::Dns);
        cache.learn("b.example", &[addr], NameSource::HostsFile);
        assert_eq!(
            cache.name_of(addr),
            Some(("b.example", NameSource::HostsFile))
        );
        for i in 0..(CACHE_CAPACITY as u32 + 10) {
            cache.learn("x", &[IpAddr::from(i.to_be_bytes())], NameSource::Dns);
        }
        assert!(cache.names.len() <= CACHE_CAPACITY);
        assert_eq!(cache.names.len(), cache.order.len());
    }
}
