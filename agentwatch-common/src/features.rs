//! What the running kernel lets the programs do, probed by user space before
//! load and handed over as the read-only global [`GLOBAL`]. The verifier
//! knows a frozen read-only global's value, so it never visits the branch a
//! feature rules out: a helper this kernel lacks is never seen at all.

/// Name of the global in the object (`EbpfLoader::override_global`).
pub const GLOBAL: &str = "FEATURES";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Cgroup sock_addr programs may call `bpf_send_signal` (not on 6.1 or
    /// 6.12). Without it the refused caller is signalled at its connect's
    /// return, by the syscall exit tracepoint, instead of in the hook.
    pub sock_addr_signal: u32,
    /// sk_msg programs may call `bpf_send_signal`. Without it a refused
    /// write's session is flagged, and its processes are killed or stopped
    /// at their next traced system call.
    pub sk_msg_signal: u32,
}

#[cfg(feature = "user")]
// SAFETY: plain integers; every bit pattern is valid.
unsafe impl aya::Pod for KernelFeatures {}
