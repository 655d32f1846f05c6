//! Keys and values of the maps shared between the programs and user space.

/// Value of the per-process map (`PROCS`, keyed by thread-group id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub session: u32,
    pub _pad: u32,
}

/// The size of the per-process maps in the object (`TLS_PROCS`; `PROCS`
/// is resized at load to what the kernel can run, or `--max-processes`).
pub const DEFAULT_MAX_PROCESSES: u32 = 65536;
/// Sessions' TCP sockets watched at once (`SOCKETS`, `SOCKET_STATES`),
/// unless `--max-sockets` says otherwise; more are judged by address.
pub const DEFAULT_MAX_SOCKETS: u32 = 16384;
/// Bytes of the ring buffer (`EVENTS`), unless `--ring-buffer-size` says otherwise.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;

/// Bits of `SessionState::flags`.
pub mod session_flags {
    /// Every process of the session is killed at its next traced syscall.
    pub const KILLED: u32 = 1;
    /// Waiting for a human: every process of the session is stopped
    /// (SIGSTOP) at its next traced syscall until user space resumes it.
    pub const STOPPED: u32 = 2;
}

/// Key of `ALLOW_ONCE`: an approved retry of one session to one address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowKey {
    pub session: u32,
    pub _pad: u32,
    /// IPv4 in the first four bytes, or IPv6.
    pub addr: [u8; 16],
}

/// Value of `SESSIONS`, keyed by session id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Credential classes the session holds (bit = class index).
    pub creds: u64,
    /// The classes the session took last, and when (`CLOCK_BOOTTIME` ns).
    pub last_classes: u64,
    pub last_ns: u64,
    /// [`crate::names::Action`] code.
    pub action: u32,
    pub flags: u32,
    /// When the session was opened (`CLOCK_BOOTTIME` ns): with its id
    /// (a pid, which may come again), names this session and no later one.
    pub opened_ns: u64,
}

/// Key of `CREDS`: a credential file's identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CredKey {
    /// Kernel `dev_t` of the file's superblock.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// How an infrastructure name or address counts: value of `DOMAINS` (by
/// suffix hash) and of `INFRA4`/`INFRA6` (by address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostClass {
    /// Credential classes that count against this host (0: not infrastructure,
    /// e.g. an excluded sub-domain).
    pub classes: u64,
    /// Classes an allow rule lets the session use with this host.
    pub allowed: u64,
    /// Index of the domain in user space's table.
    pub domain: u32,
    /// In the address maps: [`crate::names::NameSource`] code of how the
    /// address was learned (0 in `DOMAINS`).
    pub learned: u32,
    /// In the address maps: DNS also gave this address for a name that is
    /// not infrastructure (a CDN or anycast pool shared with the user's own
    /// apps), so a TCP connect to it is judged by the name its first write
    /// asks for, not refused at connect.
    pub shared: u32,
    pub _pad: u32,
}

impl HostClass {
    /// `self` learned for an address already known as `known`: an address
    /// shared with a non-infrastructure name stays shared.
    pub fn learned_over(self, known: Option<&HostClass>) -> HostClass {
        HostClass {
            shared: self.shared | known.map_or(0, |known| known.shared),
            ..self
        }
    }
}

/// Value of `SOCKET_MARKS`, keyed by socket cookie: a socket a session
/// connected, marked by the connect hook (which runs as the connecting task)
/// for the programs that later see the socket without a task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketMark {
    pub session: u32,
    /// [`socket_flags`] bits.
    pub flags: u32,
}

pub mod socket_flags {
    /// A human approved this connect: its writes are not judged again.
    pub const APPROVED: u32 = 1;
    /// Its TCP connection could not be watched at its first write (or sent
    /// data in its SYN): its segments are judged by address as they leave.
    pub const UNINSPECTED: u32 = 2;
    /// An uninspected connection already refused: its segments are dropped
    /// without another alert.
    pub const REFUSED: u32 = 4;
}

/// Key of `SOCKETS` (the sockhash the first-write program watches) and of
/// `SOCKET_STATES`: a TCP socket by its addresses, with the fields copied
/// as both sock_ops and sk_msg contexts hold them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SocketKey {
    /// `AF_INET` or `AF_INET6`.
    pub family: u32,
    /// Network byte order, as the contexts hold it.
    pub remote_port: u32,
    /// Host byte order.
    pub local_port: u32,
    pub _pad: u32,
    /// IPv4 in the first word, or IPv6 (network order).
    pub remote_ip: [u32; 4],
    pub local_ip: [u32; 4],
}

/// Value of `SOCKET_STATES`: what a watched TCP socket's first write named.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketState {
    pub session: u32,
    /// [`crate::names::SocketJudgment`] code.
    pub judgment: u32,
    /// How the named host counts (`learned` says how it was named).
    pub host: HostClass,
    /// The name, for the alerts of later writes.
    pub name_len: u32,
    pub _pad: u32,
    pub name: [u8; crate::first_write::NAME_CAP],
}

/// Value of `ENV_NAMES`, keyed by the FNV-1a hash of a variable name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvName {
    /// Credential classes a non-empty value of this variable gives.
    pub classes: u64,
}

/// Settings user space changes at run time (the `CONFIG` array's one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Scan the environment of every exec, not only those of sessions, so a
    /// later read of `/proc/PID/environ` can be judged.
    pub scan_all_env: u32,
    /// Open sessions in the kernel for processes the agent tables match.
    pub discover: u32,
    /// The action of sessions opened that way.
    pub default_action: u32,
    /// The syscall tracepoints are attached. While they are not (no session
    /// exists), an agent found at exec is stopped until user space has
    /// attached them, so no session runs a single instruction unwatched.
    pub syscalls_attached: u32,
    /// The first-write programs (sock_ops and sk_msg) are attached, so a
    /// TCP connect to a shared address can be left to the name its first
    /// write asks for. Without them every infrastructure address is refused
    /// at connect.
    pub first_write: u32,
    /// Capacity of `SOCKETS`: once this many sockets are watched, a connect
    /// that could not be watched is judged by its address at connect.
    pub max_sockets: u32,
}

/// Key of `REPORTED_OPENS`: an open a session reported, by the file it
/// opened and how. The session is named by its id and when it was opened,
/// so a later session with a reused id reports its opens afresh.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenedKey {
    pub session_opened_ns: u64,
    pub ino: u64,
    pub session: u32,
    pub dev: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// Entries of `REPORTED_OPENS` (least recently used ones make room).
pub const REPORTED_OPENS_ENTRIES: u32 = 16384;

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
// Lost-record counters come first, one per kind.
const _: () = assert!(crate::names::Kind::COUNT <= counter::PROCS_FULL);

pub mod counter {
    /// `LOST_BASE + kind`: records that found the ring buffer full.
    pub const LOST_BASE: u32 = 0;
    /// A new process of a session could not be added to `PROCS`.
    pub const PROCS_FULL: u32 = 16;
    /// A syscall's arguments could not be saved for its exit.
    pub const PENDING_FULL: u32 = 17;
    /// A kernel struct read failed (a path or argv came back empty).
    pub const READ_FAILED: u32 = 18;
    /// An infrastructure address learned from DNS did not fit its map.
    pub const INFRA_FULL: u32 = 19;
    /// A DNS response could not be parsed.
    pub const DNS_MALFORMED: u32 = 20;
    /// An environment too large to scan completely.
    pub const ENV_TRUNCATED: u32 = 21;
    /// An interpreter could not be held for argv matching (map full) and
    /// ran without being matched.
    pub const HELD_FULL: u32 = 22;
    /// A session's socket could not be marked at connect (`SOCKET_MARKS` full).
    pub const SOCKET_MARKS_FULL: u32 = 23;
    /// A session's TCP socket could not enter the sockhash (full, MPTCP, or
    /// another program's sk_msg owns it): its writes cannot be inspected.
    pub const SOCKET_UNINSPECTABLE: u32 = 24;
    /// A watched socket's state was gone at a write (evicted): judged anew
    /// as the writer's session's.
    pub const SOCKET_STATE_LOST: u32 = 25;
    /// First writes judged by the name they asked for (SNI, Host, CONNECT).
    pub const NAMED_WRITES: u32 = 26;
    /// First writes that named nothing, judged by their address instead.
    pub const NAMELESS_WRITES: u32 = 27;
    /// First writes whose bytes could not be read (judged by address).
    pub const WRITE_UNREADABLE: u32 = 28;
    /// MPTCP sockets a session tried to create (refused: not inspectable).
    pub const MPTCP_REFUSED: u32 = 29;
    /// A session's TCP connections that sent data in their SYN (Fast Open),
    /// judged by address at egress.
    pub const FAST_OPEN: u32 = 30;
    /// DNS-over-TCP segments that could not be followed: of a connection
    /// seen mid-stream (or whose state was evicted), after a missing segment,
    /// or holding more messages than one walk takes. The rest of that
    /// connection is not parsed.
    pub const DNS_TCP_UNFOLLOWED: u32 = 31;
    /// TLS writes of tainted sessions stopped before encryption for their
    /// operation to be judged.
    pub const TLS_WRITES_HELD: u32 = 32;
    /// TLS writes refused at the socket after their operation was judged.
    pub const TLS_WRITES_REFUSED: u32 = 33;
    /// A TLS write that could not be shown to user space (ring buffer
    /// full): refused at the socket, never let through unjudged.
    pub const TLS_WRITES_UNJUDGED: u32 = 34;
    /// Cataloged commands stopped at exec for their argv to be judged.
    pub const COMMANDS_HELD: u32 = 35;
    /// A cataloged command that could not be shown to user space (ring
    /// buffer full): killed at exec, never let run unjudged.
    pub const COMMANDS_UNJUDGED: u32 = 36;
    /// Session processes stopped at their first use of OpenSSL while their
    /// `SSL_write` probes were attached.
    pub const TLS_PROCESSES_HELD: u32 = 37;
    /// A session process whose first use of OpenSSL could not be shown to
    /// user space (ring buffer full): its TLS requests are judged by host.
    pub const TLS_PROCESSES_UNPROBED: u32 = 38;
    /// io_uring opens a session made into the ring's own file table (a
    /// direct descriptor), or that could not be remembered until their
    /// completion: the file cannot be known, so the session was treated as
    /// holding every credential.
    pub const IOURING_UNSEEN_OPENS: u32 = 39;
    /// TLS writes of untainted sessions stopped until the content scans of
    /// what the session had read were done (the scan fence).
    pub const TLS_WRITES_FENCED: u32 = 40;
    /// Opens of a file a task had already reported with the same flags:
    /// judged like any open (a credential's taints), counted, not sent.
    pub const OPENS_REPEATED: u32 = 41;
    pub const COUNT: u32 = 42;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain integers; every bit pattern is valid.
    unsafe impl aya::Pod for super::ProcInfo {}
    unsafe impl aya::Pod for super::SessionState {}
    unsafe impl aya::Pod for super::CredKey {}
    unsafe impl aya::Pod for super::OpenedKey {}
    unsafe impl aya::Pod for super::HostClass {}
    unsafe impl aya::Pod for super::EnvName {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::AllowKey {}
    unsafe impl aya::Pod for super::SocketMark {}
    unsafe impl aya::Pod for super::SocketKey {}
    unsafe impl aya::Pod for super::SocketState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_address_stays_shared_whatever_is_learned_for_it() {
        let infrastructure = HostClass {
            classes: 1,
            ..HostClass::default()
        };
        let shared = HostClass {
            shared: 1,
            ..infrastructure
        };
        // Learned again from DNS: stays shared.
        assert_eq!(infrastructure.learned_over(Some(&shared)).shared, 1);
        // Marked shared over a known, unshared entry: becomes shared.
        assert_eq!(shared.learned_over(Some(&infrastructure)).shared, 1);
        assert_eq!(infrastructure.learned_over(None).shared, 0);
        assert_eq!(infrastructure.learned_over(Some(&infrastructure)).shared, 0);
    }
}
