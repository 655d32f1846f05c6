//! Network sensor: connect as the syscall sees it (at its exit, for the
//! event) and as the cgroup hooks see it. A TCP connect to an address only
//! infrastructure names resolved to is refused there, before the connection
//! exists (io_uring included); every other TCP connection of a session is
//! marked for the first-write judgment (`first_write.rs`). A UDP `connect()`
//! sends nothing (glibc's address sorting does one per DNS answer) and is
//! only marked: datagrams are judged when sent, unconnected ones in the
//! sendmsg hooks and connected ones (QUIC) at egress.

use agentwatch_common::{
    event::{ConnectEvent, SOCKADDR_CAP},
    maps::{SocketMark, counter, socket_flags},
    names::Kind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_socket_cookie, bpf_probe_read_user},
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, tracepoint},
    programs::{SkBuffContext, SockAddrContext, SockContext, TracePointContext},
};

use crate::{
    catalog::{AF_INET, AF_INET6, address_host},
    emit::{fill_header, fill_session_header, send},
    judge::{Decision, Destination, held_credentials, judge},
    maps::{SOCKET_MARKS, UNINSPECTED, config, count, flag_uninspected, sockets_full},
    operation::{granted, tls_inspected},
    scratch::CONNECT_SCRATCH,
    session::{Member, member, packet_member, session_of, sock_addr_member},
    syscall::{entry_args, ret},
};

/// Return values of cgroup sock_addr and skb programs.
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const SOCK_STREAM: u32 = 1;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u16 = 0x02;
const IPPROTO_MPTCP: u32 = 262;

/// An MPTCP socket cannot enter a sockhash, so its writes could not be
/// judged by name: a session may not create one (`socket()` fails with
/// EPERM, and MPTCP-aware programs fall back to TCP).
#[cgroup_sock(sock_create)]
pub fn socket_create(ctx: SockContext) -> i32 {
    // SAFETY: a field of the program's context.
    let protocol = unsafe { (*ctx.sock).protocol };
    if protocol != IPPROTO_MPTCP || session_of((bpf_get_current_pid_tgid() >> 32) as u32).is_none()
    {
        return ALLOW;
    }
    count(counter::MPTCP_REFUSED);
    DENY
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    // The hook may have just killed the session: die before returning.
    let Some(member) = member((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return 0;
    };
    let [_, addr, addr_len] = entry_args();
    let Some(event) = CONNECT_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let event: &mut ConnectEvent = unsafe { &mut *event };
    fill_header(&mut event.header, Kind::Connect, member.session);
    event.ret = ret(&ctx);
    let mut len = addr_len as u32 as usize;
    if len > SOCKADDR_CAP {
        len = SOCKADDR_CAP;
    }
    let read = unsafe {
        bpf_probe_read_user(event.addr.as_mut_ptr().cast(), len as u32, addr as *const _)
    };
    if read != 0 {
        count(counter::READ_FAILED);
        len = 0;
    }
    event.addr_len = len as u32;
    send(
        event as *const ConnectEvent,
        event.wire_len(),
        Kind::Connect,
    );
    0
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, destination_v4(&ctx))
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, destination_v6(&ctx))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    on_datagram(destination_v4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    on_datagram(destination_v6(&ctx))
}

#[inline(always)]
fn port_of(ctx: &SockAddrContext) -> u16 {
    u16::from_be(unsafe { (*ctx.sock_addr).user_port } as u16)
}

#[inline(always)]
fn destination_v4(ctx: &SockAddrContext) -> Destination {
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    Destination {
        family: AF_INET,
        port: port_of(ctx),
        addr,
    }
}

#[inline(always)]
fn destination_v6(ctx: &SockAddrContext) -> Destination {
    let sa = unsafe { &*ctx.sock_addr };
    let mut addr = [0u8; 16];
    for (i, word) in sa.user_ip6.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Destination {
        family: AF_INET6,
        port: port_of(ctx),
        addr,
    }
}

/// A session's connect, in the connecting task before the connection exists.
#[inline(always)]
fn on_connect(ctx: &SockAddrContext, to: Destination) -> i32 {
    let Some(member) = sock_addr_member((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return ALLOW;
    };
    let stream = unsafe { (*ctx.sock_addr).type_ } == SOCK_STREAM;
    let decision = if stream {
        judge_address(&member, &to, true)
    } else {
        Decision::Allow
    };
    if decision == Decision::Refuse {
        return DENY;
    }
    let mark = SocketMark {
        session: member.session,
        flags: if decision == Decision::Approved {
            socket_flags::APPROVED
        } else {
            0
        },
    };
    // SAFETY: the context's own socket, as the helper expects.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    if SOCKET_MARKS.insert(cookie, mark, 0).is_err() {
        count(counter::SOCKET_MARKS_FULL);
    }
    ALLOW
}

/// An unconnected datagram (sendto with an address), judged as it is sent.
#[inline(always)]
fn on_datagram(to: Destination) -> i32 {
    let Some(member) = sock_addr_member((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return ALLOW;
    };
    if judge_address(&member, &to, false) == Decision::Refuse {
        DENY
    } else {
        ALLOW
    }
}

/// Judges a destination by its address. A TCP connect to an address DNS
/// also gave a non-infrastructure name is left to its first write's name,
/// when the first-write programs are attached; a datagram has no name to
/// wait for.
#[inline(always)]
fn judge_address(member: &Member, to: &Destination, may_wait_for_name: bool) -> Decision {
    let creds = held_credentials(member);
    if creds == 0 {
        return Decision::Allow;
    }
    let Some(host) = address_host(to) else {
        return Decision::Allow;
    };
    if granted(creds & host.classes) {
        return Decision::Allow;
    }
    // A socket that could not be watched gets no name: judged here. One of
    // a process whose TLS requests are judged at SSL_write waits for them.
    let waits = host.shared != 0 || tls_inspected();
    if may_wait_for_name && waits && config().first_write != 0 && !sockets_full() {
        return Decision::Allow;
    }
    judge(member, creds, &host, to, None, fill_header)
}

/// What leaves a session's socket without passing a hook that judged it:
/// connected datagrams (QUIC, a connected UDP socket's `send`), which pass
/// no sendmsg hook, and the segments of a TCP connection whose data no
/// sk_msg program saw: one that could not be watched, or that sent data in
/// its SYN (TCP Fast Open). A refused datagram's sender gets EPERM; a
/// dropped segment never reaches the peer.
#[cgroup_skb(egress)]
pub fn socket_egress(ctx: SkBuffContext) -> i32 {
    if refuse_egress(&ctx) { DENY } else { ALLOW }
}

#[inline(always)]
fn refuse_egress(ctx: &SkBuffContext) -> bool {
    let Some((protocol, to, syn_data)) = destination(ctx) else {
        return false;
    };
    // Other TCP is looked at only once a connection went uninspected.
    if protocol == IPPROTO_TCP && !syn_data && UNINSPECTED.get(0).copied().unwrap_or(0) == 0 {
        return false;
    }
    // SAFETY: the context's own skb, as the helper expects.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let Some(mark) = SOCKET_MARKS.get_ptr_mut(cookie) else {
        return false;
    };
    // SAFETY: a live map value, used by this program run.
    let mark = unsafe { &mut *mark };
    if syn_data {
        // Data in a SYN, before any sk_msg program can see the socket: the
        // connection is judged by address, here, from now on.
        mark.flags |= socket_flags::UNINSPECTED;
        count(counter::FAST_OPEN);
        flag_uninspected();
    }
    if protocol == IPPROTO_TCP {
        if mark.flags & socket_flags::UNINSPECTED == 0 {
            return false;
        }
        if mark.flags & socket_flags::REFUSED != 0 {
            return true;
        }
    }
    if mark.flags & socket_flags::APPROVED != 0 {
        return false;
    }
    let member = packet_member(mark.session);
    let creds = held_credentials(&member);
    if creds == 0 {
        return false;
    }
    let Some(host) = address_host(&to) else {
        return false;
    };
    // No task is certain here: the session is flagged, and its processes
    // are killed or stopped at their next traced system call.
    let refused = judge(&member, creds, &host, &to, None, fill_session_header) == Decision::Refuse;
    if refused && protocol == IPPROTO_TCP {
        mark.flags |= socket_flags::REFUSED;
    }
    refused
}

/// Protocol and destination of a UDP or TCP packet (the skb starts at the
/// IP header), and whether it is a SYN carrying data.
#[inline(always)]
fn destination(ctx: &SkBuffContext) -> Option<(u8, Destination, bool)> {
    let first: u8 = ctx.load(0).ok()?;
    let mut addr = [0u8; 16];
    let (protocol, family, header) = match first >> 4 {
        4 => {
            let protocol = ctx.load::<u8>(9).ok()?;
            addr[..4].copy_from_slice(&ctx.load::<[u8; 4]>(16).ok()?);
            (protocol, AF_INET, u32::from(first & 0xf) * 4)
        }
        6 => {
            addr = ctx.load::<[u8; 16]>(24).ok()?;
            (ctx.load::<u8>(6).ok()?, AF_INET6, 40)
        }
        _ => return None,
    };
    if protocol != IPPROTO_UDP && protocol != IPPROTO_TCP {
        return None;
    }
    // The destination port is the second word of both headers.
    let port = u16::from_be(ctx.load::<u16>(header as usize + 2).ok()?);
    let syn_data = protocol == IPPROTO_TCP && {
        let offset_flags = u16::from_be(ctx.load::<u16>(header as usize + 12).ok()?);
        let tcp_header = u32::from(offset_flags >> 12) * 4;
        offset_flags & TCP_SYN != 0 && ctx.len() > header + tcp_header
    };
    Some((protocol, Destination { family, port, addr }, syn_data))
}
