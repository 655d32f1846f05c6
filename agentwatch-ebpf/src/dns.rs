//! DNS sensor: a cgroup skb ingress program on the root cgroup sees every
//! DNS response delivered on the host (loopback included) before the
//! resolver reads it, over UDP or TCP, and records the addresses of
//! infrastructure names: those answered for a question under the catalog,
//! or at the end of a CNAME chain that reaches one. There is no task here:
//! what is learned is keyed by address.

use core::{ffi::c_void, ptr::read_volatile};

use agentwatch_common::{
    dns::{DNS_CAP, DnsParser, DnsStream, MAX_LABELS, MAX_STEPS, Piece, Segment, Step},
    maps::{HostClass, counter},
    names::{Kind, NameSource},
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_boot_ns, bpf_loop, bpf_skb_load_bytes},
    macros::cgroup_skb,
    programs::SkBuffContext,
};

use crate::{
    catalog::classify,
    emit::send,
    maps::{INFRA4, INFRA6, count},
    scratch::{DNS_FLOWS, DNS_SCRATCH, DnsFlow, DnsFlowKey, DnsScratch},
};

const PASS: i32 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DNS_PORT: u16 = 53;
const UDP_HEADER: u32 = 8;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
/// Pieces walked per TCP segment: three a message (two length bytes, the
/// message) for ten messages, and a spare. A segment holding more is counted
/// and its connection no longer followed.
const PIECES: u32 = 32;

#[cgroup_skb(ingress)]
pub fn dns_ingress(ctx: SkBuffContext) -> i32 {
    let _ = learn(&ctx);
    PASS
}

/// IP version, transport protocol and transport header offset of a packet
/// from port 53, else None.
#[inline(always)]
fn from_dns_port(ctx: &SkBuffContext) -> Option<(u8, u8, u32)> {
    let first: u8 = ctx.load(0).ok()?;
    let version = first >> 4;
    let (protocol, transport) = match version {
        4 => {
            // Fragments other than the first carry no transport header.
            if u16::from_be(ctx.load::<u16>(6).ok()?) & 0x1fff != 0 {
                return None;
            }
            (ctx.load::<u8>(9).ok()?, u32::from(first & 0xf) * 4)
        }
        // No extension headers: DNS responses do not use them.
        6 => (ctx.load::<u8>(6).ok()?, 40),
        _ => return None,
    };
    if protocol != IPPROTO_UDP && protocol != IPPROTO_TCP {
        return None;
    }
    if u16::from_be(ctx.load::<u16>(transport as usize).ok()?) != DNS_PORT {
        return None;
    }
    Some((version, protocol, transport))
}

#[inline(always)]
fn learn(ctx: &SkBuffContext) -> Option<()> {
    let (version, protocol, transport) = from_dns_port(ctx)?;
    if protocol == IPPROTO_TCP {
        return learn_tcp(ctx, version, transport);
    }
    let payload = transport + UDP_HEADER;
    let mut len = ctx.len().checked_sub(payload)? as usize;
    if len > DNS_CAP {
        len = DNS_CAP;
    }
    if len < 12 {
        return None;
    }
    // SAFETY: a per-CPU slot, used by nothing else on this CPU meanwhile.
    let work = unsafe { &mut (*DNS_SCRATCH.get_ptr_mut(0)?).flow.work };
    // SAFETY: `len` bytes fit the payload buffer.
    let loaded = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const c_void,
            payload,
            work.event.payload.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if loaded != 0 {
        return None;
    }
    parse(work, len as u32);
    Some(())
}

/// Parses the message of `len` bytes in `work`, records what it teaches, and
/// sends it to user space for its address → name cache.
#[inline(always)]
fn parse(work: &mut DnsScratch, len: u32) {
    let Some(parser) = DnsParser::start(&work.event.payload, len) else {
        return;
    };
    work.parser = parser;
    work.matched = 0;
    let mut at: *mut DnsScratch = work;
    // SAFETY: the callback gets a pointer to `at`, which outlives the loop.
    unsafe {
        bpf_loop(
            MAX_STEPS,
            dns_step as *mut c_void,
            (&mut at as *mut *mut DnsScratch).cast(),
            0,
        );
    }
    let event = &mut work.event;
    event.header = Default::default();
    event.header.kind = Kind::Dns.code();
    // SAFETY: no arguments; reads a clock.
    event.header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    event.len = work.parser.len;
    event.domain = if work.matched != 0 {
        work.host.domain + 1
    } else {
        0
    };
    send(event as *const _, event.wire_len(), Kind::Dns);
}

extern "C" fn dns_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `parse` passes a pointer to a pointer to a live map value.
    let work = unsafe { &mut **(ctx as *mut *mut DnsScratch) };
    match work.parser.step(&work.event.payload) {
        Step::Continue => 0,
        Step::Question | Step::Target => {
            if work.matched == 0 {
                match_name(work);
            }
            if work.matched != 0 {
                // Only the addresses are left to learn.
                work.parser.targets_left = 0;
            }
            0
        }
        Step::Address { offset, len } => {
            if work.matched != 0 {
                remember(work, offset, len);
            } else {
                mark_shared(work, offset, len);
            }
            0
        }
        Step::Done => 1,
        Step::Malformed => {
            count(counter::DNS_MALFORMED);
            1
        }
    }
}

/// How the name just hashed counts, by the catalog's suffix rule.
#[inline(always)]
fn match_name(work: &mut DnsScratch) {
    let labels = work.parser.labels_kept() as u32;
    let hashes = &work.parser.label_hashes;
    let found =
        classify(|i| (i < labels).then(|| hashes[(labels - 1 - i) as usize & (MAX_LABELS - 1)]));
    if let Some(host) = found {
        work.host = HostClass {
            learned: NameSource::Dns.code(),
            ..host
        };
        work.matched = 1;
    }
}

/// An A or AAAA answer's address.
enum Answered {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[inline(always)]
fn answered(work: &DnsScratch, offset: u32, len: u32) -> Answered {
    let at = offset as usize & (DNS_CAP - 1);
    let payload = &work.event.payload;
    if len == 4 {
        let mut ip = [0u8; 4];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        Answered::V4(ip)
    } else {
        let mut ip = [0u8; 16];
        for (i, byte) in ip.iter_mut().enumerate() {
            *byte = payload[(at + i) & (DNS_CAP - 1)];
        }
        Answered::V6(ip)
    }
}

/// Records an answered address; the machine's own localhost names
/// (127.0.0.1, ::1, unspecified) are never infrastructure, whatever a hosts
/// file or resolver says, so local services keep working.
#[inline(always)]
fn remember(work: &DnsScratch, offset: u32, len: u32) {
    let inserted = match answered(work, offset, len) {
        Answered::V4(ip) => {
            if ip == [127, 0, 0, 1] || ip == [0, 0, 0, 0] {
                return;
            }
            let key = u32::from_ne_bytes(ip);
            INFRA4.insert(key, work.host.learned_over(unsafe { INFRA4.get(key) }), 0)
        }
        Answered::V6(ip) => {
            if ip[..15] == [0; 15] && ip[15] <= 1 {
                return;
            }
            INFRA6.insert(ip, work.host.learned_over(unsafe { INFRA6.get(ip) }), 0)
        }
    };
    if inserted.is_err() {
        count(counter::INFRA_FULL);
    }
}

/// An address given for a name that is not infrastructure, and known as
/// infrastructure's, is shared (a CDN or anycast pool): connects to it wait
/// for the name their first write asks for.
#[inline(always)]
fn mark_shared(work: &DnsScratch, offset: u32, len: u32) {
    let host = match answered(work, offset, len) {
        Answered::V4(ip) => INFRA4.get_ptr_mut(u32::from_ne_bytes(ip)),
        Answered::V6(ip) => INFRA6.get_ptr_mut(ip),
    };
    if let Some(host) = host {
        // SAFETY: a live map value; a single word written the same by all.
        unsafe { (*host).shared = 1 };
    }
}

/// A TCP segment from port 53: the server's SYN-ACK starts following the
/// connection; data goes through its stream, a message at a time (each
/// prefixed by its length), whatever the segments' boundaries.
#[inline(always)]
fn learn_tcp(ctx: &SkBuffContext, version: u8, tcp: u32) -> Option<()> {
    let mut key = DnsFlowKey {
        family: version,
        local_port: u16::from_be(ctx.load::<u16>(tcp as usize + 2).ok()?),
        ..DnsFlowKey::default()
    };
    if version == 4 {
        key.remote[..4].copy_from_slice(&ctx.load::<[u8; 4]>(12).ok()?);
        key.local[..4].copy_from_slice(&ctx.load::<[u8; 4]>(16).ok()?);
    } else {
        key.remote = ctx.load::<[u8; 16]>(8).ok()?;
        key.local = ctx.load::<[u8; 16]>(24).ok()?;
    }
    let seq = u32::from_be(ctx.load::<u32>(tcp as usize + 4).ok()?);
    let header_words: u8 = ctx.load(tcp as usize + 12).ok()?;
    let flags: u8 = ctx.load(tcp as usize + 13).ok()?;
    if flags & TCP_SYN != 0 {
        // SAFETY: a per-CPU slot, used by nothing else on this CPU meanwhile.
        let template = unsafe { &mut (*DNS_SCRATCH.get_ptr_mut(0)?).flow };
        template.stream = DnsStream::new(seq.wrapping_add(1));
        if DNS_FLOWS.insert(key, template, 0).is_err() {
            count(counter::DNS_TCP_UNFOLLOWED);
        }
        return Some(());
    }
    let payload = tcp + u32::from(header_words >> 4) * 4;
    let len = ctx.len().saturating_sub(payload);
    if len > 0 && !follow(ctx, &key, seq, payload, len) {
        count(counter::DNS_TCP_UNFOLLOWED);
        let _ = DNS_FLOWS.remove(key);
    }
    if flags & (TCP_FIN | TCP_RST) != 0 {
        let _ = DNS_FLOWS.remove(key);
    }
    Some(())
}

/// What a walk of one segment's pieces needs besides the per-CPU cursor.
#[repr(C)]
struct TcpWalk {
    skb: *mut c_void,
    flow: *mut DnsFlow,
}

/// Walks a segment of `len` payload bytes at `payload` through its
/// connection's stream; false when the connection cannot be followed.
#[inline(always)]
fn follow(ctx: &SkBuffContext, key: &DnsFlowKey, seq: u32, payload: u32, len: u32) -> bool {
    let Some(flow) = DNS_FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: a live map value; a connection's segments arrive one at a time.
    match unsafe { (*flow).stream.segment(seq, len) } {
        Segment::Next => {}
        Segment::Old => return true,
        Segment::Gap => return false,
    }
    let Some(cursor) = DNS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU slot, used by nothing else on this CPU meanwhile.
    unsafe {
        (*cursor).at = payload;
        (*cursor).end = payload + len;
    }
    let mut walk = TcpWalk {
        skb: ctx.skb.skb.cast(),
        flow,
    };
    // SAFETY: the callback gets a pointer to `walk`, which outlives the loop.
    unsafe {
        bpf_loop(
            PIECES,
            tcp_piece as *mut c_void,
            (&mut walk as *mut TcpWalk).cast(),
            0,
        );
        (*cursor).at >= (*cursor).end
    }
}

extern "C" fn tcp_piece(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `follow` passes a pointer to its `TcpWalk`, whose pointers
    // are the program's skb and a live map value.
    let (skb, flow) = unsafe {
        let walk = &*(ctx as *const TcpWalk);
        (walk.skb, &mut *walk.flow)
    };
    let Some(cursor) = DNS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: a per-CPU slot, used by nothing else on this CPU meanwhile.
    let cursor = unsafe { &mut *cursor };
    if cursor.at >= cursor.end {
        return 1;
    }
    let piece = flow.stream.piece(cursor.end - cursor.at);
    match piece {
        Piece::PrefixByte => {
            let mut byte = 0u8;
            // SAFETY: one byte into a stack variable.
            if unsafe { bpf_skb_load_bytes(skb, cursor.at, (&mut byte as *mut u8).cast(), 1) } != 0
            {
                return 1;
            }
            flow.stream.prefix_byte(byte);
        }
        Piece::Store { at, len } => {
            // `piece` bounds both by comparing two registers, which older
            // verifiers (6.1) narrow no range by: read them back opaquely,
            // so the compiler keeps masks that state the bounds (1 to
            // DNS_CAP bytes, below DNS_CAP), identities for these values.
            // SAFETY: reads of initialised locals.
            let (at, len) = unsafe { (read_volatile(&at), read_volatile(&len)) };
            if len == 0 {
                return 1;
            }
            let len = ((len - 1) & (DNS_CAP as u32 - 1)) + 1;
            let buf = flow.work.event.payload.as_mut_ptr();
            // SAFETY: the payload is followed by DNS_CAP bytes of slack, so
            // any masked position plus a DNS_CAP copy stays inside the value.
            let loaded = unsafe {
                bpf_skb_load_bytes(
                    skb,
                    cursor.at,
                    buf.add(at as usize & (DNS_CAP - 1)).cast(),
                    len,
                )
            };
            if loaded != 0 {
                return 1;
            }
        }
        Piece::Skip { .. } => {}
    }
    cursor.at += piece.bytes();
    if let Some(kept) = flow.stream.complete() {
        parse(&mut flow.work, kept);
    }
    0
}
