//! Names judged against the catalog in the kernel, by suffix hash.

use agentwatch_common::{
    dns::MAX_LABELS,
    hash::{SUFFIX_SEED, suffix_step},
    maps::HostClass,
};

use crate::{
    judge::Destination,
    maps::{DOMAINS, INFRA4, INFRA6},
};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// How a name counts, from its label hashes rightmost first: every suffix
/// is looked up, shortest first, so the longest listed suffix decides (an
/// excluded sub-domain beats its parent). `None` when no suffix is listed
/// or the deciding one is excluded.
#[inline(always)]
pub fn classify(label_from_right: impl Fn(u32) -> Option<u64>) -> Option<HostClass> {
    let mut hash = SUFFIX_SEED;
    let mut found: Option<HostClass> = None;
    for i in 0..MAX_LABELS as u32 {
        let Some(label) = label_from_right(i) else {
            break;
        };
        hash = suffix_step(hash, label);
        if let Some(host) = unsafe { DOMAINS.get(hash) } {
            found = Some(*host);
        }
    }
    found.filter(|host| host.classes != 0)
}

/// How an address counts: IPv4, IPv6, or IPv4 reached through an IPv6
/// socket (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn address_host(to: &Destination) -> Option<HostClass> {
    let addr = &to.addr;
    let v4 = |at: usize| u32::from_ne_bytes([addr[at], addr[at + 1], addr[at + 2], addr[at + 3]]);
    let host = if to.family == AF_INET {
        unsafe { INFRA4.get(v4(0)) }
    } else if addr[..10] == [0; 10] && addr[10] == 0xff && addr[11] == 0xff {
        unsafe { INFRA4.get(v4(12)) }
    } else {
        unsafe { INFRA6.get(*addr) }
    };
    host.copied().filter(|host| host.classes != 0)
}
