//! Infrastructure addresses from the system resolver. The kernel learns
//! addresses from the DNS responses it sees; user space also resolves the
//! catalog's exact hostnames (covering /etc/hosts and answers cached before
//! agentwatch started) so the kernel's address tables hold them too.

use std::{net::IpAddr, time::Duration};

use tokio::{net::lookup_host, task::JoinHandle, time::timeout};

/// How long one resolution may take before it is given up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the exact hostnames are resolved again.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// The machine's own localhost addresses are never infrastructure, whatever a
/// hosts file says (people point API names at 127.0.0.1 to block them).
pub fn is_localhost(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1] || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

/// Resolves each name through the system resolver, concurrently; names that
/// fail or time out are left out (they are retried at the next refresh).
pub async fn resolve_all(names: &[String]) -> Resolved {
    let lookups = names.iter().map(|name| async move {
        let addrs = match timeout(RESOLVE_TIMEOUT, lookup_host((name.as_str(), 443))).await {
            Ok(Ok(addrs)) => addrs.map(|addr| addr.ip()).collect(),
            _ => Vec::new(),
        };
        (name.clone(), addrs)
    });
    futures::future::join_all(lookups)
        .await
        .into_iter()
        .filter(|(_, addrs): &(String, Vec<IpAddr>)| !addrs.is_empty())
        .collect()
}

/// What [`resolve_all`] found for each name.
pub type Resolved = Vec<(String, Vec<IpAddr>)>;

/// A resolution running beside the event loop: neither a start nor a loop
/// turn waits on the network.
#[derive(Default)]
pub struct Resolutions {
    running: Option<JoinHandle<Resolved>>,
}

impl Resolutions {
    /// Starts resolving `names`, unless the last resolution still runs.
    pub fn start(&mut self, names: &[String]) {
        if self.running.is_none() {
            let names = names.to_vec();
            self.running = Some(tokio::spawn(async move { resolve_all(&names).await }));
        }
    }

    /// The running resolution's answers when it ends; pending while none runs.
    pub async fn next(&mut self) -> Resolved {
        let Some(running) = &mut self.running else {
            return std::future::pending().await;
        };
        let resolved = running.await.unwrap_or_default();
        self.running = None;
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_never_infrastructure() {
        for addr in ["127.0.0.1", "::1", "0.0.0.0", "::"] {
            assert!(is_localhost(addr.parse().unwrap()), "{addr}");
        }
        // Other loopback addresses are what test DNS servers answer with.
        assert!(!is_localhost("127.0.0.2".parse().unwrap()));
    }

    #[tokio::test]
    async fn resolves_through_the_system_resolver() {
        let resolved = resolve_all(&["localhost".to_string()]).await;
        assert_eq!(resolved.len(), 1);
        assert!(resolved[0].1.iter().all(|addr| addr.is_loopback()));
    }
}
