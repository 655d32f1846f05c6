//! Network sensor: connect as the syscall sees it (entry + exit, for the
//! event) and as the cgroup hook sees it (where a connection can be refused
//! before it is made, io_uring included).

use agentwatch_common::{
    event::{ConnectEvent, SOCKADDR_CAP, kind},
    maps::{ConnectArgs, counter},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{cgroup_sock_addr, tracepoint},
    programs::{SockAddrContext, TracePointContext},
};

use crate::{
    emit::{fill_header, send},
    maps::{CONNECT_SCRATCH, PENDING_CONNECTS, count, session_of},
    syscall::{arg, ret},
};

/// Return value of a cgroup sock_addr program that lets the call proceed.
const ALLOW: i32 = 1;

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(session) = session_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let args = ConnectArgs {
        addr: arg(&ctx, 1),
        session,
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
    let Some(event) = CONNECT_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let event: &mut ConnectEvent = unsafe { &mut *event };
    fill_header(&mut event.header, kind::CONNECT, args.session);
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
        kind::CONNECT,
    );
    0
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(_ctx: SockAddrContext) -> i32 {
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(_ctx: SockAddrContext) -> i32 {
    ALLOW
}
