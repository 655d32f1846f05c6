//! What this kernel lets the programs do, probed before load (the way libbpf
//! probes helpers: a two-instruction program per pair), so that a kernel
//! lacking something gets a clear message or a fallback, never a raw
//! verifier log.

use agentwatch_common::features::KernelFeatures;
use anyhow::{Context as _, Result, bail};
use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported},
};

/// The oldest kernel the matrix (`cargo xtask test --kernels all`) passes.
pub const TESTED_FROM: &str = "6.1";

/// What was probed, for the programs and for `agentwatch check`.
#[derive(Debug, Clone, Copy)]
pub struct Support {
    pub features: KernelFeatures,
}

impl Support {
    /// Probes the running kernel; fails with "kernel too old" where a
    /// required helper is missing.
    pub fn probe() -> Result<Self> {
        let supported = |program_type, helper| {
            is_helper_supported(program_type, helper)
                .with_context(|| format!("probing {helper:?} for {program_type:?} programs"))
        };
        // The path walk and the environment and DNS scans loop with bpf_loop.
        if !supported(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop)? {
            bail!(
                "kernel too old: agentwatch's process, file and DNS sensors need the bpf_loop \
                 helper (Linux 5.17 or newer); agentwatch is tested on Linux {TESTED_FROM} and newer"
            );
        }
        let sock_addr_signal =
            supported(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_send_signal)?;
        Ok(Self {
            features: KernelFeatures {
                sock_addr_signal: sock_addr_signal.into(),
            },
        })
    }

    /// How a refused connect's caller is killed or stopped on this kernel.
    pub fn signal_at_refusal(&self) -> &'static str {
        if self.features.sock_addr_signal != 0 {
            "in the connect hook, before the refused call returns"
        } else {
            "at the refused connect's return (this kernel's cgroup sock_addr programs cannot \
             signal); after a refused UDP send or io_uring connect, at the session's next system call"
        }
    }
}
