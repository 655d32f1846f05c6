//! Network sensor: connect as the syscall sees it (entry + exit, for the
//! event) and as the cgroup hooks see it, where a connection (or a UDP
//! datagram, for QUIC) is refused before any byte leaves — io_uring included.

use agentwatch_common::{
    event::{AlertEvent, ConnectEvent, SOCKADDR_CAP},
    maps::{AllowKey, ConnectArgs, HostClass, counter},
    names::{Action, Kind},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, TracePointContext},
};

use crate::{
    emit::{Urgency, fill_header, send, send_value},
    maps::{ALLOW_ONCE, INFRA4, INFRA6, PENDING_CONNECTS, USER_TAINT, count},
    scratch::CONNECT_SCRATCH,
    session::{member, sock_addr_member},
    syscall::{arg, ret},
};

/// Return values of a cgroup sock_addr program.
const ALLOW: i32 = 1;
const DENY: i32 = 0;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(member) = member((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let args = ConnectArgs {
        addr: arg(&ctx, 1),
        session: member.session,
        addr_len: arg(&ctx, 2) as u32,
    };
    if PENDING_CONNECTS.insert(pid_tgid, args, 0).is_err() {
        count(counter::PENDING_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_connect")]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { PENDING_CONNECTS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING_CONNECTS.remove(pid_tgid);
    // The hook may have just killed the session: die before returning.
    let _ = member((pid_tgid >> 32) as u32);
    let Some(event) = CONNECT_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let event: &mut ConnectEvent = unsafe { &mut *event };
    fill_header(&mut event.header, Kind::Connect, args.session);
    event.ret = ret(&ctx);
    let mut len = args.addr_len as usize;
    if len > SOCKADDR_CAP {
        len = SOCKADDR_CAP;
    }
    let read = unsafe {
        bpf_probe_read_user(
            event.addr.as_mut_ptr().cast(),
            len as u32,
            args.addr as *const _,
        )
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
    judge_v4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    judge_v6(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    judge_v4(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    judge_v6(&ctx)
}

#[inline(always)]
fn port_of(ctx: &SockAddrContext) -> u16 {
    u16::from_be(unsafe { (*ctx.sock_addr).user_port } as u16)
}

#[inline(always)]
fn judge_v4(ctx: &SockAddrContext) -> i32 {
    let ip = unsafe { (*ctx.sock_addr).user_ip4 };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    judge(AF_INET, addr, port_of(ctx), || {
        unsafe { INFRA4.get(ip) }.copied()
    })
}

#[inline(always)]
fn judge_v6(ctx: &SockAddrContext) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let words = [
        sa.user_ip6[0],
        sa.user_ip6[1],
        sa.user_ip6[2],
        sa.user_ip6[3],
    ];
    let mut addr = [0u8; 16];
    for (i, word) in words.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    // ::ffff:a.b.c.d reaches an IPv4 host through an IPv6 socket.
    let mapped_v4 = words[0] == 0 && words[1] == 0 && words[2] == u32::from_be(0xffff);
    judge(AF_INET6, addr, port_of(ctx), || {
        if mapped_v4 {
            unsafe { INFRA4.get(words[3]) }.copied()
        } else {
            unsafe { INFRA6.get(addr) }.copied()
        }
    })
}

/// The decision, made in the connecting task before the connection exists:
/// refuse when the session holds a credential that counts against the
/// destination and no allow rule covers it.
#[inline(always)]
fn judge(family: u16, addr: [u8; 16], port: u16, host: impl FnOnce() -> Option<HostClass>) -> i32 {
    let Some(member) = sock_addr_member((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return ALLOW;
    };
    if member.state.is_null() {
        return ALLOW;
    }
    let state = unsafe { *member.state };
    let found = unsafe { USER_TAINT.get(member.session) }
        .copied()
        .unwrap_or(0);
    let creds = state.creds | found;
    if creds == 0 {
        return ALLOW;
    }
    let Some(host) = host() else {
        return ALLOW;
    };
    let held = creds & host.classes;
    if held & !host.allowed == 0 {
        return ALLOW;
    }
    // A human approved exactly this retry.
    let approved = AllowKey {
        session: member.session,
        _pad: 0,
        addr,
    };
    if unsafe { ALLOW_ONCE.get(approved) }.is_some() && ALLOW_ONCE.remove(approved).is_ok() {
        return ALLOW;
    }
    let mut alert = AlertEvent::default();
    fill_header(&mut alert.header, Kind::Alert, member.session);
    alert.held = held;
    alert.last_classes = state.last_classes;
    alert.last_ns = state.last_ns;
    alert.action = state.action;
    alert.domain = host.domain;
    alert.family = family;
    alert.port = port;
    alert.addr = addr;
    send_value(&alert, Kind::Alert, Urgency::Now);
    match Action::try_from(state.action) {
        Ok(Action::Observe | Action::Alert) => ALLOW,
        Ok(Action::Kill) => {
            member.kill();
            DENY
        }
        Ok(Action::Ask) => {
            member.stop();
            DENY
        }
        Ok(Action::Block) | Err(_) => DENY,
    }
}
