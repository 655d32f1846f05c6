//! What this kernel lets the programs do, probed before load (the way libbpf
//! probes helpers: a two-instruction program per pair), so that a kernel
//! lacking something gets a clear message or a fallback, never a raw
//! verifier log.

use std::path::Path;

use agentwatch_common::features::KernelFeatures;
use anyhow::{Context as _, Result, bail};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// Present when the kernel can attach uprobes through perf events.
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe/type";

/// The oldest kernel the matrix (`cargo xtask test --kernels all`) passes.
pub const TESTED_FROM: &str = "6.1";

/// What was probed, for the programs and for `agentwatch check`.
#[derive(Debug, Clone)]
pub struct Support {
    pub features: KernelFeatures,
    /// What a socket's first write is judged with (sock_ops, sk_msg, a
    /// sockhash, the helpers sk_msg calls) that this kernel lacks; empty
    /// when all are there.
    pub first_write_missing: Vec<&'static str>,
    /// The uprobe PMU, for watching a TLS library's `SSL_write`.
    pub uprobes: bool,
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
        // An unexpected probe error counts as missing: these only widen
        // what `check` reports, they gate nothing that runs today.
        let program = |program_type| is_program_supported(program_type).unwrap_or(false);
        let map = |map_type| is_map_supported(map_type).unwrap_or(false);
        let helper = |program_type, helper| supported(program_type, helper).unwrap_or(false);
        let first_write_missing = [
            ("sock_ops", program(ProgramType::SockOps)),
            ("sk_msg", program(ProgramType::SkMsg)),
            ("sockhash", map(MapType::SockHash)),
            (
                "bpf_loop in sk_msg",
                helper(ProgramType::SkMsg, BpfHelper::BPF_FUNC_loop),
            ),
            (
                "bpf_probe_read_kernel in sk_msg",
                helper(ProgramType::SkMsg, BpfHelper::BPF_FUNC_probe_read_kernel),
            ),
        ]
        .into_iter()
        .filter_map(|(what, supported)| (!supported).then_some(what))
        .collect();
        Ok(Self {
            features: KernelFeatures {
                sock_addr_signal: sock_addr_signal.into(),
                sk_msg_signal: supported(ProgramType::SkMsg, BpfHelper::BPF_FUNC_send_signal)
                    .unwrap_or(false)
                    .into(),
            },
            first_write_missing,
            uprobes: Path::new(UPROBE_PMU).exists(),
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

    /// How a refused write's writer is killed or stopped on this kernel.
    pub fn signal_at_write(&self) -> &'static str {
        if self.features.sk_msg_signal != 0 {
            "in the write, before it returns"
        } else {
            "at the writer's next traced system call (this kernel's sk_msg programs cannot signal)"
        }
    }
}
