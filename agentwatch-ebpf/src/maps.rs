//! Maps shared by the programs. Sizes here are defaults; user space may resize
//! them before load. Each static's name is its map's name, which user space
//! looks up through `agentwatch_common::names::map_name` (tested to match).

use agentwatch_common::maps::{
    AllowKey, Config, CredKey, DEFAULT_MAX_PROCESSES, DEFAULT_MAX_SOCKETS,
    DEFAULT_RING_BUFFER_BYTES, EnvName, ExecArgs, HostClass, OpenedKey, ProcInfo,
    REPORTED_OPENS_ENTRIES, SessionState, SocketKey, SocketMark, SocketState, counter,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
};

/// Thread-group id → session, for every process of every session. Sized
/// at load to as many processes as the kernel can run at once, so it never
/// fills; allocated per entry, so that size costs nothing until used.
#[map]
pub static PROCS: HashMap<u32, ProcInfo> =
    HashMap::with_max_entries(DEFAULT_MAX_PROCESSES, BPF_F_NO_PREALLOC);

/// Thread-group id → session for processes whose children start a session
/// (`agentwatch run` itself) without being part of it.
#[map]
pub static SPAWNERS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// Session id → what the session holds and what it does about it.
#[map]
pub static SESSIONS: HashMap<u32, SessionState> = HashMap::with_max_entries(4096, 0);

/// Session id → credential classes user space found (file contents read by
/// the session). Kept apart from `SESSIONS` so user space never rewrites a
/// value the kernel updates atomically.
#[map]
pub static USER_TAINT: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// The scan fence, by session: reads the kernel reported that user space
/// may scan (see `owes_scan`), and how many of them user space has handled
/// (scanned, its findings applied, or found not worth scanning).
#[map]
pub static SCANS_OWED: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);
#[map]
pub static SCANS_PAID: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// Credential files by identity → credential class.
#[map]
pub static CREDS: HashMap<CredKey, u32> = HashMap::with_max_entries(65536, 0);

/// Suffix hash of an infrastructure DNS name → how it counts.
#[map]
pub static DOMAINS: HashMap<u64, HostClass> = HashMap::with_max_entries(4096, 0);

/// Infrastructure addresses (from DNS answers and user space's resolution).
#[map]
pub static INFRA4: LruHashMap<u32, HostClass> = LruHashMap::with_max_entries(16384, 0);
#[map]
pub static INFRA6: LruHashMap<[u8; 16], HostClass> = LruHashMap::with_max_entries(16384, 0);

/// Hash of a credential environment variable's name → classes it gives.
#[map]
pub static ENV_NAMES: HashMap<u64, EnvName> = HashMap::with_max_entries(1024, 0);

/// Hash of an executable's name as `comm` holds it (15 bytes at most) →
/// agent id, with `agent::HELD` for interpreters an agent may run as.
#[map]
pub static AGENT_COMMS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Hash of an environment marker (`NAME` present, or `NAME=value`) → agent id.
#[map]
pub static AGENT_MARKERS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// Hash of an executable's two innermost directory names → agent id (a
/// native install's versioned binary, whose name is its version).
#[map]
pub static AGENT_DIRS: HashMap<u64, u32> = HashMap::with_max_entries(256, 0);

/// Interpreters stopped at exec for user space to match their argv:
/// tgid → 1. User space resumes and removes each, from its exec event or,
/// if that event was lost, from this map.
#[map]
pub static HELD: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Approved retries: (session, address) → 1, consumed by the connect it allows.
#[map]
pub static ALLOW_ONCE: HashMap<AllowKey, u8> = HashMap::with_max_entries(1024, 0);

/// Thread-group id → credential classes in that process's environment, so a
/// read of its `/proc/PID/environ` counts as reading them.
#[map]
pub static ENV_CLASSES: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Socket cookie → the session that connected it (TCP and UDP), set at
/// connect. An LRU: sockets that never connect leave by themselves.
#[map]
pub static SOCKET_MARKS: LruHashMap<u64, SocketMark> = LruHashMap::with_max_entries(65536, 0);

/// Sessions' established TCP sockets, whose writes the sk_msg program sees
/// until user space takes a harmless one out. Untracked sockets never enter.
#[map]
pub static SOCKETS: SockHash<SocketKey> = SockHash::with_max_entries(DEFAULT_MAX_SOCKETS, 0);

/// What each socket in `SOCKETS` named; removed at close (sock_ops) or with
/// the socket (user space).
#[map]
pub static SOCKET_STATES: LruHashMap<SocketKey, SocketState> =
    LruHashMap::with_max_entries(DEFAULT_MAX_SOCKETS, 0);

/// Set (entry 0 = 1) once a session's TCP socket could not be watched at
/// its first write; until then egress does not look at TCP at all.
#[map]
pub static UNINSPECTED: Array<u32> = Array::with_max_entries(1, 0);

/// From now on, egress looks at TCP segments too.
#[inline(always)]
pub fn flag_uninspected() {
    if let Some(flag) = UNINSPECTED.get_ptr_mut(0) {
        // SAFETY: a live map value; every writer stores the same 1.
        unsafe { *flag = 1 };
    }
}

/// Sockets in `SOCKETS` not yet judged harmless (entry 0), so that a connect
/// that would find it full is judged at connect instead.
#[map]
pub static WATCHED: Array<u64> = Array::with_max_entries(1, 0);

/// Adds `delta` (wrapping: -1 is `u64::MAX`) to the watched-socket count.
#[inline(always)]
pub fn count_watched(delta: u64) {
    if let Some(watched) = WATCHED.get_ptr_mut(0) {
        atomic_add(watched, delta);
    }
}

/// Adds `delta` to a live map value, atomically across CPUs.
#[inline(always)]
fn atomic_add(value: *mut u64, delta: u64) {
    // SAFETY: callers pass a pointer the map lookup just gave.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            value, delta,
        )
    };
}

/// Counts a reported read of `session` that user space may scan.
#[inline(always)]
pub fn owe_scan(session: u32) {
    let owed = match SCANS_OWED.get_ptr_mut(session) {
        Some(owed) => owed,
        None => {
            // The session's first: created at zero, unless another CPU
            // just did; either way the add below counts it.
            let _ = SCANS_OWED.insert(session, 0, BPF_NOEXIST as u64);
            let Some(owed) = SCANS_OWED.get_ptr_mut(session) else {
                return;
            };
            owed
        }
    };
    atomic_add(owed, 1);
}

/// Whether `session` read something user space has not scanned yet.
/// Read before the session's taint: user space pays a scan only after it
/// has applied the scan's findings.
#[inline(always)]
pub fn scans_pending(session: u32) -> bool {
    let owed = unsafe { SCANS_OWED.get(session) }.copied().unwrap_or(0);
    let paid = unsafe { SCANS_PAID.get(session) }.copied().unwrap_or(0);
    owed > paid
}

/// Whether a new socket would find `SOCKETS` full.
#[inline(always)]
pub fn sockets_full() -> bool {
    let watched = WATCHED.get(0).copied().unwrap_or(0);
    watched >= u64::from(config().max_sockets)
}

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// io_uring opens submitted by sessions, by `struct io_kiocb *`, until
/// their completion: the session.
#[map]
pub static IOURING_OPENS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(8192, 0);

/// Opens a session has reported (a set: the value means nothing).
#[map]
pub static REPORTED_OPENS: LruHashMap<OpenedKey, u8> =
    LruHashMap::with_max_entries(REPORTED_OPENS_ENTRIES, 0);
#[map]
pub static PENDING_EXECS: HashMap<u64, ExecArgs> = HashMap::with_max_entries(4096, 0);

/// Session processes that use probed OpenSSL (libssl, node's built-in):
/// tgid → [`agentwatch_common::names::TlsProbeState`] code, `Pending` set
/// here at their first use of it, `Probed` by user space once their
/// `SSL_write` probes are attached. A probed process's TLS requests are
/// judged at `SSL_write` by what they do, so its connections to
/// infrastructure are not refused by name or address first. Cleared at
/// exec, fork (the child) and exit.
#[map]
pub static TLS_PROCS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(DEFAULT_MAX_PROCESSES, 0);

/// Threads (pid_tgid) whose TLS request user space refused: the next write
/// such a thread makes to an inspected infrastructure socket is dropped
/// (EACCES), so the encrypted request never leaves.
#[map]
pub static REFUSED_WRITERS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(4096, 0);

/// Hash of a cataloged command's executable name as `comm` holds it → 1:
/// a session's exec of one is stopped for user space to judge its argv.
#[map]
pub static COMMANDS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// tgid → credential classes a command judged to only read may use with
/// its provider's hosts (`railway logs` after reading the Railway token).
/// Cleared at exec and exit.
#[map]
pub static COMMAND_GRANTS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other writer runs on this CPU meanwhile.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
pub fn config() -> Config {
    CONFIG.get(0).copied().unwrap_or_default()
}
