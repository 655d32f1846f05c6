//! Records the kernel programs write to the ring buffer.
//!
//! Every record starts with an [`EventHeader`]; `kind` says which struct follows.
//! Records with variable-length text are sent only up to the text they use, so
//! the decoder must accept a record shorter than its struct and zero-fill the rest.

pub const COMM_LEN: usize = 16;
/// Bytes kept of a path as the process passed it.
pub const PATH_CAP: usize = 1024;
/// Bytes kept of the directory a relative path is resolved against.
pub const BASE_CAP: usize = 1024;
/// Bytes kept of the file name given to execve.
pub const FILENAME_CAP: usize = 512;
/// Bytes kept of the NUL-separated argument block of an exec.
pub const ARGV_CAP: usize = 2048;
/// Bytes kept of the `struct sockaddr` given to connect (a `sockaddr_un` is 110).
pub const SOCKADDR_CAP: usize = 112;

/// Bits of the `truncated` field of events carrying text.
pub mod truncated {
    pub const PATH: u8 = 1;
    pub const BASE: u8 = 2;
    pub const FILENAME: u8 = 4;
    pub const ARGV: u8 = 8;
}

/// `AT_FDCWD` as the open syscalls receive it.
pub const AT_FDCWD: i32 = -100;

use core::cmp::min;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`crate::names::Kind`] code.
    pub kind: u32,
    /// Thread-group id: what user space calls the pid.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub session: u32,
    pub uid: u32,
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`).
    pub boot_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// Whether a session's open is a read user space may scan by content
/// (it succeeded, is read-only, and is no known credential): until user
/// space has handled it, the session's TLS requests wait (the scan fence:
/// the kernel counts these opens in `SCANS_OWED`, user space what it has
/// handled in `SCANS_PAID`).
pub const fn owes_scan(ret: i64, flags: u32, cred_classes: u64) -> bool {
    /// `O_WRONLY | O_RDWR`.
    const WRITE_ACCESS: u32 = 0o3;
    ret >= 0 && flags & WRITE_ACCESS == 0 && cred_classes == 0
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// File descriptor, or `-errno`.
    pub ret: i64,
    pub ino: u64,
    /// Credential classes this open gave the session (a catalog credential
    /// file, or another process's `/proc/PID/environ` holding credentials).
    pub cred_classes: u64,
    /// Device of the opened file as the kernel encodes it (`MAJOR << 20 | MINOR`).
    pub dev: u32,
    pub flags: u32,
    pub dirfd: i32,
    pub path_len: u16,
    /// Length of the base directory, which ends at `base[BASE_CAP]`.
    pub base_len: u16,
    /// [`crate::names::OpenSyscall`] code.
    pub syscall: u8,
    /// [`truncated`] bits.
    pub truncated: u8,
    pub _pad: [u8; 6],
    pub path: [u8; PATH_CAP],
    pub base: [u8; BASE_CAP],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnectEvent {
    pub header: EventHeader,
    /// 0, or `-errno`.
    pub ret: i64,
    pub addr_len: u32,
    pub _pad: u32,
    /// The `struct sockaddr` as given; user space decodes the family.
    pub addr: [u8; SOCKADDR_CAP],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Credential classes found in the new image's environment.
    pub env_classes: u64,
    /// 0, or `-errno` of a failed execve (then `argv` is empty).
    pub ret: i32,
    pub filename_len: u16,
    pub argv_len: u16,
    pub truncated: u8,
    /// 1: a cataloged command, stopped at exec before its first
    /// instruction until user space has judged its argv.
    pub hold: u8,
    pub _pad: [u8; 2],
    /// Agent matcher that opened a session at this exec (see `agent`), 0 if none.
    pub agent: u32,
    pub filename: [u8; FILENAME_CAP],
    /// NUL-separated arguments, `argv[0]` first.
    pub argv: [u8; ARGV_CAP],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task_struct::exit_code`: `status << 8` for an exit, the signal number otherwise.
    pub exit_code: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct AlertEvent {
    pub header: EventHeader,
    /// Credential classes the session holds that count against the host.
    pub held: u64,
    /// The classes the session took last, and when (`CLOCK_BOOTTIME` ns).
    pub last_classes: u64,
    pub last_ns: u64,
    /// [`crate::names::Action`] code of what was done.
    pub action: u32,
    /// Index of the matched infrastructure domain in user space's table.
    pub domain: u32,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Destination port, host order.
    pub port: u16,
    /// Destination address (4 bytes used for IPv4), network order.
    pub addr: [u8; 16],
    /// [`crate::names::NameSource`] code of how the host was named.
    pub learned: u32,
    /// The name the socket's first write asked for (empty for a connect
    /// judged by its address: user space names it from DNS).
    pub name_len: u32,
    pub name: [u8; crate::first_write::NAME_CAP],
}

/// What a watched TCP socket's first write named, and what was decided.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameEvent {
    pub header: EventHeader,
    /// The socket, for user space to take a harmless one out of the sockhash.
    pub key: crate::maps::SocketKey,
    /// [`crate::names::SocketJudgment`] code.
    pub judgment: u32,
    /// [`crate::names::NameSource`] code.
    pub learned: u32,
    /// `domain + 1` of the infrastructure domain it named, or 0.
    pub domain: u32,
    pub name_len: u32,
    pub name: [u8; crate::first_write::NAME_CAP],
}

/// Bytes kept of a TLS write's plaintext: a request line, its headers and
/// the head of its body.
pub const TLS_CAP: usize = 4096;

/// The plaintext a tainted session's process passed to `SSL_write` or
/// `SSL_write_ex`; the process is stopped until user space has judged it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsWriteEvent {
    pub header: EventHeader,
    /// The `SSL *`: a request's head and its body written apart are
    /// matched by it.
    pub ssl: u64,
    /// Credential classes the session held at the write; 0 when it held
    /// none and the write waits for the scans of what it read (the scan
    /// fence).
    pub held: u64,
    /// Bytes the caller asked to write.
    pub len: u32,
    /// Bytes of `data` filled (at most `TLS_CAP`).
    pub copied: u32,
    pub data: [u8; TLS_CAP],
}

impl TlsWriteEvent {
    pub fn wire_len(&self) -> usize {
        core::mem::offset_of!(TlsWriteEvent, data) + min(self.copied as usize, TLS_CAP)
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsEvent {
    pub header: EventHeader,
    pub len: u32,
    /// `domain + 1` of the infrastructure domain the question matched, or 0.
    pub domain: u32,
    pub payload: [u8; crate::dns::DNS_CAP],
}

impl DnsEvent {
    pub fn wire_len(&self) -> usize {
        core::mem::offset_of!(DnsEvent, payload) + min(self.len as usize, crate::dns::DNS_CAP)
    }
}

impl OpenEvent {
    /// Bytes worth sending: a record with an absolute path stops after its path.
    pub fn wire_len(&self) -> usize {
        if self.base_len == 0 {
            core::mem::offset_of!(OpenEvent, path) + min(self.path_len as usize, PATH_CAP)
        } else {
            core::mem::size_of::<OpenEvent>()
        }
    }
}

impl ExecEvent {
    /// Bytes worth sending: the argument block is last, so stop where it ends.
    pub fn wire_len(&self) -> usize {
        core::mem::offset_of!(ExecEvent, argv) + min(self.argv_len as usize, ARGV_CAP)
    }
}

impl ConnectEvent {
    pub fn wire_len(&self) -> usize {
        core::mem::size_of::<ConnectEvent>()
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain integers and byte arrays; every bit pattern is valid.
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for OpenEvent {}
    unsafe impl aya::Pod for ConnectEvent {}
    unsafe impl aya::Pod for ExecEvent {}
    unsafe impl aya::Pod for ForkEvent {}
    unsafe impl aya::Pod for ExitEvent {}
    unsafe impl aya::Pod for AlertEvent {}
    unsafe impl aya::Pod for DnsEvent {}
    unsafe impl aya::Pod for NameEvent {}
    unsafe impl aya::Pod for TlsWriteEvent {}
}

/// How the exec program marks what discovery did (`ExecEvent::agent`).
pub mod agent {
    /// Set in an agent id: the process is an interpreter an agent may run
    /// as (`node`, `python3`); it was stopped at exec, before its first
    /// instruction, for user space to match its argv and resume it.
    pub const HELD: u32 = 1 << 31;
    /// Set in an agent id: its session is open but the syscall tracepoints
    /// were detached; it was stopped at exec until user space attaches them.
    pub const PAUSED: u32 = 1 << 30;
}
