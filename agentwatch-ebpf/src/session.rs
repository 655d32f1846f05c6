//! Session membership, taint and the kill switch, shared by every sensor.

use core::intrinsics::{AtomicOrdering, atomic_or};

use agentwatch_common::{
    features::KernelFeatures,
    maps::{ProcInfo, SessionState, counter, session_flags},
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_boot_ns, bpf_send_signal},
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::{PROCS, SESSIONS, count};

/// Signal numbers (asm-generic; the BPF bindings carry none).
pub const SIGKILL: u32 = 9;
pub const SIGSTOP: u32 = 19;

/// Filled in by user space before load (`features::GLOBAL`).
#[unsafe(no_mangle)]
pub static FEATURES: KernelFeatures = KernelFeatures {
    sock_addr_signal: 0,
    sk_msg_signal: 0,
};

/// A process of a session, and the session's shared state (null when user
/// space has already forgotten the session).
pub struct Member {
    pub session: u32,
    pub state: *mut SessionState,
    /// The running program may call `bpf_send_signal`. When it may not, a
    /// flag set here is acted on by the next syscall tracepoint the process
    /// passes (its connect's own exit, for a refused connect).
    may_signal: bool,
}

/// The session of `tgid`, if any, seen from a tracepoint. A process of a
/// killed session is sent SIGKILL here, so it dies before the traced syscall
/// returns to it.
#[inline(always)]
pub fn member(tgid: u32) -> Option<Member> {
    lookup(tgid, true)
}

/// The session of `tgid` seen from a cgroup sock_addr program, which may
/// signal only on kernels that allow it there.
#[inline(always)]
pub fn sock_addr_member(tgid: u32) -> Option<Member> {
    // SAFETY: a plain read of a read-only global; volatile so that the
    // compiler keeps the load the verifier resolves against the real value.
    let allowed = unsafe { core::ptr::read_volatile(&FEATURES.sock_addr_signal) } != 0;
    lookup(tgid, allowed)
}

/// The session of `tgid`, for programs that only ask (and may not signal).
#[inline(always)]
pub fn session_of(tgid: u32) -> Option<u32> {
    unsafe { PROCS.get(tgid) }.map(|info| info.session)
}

/// The session a socket belongs to, seen from the sk_msg program (which
/// runs as the writer, and may signal only on kernels that allow it there).
#[inline(always)]
pub fn socket_member(session: u32) -> Member {
    // SAFETY: as in `sock_addr_member`.
    let allowed = unsafe { core::ptr::read_volatile(&FEATURES.sk_msg_signal) } != 0;
    of_session(session, allowed)
}

/// The session a packet's socket belongs to, seen where no task is certain
/// (cgroup skb): flagged, never signalled.
#[inline(always)]
pub fn packet_member(session: u32) -> Member {
    of_session(session, false)
}

#[inline(always)]
fn of_session(session: u32, may_signal: bool) -> Member {
    Member {
        session,
        state: SESSIONS
            .get_ptr_mut(session)
            .unwrap_or(core::ptr::null_mut()),
        may_signal,
    }
}

#[inline(always)]
fn lookup(tgid: u32, may_signal: bool) -> Option<Member> {
    let session = unsafe { PROCS.get(tgid) }?.session;
    let state = SESSIONS
        .get_ptr_mut(session)
        .unwrap_or(core::ptr::null_mut());
    let member = Member {
        session,
        state,
        may_signal,
    };
    if !state.is_null() {
        // SAFETY: a value pointer from the map, valid for this program run.
        let flags = unsafe { (*state).flags };
        if flags & session_flags::KILLED != 0 {
            member.signal(SIGKILL);
        } else if flags & session_flags::STOPPED != 0 {
            member.signal(SIGSTOP);
        }
    }
    Some(member)
}

impl Member {
    /// Adds credential classes to the session: from now on every process of
    /// it holds them, before the syscall that took them returns.
    #[inline(always)]
    pub fn taint(&self, classes: u64) {
        if classes == 0 || self.state.is_null() {
            return;
        }
        // Sessions span CPUs: a plain read-modify-write could lose a class.
        // SAFETY: `state` is a live map value (checked non-null above); the
        // OR goes through a raw pointer so no `&mut` aliases other CPUs'.
        unsafe {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(
                &raw mut (*self.state).creds,
                classes,
            );
            (*self.state).last_classes = classes;
            (*self.state).last_ns = bpf_ktime_get_boot_ns();
        }
    }

    /// Marks the session killed: its processes die at their next traced syscall.
    #[inline(always)]
    pub fn kill(&self) {
        self.flag(session_flags::KILLED);
    }

    /// Marks the session stopped until a human answers; the caller stops
    /// before its denied connect returns (here, or at the connect's exit).
    #[inline(always)]
    pub fn stop(&self) {
        self.flag(session_flags::STOPPED);
        self.signal(SIGSTOP);
    }

    #[inline(always)]
    fn signal(&self, signal: u32) {
        if self.may_signal {
            unsafe { bpf_send_signal(signal) };
        }
    }

    #[inline(always)]
    fn flag(&self, flag: u32) {
        if !self.state.is_null() {
            // A session's action decides its one flag (kill → KILLED, ask →
            // STOPPED), so concurrent writers store the same value and a
            // plain update loses nothing.
            unsafe { (*self.state).flags |= flag };
        }
    }
}

/// Opens a session for an agent found at exec, keyed by its pid: the
/// process and everything it forks from now on are in it.
#[inline(always)]
pub fn open_session(tgid: u32, action: u32) {
    let state = SessionState {
        action,
        // SAFETY: the helper takes no arguments.
        opened_ns: unsafe { bpf_ktime_get_boot_ns() },
        ..SessionState::default()
    };
    if SESSIONS.insert(tgid, state, BPF_NOEXIST as u64).is_ok()
        && PROCS
            .insert(
                tgid,
                ProcInfo {
                    session: tgid,
                    _pad: 0,
                },
                0,
            )
            .is_err()
    {
        count(counter::PROCS_FULL);
    }
}

/// Attached by user space only while a session is being killed: every
/// process of it then dies at its next system call of any kind.
#[tracepoint(category = "raw_syscalls", name = "sys_enter")]
pub fn kill_switch(_ctx: TracePointContext) -> u32 {
    let _ = member((bpf_get_current_pid_tgid() >> 32) as u32);
    0
}
