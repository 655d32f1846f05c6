//! Session membership, taint and the kill switch, shared by every sensor.

use core::intrinsics::{AtomicOrdering, atomic_or};

use agentwatch_common::maps::{ProcInfo, SessionState, counter, session_flags};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_ktime_get_boot_ns, bpf_send_signal},
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::maps::{PROCS, SESSIONS, count};

const BPF_NOEXIST: u64 = 1;

const SIGKILL: u32 = 9;
const SIGSTOP: u32 = 19;

/// A process of a session, and the session's shared state (null when user
/// space has already forgotten the session).
pub struct Member {
    pub session: u32,
    pub state: *mut SessionState,
}

/// The session of `tgid`, if any. A process of a killed session is sent
/// SIGKILL here, so it dies before the traced syscall returns to it.
#[inline(always)]
pub fn member(tgid: u32) -> Option<Member> {
    let session = unsafe { PROCS.get(tgid) }?.session;
    let state = SESSIONS
        .get_ptr_mut(session)
        .unwrap_or(core::ptr::null_mut());
    if !state.is_null() {
        let flags = unsafe { (*state).flags };
        if flags & session_flags::KILLED != 0 {
            unsafe { bpf_send_signal(SIGKILL) };
        } else if flags & session_flags::STOPPED != 0 {
            unsafe { bpf_send_signal(SIGSTOP) };
        }
    }
    Some(Member { session, state })
}

impl Member {
    /// Adds credential classes to the session: from now on every process of
    /// it holds them, before the syscall that took them returns.
    #[inline(always)]
    pub fn taint(&self, classes: u64) {
        if classes == 0 || self.state.is_null() {
            return;
        }
        let state = unsafe { &mut *self.state };
        // Sessions span CPUs: a plain read-modify-write could lose a class.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(&mut state.creds, classes) };
        state.last_classes = classes;
        state.last_ns = unsafe { bpf_ktime_get_boot_ns() };
    }

    /// Marks the session killed: its processes die at their next traced syscall.
    #[inline(always)]
    pub fn kill(&self) {
        self.flag(session_flags::KILLED);
    }

    /// Marks the session stopped until a human answers; the caller stops
    /// at once, before its denied connect returns.
    #[inline(always)]
    pub fn stop(&self) {
        self.flag(session_flags::STOPPED);
        unsafe { bpf_send_signal(SIGSTOP) };
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
        ..SessionState::default()
    };
    if SESSIONS.insert(tgid, state, BPF_NOEXIST).is_ok()
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
