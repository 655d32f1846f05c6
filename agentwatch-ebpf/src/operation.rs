//! Operation sensor: what a session's call does, seen before it can act.
//! A TLS request is read at `SSL_write`/`SSL_write_ex` (libssl, node's
//! built-in OpenSSL) or Go's `crypto/tls.(*Conn).Write`, before it is
//! encrypted: a tainted session's writer is
//! stopped there until user space has judged the request, and refused at
//! the socket if the judgment says so. Those probes are attached per
//! process, when a session's process first uses OpenSSL (it is stopped
//! until they are), so that processes outside sessions never trap. A
//! cataloged command (`terraform`, `railway`, `kubectl`) is stopped at
//! exec, before its first instruction, until user space has judged its argv.

use agentwatch_common::{
    event::{EventHeader, ExecEvent, TLS_CAP, TlsWriteEvent},
    hash::comm_hash,
    maps::counter,
    names::{Kind, TlsProbeState},
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_send_signal},
    },
    macros::uprobe,
    programs::ProbeContext,
};

use crate::{
    emit::{fill_header, reserve, submit_now},
    judge::held_credentials,
    maps::{COMMAND_GRANTS, COMMANDS, PROCS, REFUSED_WRITERS, TLS_PROCS, count, scans_pending},
    session::{SIGKILL, SIGSTOP, member},
};

/// On `OPENSSL_init_ssl`, `SSL_CTX_new` and `SSL_new` (machine-wide: once
/// per connection, not per write): a session's process that uses probed
/// OpenSSL for the first time is stopped until user space has attached its
/// `SSL_write` probes and marked it `Probed`.
#[uprobe]
pub fn tls_library(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(info) = (unsafe { PROCS.get(tgid) }) else {
        return 0;
    };
    if unsafe { TLS_PROCS.get(tgid) }.is_some() {
        return 0;
    }
    let Some(mut entry) = reserve::<EventHeader>(Kind::TlsProcess) else {
        // Left unprobed: its requests are judged by host (fail closed).
        count(counter::TLS_PROCESSES_UNPROBED);
        return 0;
    };
    if TLS_PROCS
        .insert(tgid, TlsProbeState::Pending.code(), 0)
        .is_err()
    {
        count(counter::TLS_PROCESSES_UNPROBED);
        entry.discard(0);
        return 0;
    }
    // SAFETY: the reserved record, written only by this program run.
    fill_header(
        unsafe { &mut *entry.as_mut_ptr() },
        Kind::TlsProcess,
        info.session,
    );
    count(counter::TLS_PROCESSES_HELD);
    // Before the record, so that user space's SIGCONT comes after it.
    unsafe { bpf_send_signal(SIGSTOP) };
    submit_now(entry);
    0
}

/// On `SSL_write(ssl, buf, num)` and `SSL_write_ex(ssl, buf, num, written)`.
#[uprobe]
pub fn tls_write(ctx: ProbeContext) -> u32 {
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    // `int` for SSL_write, `size_t` for SSL_write_ex: the low 32 bits.
    let len = ctx.arg::<u64>(2).unwrap_or(0) as u32;
    judge_write(ssl, buf, len)
}

/// On Go's `crypto/tls.(*Conn).Write(b []byte)`, in Go's register ABI
/// (Go 1.17 on amd64): the receiver in RAX, the slice's pointer and length
/// in RBX and RCX. The `*Conn` stands for the `SSL *`.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    // SAFETY: the probe's own register snapshot, valid for this run.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    // A write of 4 GiB or more is cut like any other beyond TLS_CAP.
    judge_write(conn, buf, len.min(u64::from(u32::MAX)) as u32)
}

/// A TLS write of `len` bytes at `buf` on connection `ssl`: a tainted
/// session's writer, or one whose reads are still being scanned, is
/// stopped until user space has judged it.
#[inline(always)]
fn judge_write(ssl: u64, buf: u64, len: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(member) = member((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // An untainted session's requests cannot misuse a credential, unless
    // a read it made is still being scanned (read before the taint: see
    // `scans_pending`); a process a human approved may use what its
    // session holds.
    let fenced = scans_pending(member.session);
    let held = held_credentials(&member);
    if held == 0 {
        if !fenced {
            return 0;
        }
    } else if granted(held) {
        return 0;
    }
    // Reserved first: once the writer is stopped, its record must reach
    // user space, and user space's SIGCONT must come after the SIGSTOP.
    let Some(mut entry) = reserve::<TlsWriteEvent>(Kind::TlsWrite) else {
        // Unseen by user space: refused at the socket, never let through.
        count(counter::TLS_WRITES_UNJUDGED);
        let _ = REFUSED_WRITERS.insert(pid_tgid, 1, 0);
        return 0;
    };
    // SAFETY: the reserved record, written only by this program run.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    fill_header(&mut event.header, Kind::TlsWrite, member.session);
    event.ssl = ssl;
    event.held = held;
    event.len = len;
    // The mask shows the verifier the bound (TLS_CAP is a power of two).
    let copied = if len as usize >= TLS_CAP {
        TLS_CAP as u32 - 1
    } else {
        len
    } & (TLS_CAP as u32 - 1);
    // SAFETY: reads the caller's buffer into the record, bounded by TLS_CAP.
    let read =
        unsafe { bpf_probe_read_user(event.data.as_mut_ptr().cast(), copied, buf as *const _) };
    event.copied = if read == 0 { copied } else { 0 };
    count(if held == 0 {
        counter::TLS_WRITES_FENCED
    } else {
        counter::TLS_WRITES_HELD
    });
    // Delivered as the probe returns: the writer stops before `SSL_write`
    // has encrypted a byte.
    unsafe { bpf_send_signal(SIGSTOP) };
    submit_now(entry);
    0
}

/// At a session's exec: what the old image was granted or used is gone,
/// and a cataloged command is stopped before its first instruction. Returns
/// whether `event` must reach user space at once.
#[inline(always)]
pub fn exec_judgment(tgid: u32, event: &mut ExecEvent) -> bool {
    let _ = TLS_PROCS.remove(tgid);
    let _ = COMMAND_GRANTS.remove(tgid);
    let comm = bpf_get_current_comm().unwrap_or_default();
    event.hold = u8::from(unsafe { COMMANDS.get(comm_hash(&comm)) }.is_some());
    event.hold != 0
}

/// Stops a held command before its exec event is sent, so that user
/// space's SIGCONT always comes after the SIGSTOP.
#[inline(always)]
pub fn hold_command() {
    count(counter::COMMANDS_HELD);
    unsafe { bpf_send_signal(SIGSTOP) };
}

/// A held command whose exec event could not be sent dies: no cataloged
/// command runs unjudged.
#[inline(always)]
pub fn kill_unjudged_command() {
    count(counter::COMMANDS_UNJUDGED);
    unsafe { bpf_send_signal(SIGKILL) };
}

/// At a session process's exit, and for a new process of a session (a
/// reused pid must not inherit what an earlier process was granted or
/// trusted with).
#[inline(always)]
pub fn forget_process(tgid: u32) {
    let _ = TLS_PROCS.remove(tgid);
    let _ = COMMAND_GRANTS.remove(tgid);
}

/// Whether the calling process may use `held` with a host: a command
/// judged to only read was granted its provider's classes.
#[inline(always)]
pub fn granted(held: u64) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe { COMMAND_GRANTS.get(tgid) }.is_some_and(|classes| held & !classes == 0)
}

/// Whether the calling process's TLS requests are judged at `SSL_write`.
#[inline(always)]
pub fn tls_inspected() -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe { TLS_PROCS.get(tgid) }.is_some_and(|state| *state == TlsProbeState::Probed.code())
}

/// Whether the calling thread's write must be refused (once): its TLS
/// request was refused by user space, or could not be shown to it.
#[inline(always)]
pub fn refused_writer() -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    if unsafe { REFUSED_WRITERS.get(pid_tgid) }.is_none() {
        return false;
    }
    let _ = REFUSED_WRITERS.remove(pid_tgid);
    count(counter::TLS_WRITES_REFUSED);
    true
}
