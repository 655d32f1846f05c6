//! DNS sensor: a cgroup skb ingress program on the root cgroup sees every
//! DNS response delivered on the host (loopback included) before the
//! resolver reads it, and records the addresses of infrastructure names.
//! There is no task here: what is learned is keyed by address.

use core::ffi::c_void;

use agentwatch_common::{
    dns::{DNS_CAP, DnsParser, MAX_LABELS, MAX_STEPS, Step},
    hash::{SUFFIX_SEED, suffix_step},
    maps::{HostClass, counter},
    names::{Kind, NameSource},
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_loop, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    emit::send,
    maps::{DOMAINS, INFRA4, INFRA6, count},
    scratch::{DNS_SCRATCH, DnsScratch},
};

const PASS: i32 = 1;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const UDP_HEADER: u32 = 8;

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = learn(&ctx);
    PASS
}

/// Offset of the UDP header of a packet from port 53, else None.
#[inline(always)]
fn dns_udp_offset(ctx: &SkBuffContext) -> Option<u32> {
    let first: u8 = ctx.load(0).ok()?;
    let udp = match first >> 4 {
        4 => {
            if ctx.load::<u8>(9).ok()? != IPPROTO_UDP {
                return None;
            }
            // Fragments other than the first carry no UDP header.
            if u16::from_be(ctx.load::<u16>(6).ok()?) & 0x1fff != 0 {
                return None;
            }
            u32::from(first & 0xf) * 4
        }
        6 => {
            // No extension headers: DNS responses do not use them.
            if ctx.load::<u8>(6).ok()? != IPPROTO_UDP {
                return None;
            }
            40
        }
        _ => return None,
    };
    if u16::from_be(ctx.load::<u16>(udp as usize).ok()?) != DNS_PORT {
        return None;
    }
    Some(udp)
}

#[inline(always)]
fn learn(ctx: &SkBuffContext) -> Option<()> {
    let udp = dns_udp_offset(ctx)?;
    let payload = udp + UDP_HEADER;
    let mut len = ctx.len().checked_sub(payload)? as usize;
    if len > DNS_CAP {
        len = DNS_CAP;
    }
    if len < 12 {
        return None;
    }
    let scratch: &mut DnsScratch = unsafe { &mut *DNS_SCRATCH.get_ptr_mut(0)? };
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            payload,
            scratch.event.payload.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if loaded != 0 {
        return None;
    }
    scratch.parser = DnsParser::start(&scratch.event.payload, len as u32)?;
    scratch.matched = 0;
    unsafe {
        bpf_loop(MAX_STEPS, dns_step as *mut c_void, core::ptr::null_mut(), 0);
    }
    // Every response goes to user space too, for its address → name cache.
    let event = &mut scratch.event;
    event.header = Default::default();
    event.header.kind = Kind::Dns.code();
    event.header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    event.len = len as u32;
    event.domain = if scratch.matched != 0 {
        scratch.host.domain + 1
    } else {
        0
    };
    send(event as *const _, event.wire_len(), Kind::Dns);
    Some(())
}

extern "C" fn dns_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let scratch = unsafe { &mut *scratch };
    match scratch.parser.step(&scratch.event.payload) {
        Step::Continue => 0,
        Step::Question => {
            match_question(scratch);
            0
        }
        Step::Address { offset, len } => {
            remember(scratch, offset, len);
            0
        }
        Step::Done => 1,
        Step::Malformed => {
            count(counter::DNS_MALFORMED);
            1
        }
    }
}

/// Looks up every suffix of the question name, shortest first, so the
/// longest listed suffix decides (an excluded sub-domain beats its parent).
#[inline(always)]
fn match_question(scratch: &mut DnsScratch) {
    let labels = scratch.parser.labels_kept();
    let mut hash = SUFFIX_SEED;
    for i in 0..MAX_LABELS {
        if i >= labels {
            break;
        }
        let label = scratch.parser.label_hashes[(labels - 1 - i) & (MAX_LABELS - 1)];
        hash = suffix_step(hash, label);
        if let Some(host) = unsafe { DOMAINS.get(hash) } {
            scratch.host = HostClass {
                learned: NameSource::Dns.code(),
                ..*host
            };
            scratch.matched = 1;
        }
    }
    if scratch.matched != 0 && scratch.host.classes == 0 {
        scratch.matched = 0;
    }
}

/// Records an answered address; the machine's own localhost names
/// (127.0.0.1, ::1, unspecified) are never infrastructure, whatever a hosts
/// file or resolver says, so local services keep working. An address given
/// for a name that is not infrastructure, and known as infrastructure's,
/// is shared (a CDN or anycast pool): connects to it wait for their name.
#[inline(always)]
fn remember(scratch: &DnsScratch, offset: u32, len: u32) {
    if scratch.matched == 0 {
        mark_shared(scratch, offset, len);
        return;
    }
    let at = offset as usize & (DNS_CAP - 1);
    let payload = &scratch.event.payload;
    let inserted = if len == 4 {
        let mut ip = [0u8; 4];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        if ip == [127, 0, 0, 1] || ip == [0, 0, 0, 0] {
            return;
        }
        let key = u32::from_ne_bytes(ip);
        INFRA4.insert(
            key,
            still_shared(scratch.host, unsafe { INFRA4.get(key) }),
            0,
        )
    } else {
        let mut ip = [0u8; 16];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        if ip[..15] == [0; 15] && ip[15] <= 1 {
            return;
        }
        INFRA6.insert(ip, still_shared(scratch.host, unsafe { INFRA6.get(ip) }), 0)
    };
    if inserted.is_err() {
        count(counter::INFRA_FULL);
    }
}

/// An address learned again stays shared if it was.
#[inline(always)]
fn still_shared(host: HostClass, known: Option<&HostClass>) -> HostClass {
    HostClass {
        shared: known.map_or(0, |known| known.shared),
        ..host
    }
}

#[inline(always)]
fn mark_shared(scratch: &DnsScratch, offset: u32, len: u32) {
    let at = offset as usize & (DNS_CAP - 1);
    let payload = &scratch.event.payload;
    let host = if len == 4 {
        let mut ip = [0u8; 4];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        INFRA4.get_ptr_mut(u32::from_ne_bytes(ip))
    } else {
        let mut ip = [0u8; 16];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        INFRA6.get_ptr_mut(ip)
    };
    if let Some(host) = host {
        // SAFETY: a live map value; a single word written the same by all.
        unsafe { (*host).shared = 1 };
    }
}
