//! Per-CPU scratch space: records and loop states too large for the 512-byte
//! stack. Values loaded from a map are unknown to the verifier, so the states
//! of successive `bpf_loop` iterations compare equal and verification
//! converges.

use agentwatch_common::{
    dns::{DNS_CAP, DnsParser, DnsStream},
    env::ENTRY_CAP,
    event::{AlertEvent, ConnectEvent, DnsEvent, ExecEvent, NameEvent, OpenEvent},
    first_write::{NameParser, WRITE_CAP},
    maps::{HostClass, SocketState},
};
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};

/// State of an environment scan (`env.rs`).
#[repr(C)]
pub struct EnvScan {
    pub cursor: u64,
    pub end: u64,
    pub classes: u64,
    /// Look for agent markers too (the process is in no session yet).
    pub discover: u64,
    pub agent: u64,
    /// Inside a value longer than one read: skip to its end.
    pub skipping: u64,
    pub entry: [u8; ENTRY_CAP],
}

/// State of a path walk (`path.rs`).
#[repr(C)]
pub struct Walk {
    pub mnt: u64,
    pub dentry: u64,
    pub mount: u64,
    pub root_mnt: u64,
    pub root_dentry: u64,
    /// Next byte to write goes at `pos - 1`; the path ends at `BASE_CAP`.
    pub pos: u64,
    pub state: u64,
}

/// An open record being built, with the walk of its directory's path.
#[repr(C)]
pub struct OpenScratch {
    pub event: OpenEvent,
    /// Lets a name of up to 255 bytes be copied at any offset of `event.base`
    /// without the verifier seeing a write past the value.
    pub slack: [u8; 256],
    pub walk: Walk,
}

#[map]
pub static OPEN_SCRATCH: PerCpuArray<OpenScratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static CONNECT_SCRATCH: PerCpuArray<ConnectEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static ENV_SCRATCH: PerCpuArray<EnvScan> = PerCpuArray::with_max_entries(1, 0);

/// A DNS message being parsed, and the record of what it taught.
#[repr(C)]
pub struct DnsScratch {
    pub event: DnsEvent,
    pub parser: DnsParser,
    /// How the question name (or a CNAME target) counts, once known.
    pub host: HostClass,
    pub matched: u32,
    pub _pad: u32,
}

/// A DNS-over-TCP connection (value of `DNS_FLOWS`): where its stream
/// stands, and the message being reassembled and parsed.
#[repr(C)]
pub struct DnsFlow {
    pub stream: DnsStream,
    pub work: DnsScratch,
    /// Lets a store of up to `DNS_CAP` bytes at any offset below `DNS_CAP`
    /// of `work.event.payload` stay inside the value, as the verifier sees it.
    pub slack: [u8; DNS_CAP],
}

/// Key of `DNS_FLOWS`: a connection as its packets from the server see it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct DnsFlowKey {
    /// IPv4 in the first four bytes, or IPv6.
    pub remote: [u8; 16],
    pub local: [u8; 16],
    pub local_port: u16,
    /// IP version.
    pub family: u8,
    pub _pad: u8,
}

/// Per-CPU DNS state: UDP messages are parsed in `flow.work`, and a new TCP
/// connection's state is inserted from `flow` (a map value cannot come from
/// the 512-byte stack).
#[repr(C)]
pub struct DnsScratchCpu {
    pub flow: DnsFlow,
    /// What is left of the TCP segment being walked, as skb offsets.
    pub at: u32,
    pub end: u32,
}

#[map]
pub static DNS_SCRATCH: PerCpuArray<DnsScratchCpu> = PerCpuArray::with_max_entries(1, 0);

/// DNS-over-TCP connections being followed; an evicted one is counted when
/// its next segment finds no state. About 2 MiB: an LRU map evicts before it
/// is full (each CPU keeps up to 128 free entries of its own), and a resolver
/// asking many names at once opens as many connections.
#[map]
pub static DNS_FLOWS: LruHashMap<DnsFlowKey, DnsFlow> = LruHashMap::with_max_entries(512, 0);

#[map]
pub static ALERT_SCRATCH: PerCpuArray<AlertEvent> = PerCpuArray::with_max_entries(1, 0);

/// A socket's first write being read for the name it asks for.
#[repr(C)]
pub struct WriteScratch {
    pub write: [u8; WRITE_CAP],
    /// Bytes of `write` filled.
    pub len: u32,
    pub _pad: u32,
    pub parser: NameParser,
    /// A socket's state being built before it enters `SOCKET_STATES`.
    pub state: SocketState,
    pub event: NameEvent,
}

#[map]
pub static WRITE_SCRATCH: PerCpuArray<WriteScratch> = PerCpuArray::with_max_entries(1, 0);
