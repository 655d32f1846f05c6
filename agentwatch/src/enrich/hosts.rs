//! An address → name cache of what DNS answered (the kernel's sniffed
//! responses and the system resolver's), so every connect event and alert
//! can carry the hostname.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

/// Names remembered for addresses; the oldest is forgotten first.
const CACHE_CAPACITY: usize = 8192;

#[derive(Debug, Default)]
pub struct HostCache {
    names: HashMap<IpAddr, String>,
    order: VecDeque<IpAddr>,
}

impl HostCache {
    pub fn learn(&mut self, name: &str, addrs: &[IpAddr]) {
        for &addr in addrs {
            if self.names.insert(addr, name.to_string()).is_none() {
                self.order.push_back(addr);
            }
        }
        while self.order.len() > CACHE_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.names.remove(&oldest);
            }
        }
    }

    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(&addr).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_bounded_and_remembers_the_latest_name() {
        let mut cache = HostCache::default();
        let addr: IpAddr = "10.0.0.1".parse().unwrap();
        cache.learn("a.example", &[addr]);
        cache.learn("b.example", &[addr]);
        assert_eq!(cache.name_of(addr), Some("b.example"));
        for i in 0..(CACHE_CAPACITY as u32 + 10) {
            cache.learn("x", &[IpAddr::from(i.to_be_bytes())]);
        }
        assert!(cache.names.len() <= CACHE_CAPACITY);
        assert_eq!(cache.names.len(), cache.order.len());
    }
}
