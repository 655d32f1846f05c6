//! Maps shared by the programs. Sizes here are defaults; user space may resize
//! them before load.

use agentwatch_common::{
    event::{ConnectEvent, ExecEvent, OpenEvent},
    maps::{ConnectArgs, ExecArgs, OpenArgs, ProcInfo, counter},
};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};

/// Thread-group id → session, for every process of every session.
#[map]
pub static PROCS: HashMap<u32, ProcInfo> = HashMap::with_max_entries(32768, 0);

/// Thread-group id → session for processes whose children start a session
/// (`agentwatch run` itself) without being part of it.
#[map]
pub static SPAWNERS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// Syscall arguments saved at entry, keyed by pid_tgid, removed at exit.
#[map]
pub static PENDING_OPENS: HashMap<u64, OpenArgs> = HashMap::with_max_entries(8192, 0);
#[map]
pub static PENDING_CONNECTS: HashMap<u64, ConnectArgs> = HashMap::with_max_entries(4096, 0);
#[map]
pub static PENDING_EXECS: HashMap<u64, ExecArgs> = HashMap::with_max_entries(4096, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Per-CPU space to build records too large for the 512-byte stack.
#[repr(C)]
pub struct OpenScratch {
    pub event: OpenEvent,
    /// Lets a name of up to 255 bytes be copied at any offset of `event.base`
    /// without the verifier seeing a write past the value.
    pub slack: [u8; 256],
    pub walk: crate::path::Walk,
}

#[map]
pub static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static CONNECT_SCRATCH: PerCpuArray<ConnectEvent> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer runs on this CPU meanwhile.
        unsafe { *value += 1 };
    }
}

/// Session of a tracked process.
#[inline(always)]
pub fn session_of(tgid: u32) -> Option<u32> {
    unsafe { PROCS.get(tgid) }.map(|info| info.session)
}
