//! Keys and values of the maps shared between the programs and user space.

/// Value of the per-process map (`PROCS`, keyed by thread-group id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub session: u32,
    pub _pad: u32,
}

/// Arguments of an open call in flight, saved at syscall entry for the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenArgs {
    pub path: u64,
    pub session: u32,
    pub dirfd: i32,
    pub flags: u32,
    pub syscall: u8,
    pub _pad: [u8; 3],
}

/// Arguments of a connect call in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectArgs {
    pub addr: u64,
    pub session: u32,
    pub addr_len: u32,
}

/// An execve in flight; reported from its exit only when it fails (a
/// successful exec is reported by `sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecArgs {
    pub filename: u64,
    pub session: u32,
    pub _pad: u32,
}

/// Indices of the per-CPU `COUNTERS` array: every event or state change the
/// kernel side had to drop is counted here, never dropped silently.
pub mod counter {
    /// `LOST_BASE + kind`: records that found the ring buffer full.
    pub const LOST_BASE: u32 = 0;
    /// A new process of a session could not be added to `PROCS`.
    pub const PROCS_FULL: u32 = 8;
    /// A syscall's arguments could not be saved for its exit.
    pub const PENDING_FULL: u32 = 9;
    /// A kernel struct read failed (a path or argv came back empty).
    pub const READ_FAILED: u32 = 10;
    pub const COUNT: u32 = 16;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain integers; every bit pattern is valid.
    unsafe impl aya::Pod for super::ProcInfo {}
}
