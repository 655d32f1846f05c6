//! User-space handles on the maps the programs share with the daemon.

use agentwatch_common::{
    event::kind,
    maps::{ProcInfo, counter},
};
use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
};

/// Sums of the kernel's per-CPU drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records that found the ring buffer full, by event kind.
    pub lost: [u64; kind::COUNT as usize],
    pub procs_full: u64,
    pub pending_full: u64,
    pub read_failed: u64,
}

impl KernelCounters {
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().sum()
    }
}

pub struct KernelMaps {
    procs: HashMap<MapData, u32, ProcInfo>,
    spawners: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            procs: take(ebpf, "PROCS")?,
            spawners: take(ebpf, "SPAWNERS")?,
            counters: take(ebpf, "COUNTERS")?,
        })
    }

    /// Children `tgid` forks from now on start in `session`.
    pub fn add_spawner(&mut self, tgid: u32, session: u32) -> Result<()> {
        self.spawners
            .insert(tgid, session, 0)
            .context("registering the session's spawner")
    }

    pub fn remove_spawner(&mut self, tgid: u32) -> Result<()> {
        self.spawners
            .remove(&tgid)
            .context("unregistering the session's spawner")
    }

    /// Processes the kernel currently counts as members of `session`.
    pub fn session_pids(&self, session: u32) -> Vec<u32> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, info)| info.session == session)
            .map(|(pid, _)| pid)
            .collect()
    }

    pub fn counters(&self) -> Result<KernelCounters> {
        let sum = |index: u32| -> Result<u64> { Ok(self.counters.get(&index, 0)?.iter().sum()) };
        let mut counters = KernelCounters::default();
        for kind in 0..kind::COUNT {
            counters.lost[kind as usize] = sum(counter::LOST_BASE + kind)?;
        }
        counters.procs_full = sum(counter::PROCS_FULL)?;
        counters.pending_full = sum(counter::PENDING_FULL)?;
        counters.read_failed = sum(counter::READ_FAILED)?;
        Ok(counters)
    }
}
