//! Where the time of a watched syscall goes in the kernel: each BPF
//! program's run time and run count (`kernel.bpf_stats_enabled=1`), read
//! through bpf(2) before and after a loop, per loop iteration.
//!
//! Run times are counted for every process on the machine that runs a
//! program, not only the load: `runs_per_op` above 1 is other processes
//! (on a shared machine, other builds' opens), so `ns_per_op` is an upper
//! bound of what the load itself paid.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while held; the old value is put back on drop.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn engage() -> Result<Self> {
        let before = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self { before })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS_SYSCTL, &self.before);
    }
}

/// One program's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgStat {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

// bpf(2) commands and the stable UAPI layout of `struct bpf_prog_info`
// (include/uapi/linux/bpf.h): fields are only ever appended.
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const INFO_NAME: usize = 64;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
/// Large enough for every field up to run_cnt; the kernel fills what it
/// knows and leaves the rest zero.
const INFO_SIZE: usize = 256;

/// bpf(CMD, attr, size) with `attr` zero-padded to its size.
fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> libc::c_long {
    // SAFETY: attr is a valid, writable buffer of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    }
}

/// The next loaded program's id after `id`, or None at the end.
fn next_prog_id(id: u32) -> Option<u32> {
    // struct { __u32 start_id; __u32 next_id; __u32 open_flags; }
    let mut attr = [u64::from(id), 0];
    (bpf(BPF_PROG_GET_NEXT_ID, &mut attr) == 0).then(|| (attr[0] >> 32) as u32)
}

/// The counters of program `id`, if it still exists.
pub fn prog_stat(id: u32) -> Option<ProgStat> {
    // struct { __u32 prog_id; __u32 next_id; __u32 open_flags; }
    let mut attr = [u64::from(id), 0];
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr);
    if fd < 0 {
        return None;
    }
    let mut info = [0u8; INFO_SIZE];
    // struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; }
    let mut attr = [
        fd as u64 | ((INFO_SIZE as u64) << 32),
        info.as_mut_ptr() as u64,
    ];
    let ret = bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr);
    // SAFETY: our own fd.
    unsafe { libc::close(fd as libc::c_int) };
    if ret != 0 {
        return None;
    }
    Some(parse_info(&info))
}

fn parse_info(info: &[u8; INFO_SIZE]) -> ProgStat {
    let u64_at = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap_or([0; 8]));
    let name = &info[INFO_NAME..INFO_NAME + 16];
    let len = name.iter().position(|&b| b == 0).unwrap_or(16);
    ProgStat {
        name: String::from_utf8_lossy(&name[..len]).into_owned(),
        run_time_ns: u64_at(INFO_RUN_TIME_NS),
        run_cnt: u64_at(INFO_RUN_CNT),
    }
}

/// Every loaded program's counters, by id.
pub fn snapshot() -> BTreeMap<u32, ProgStat> {
    let mut all = BTreeMap::new();
    let mut id = 0;
    while let Some(next) = next_prog_id(id) {
        if let Some(stat) = prog_stat(next) {
            all.insert(next, stat);
        }
        id = next;
    }
    all
}

/// The programs `pid` holds: its program fds, and the programs of its link
/// fds (`prog_id:` in their fdinfo), by id, each with the tracepoint a link
/// names (`tp_name:`), since the kernel keeps only 15 bytes of a
/// program's own name (`sched_process_e` is exec or exit).
pub fn prog_ids_of(pid: u32) -> BTreeMap<u32, Option<String>> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeMap::new();
    };
    let mut ids = BTreeMap::new();
    let held = dir
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                target.contains("bpf-prog") || target.contains("bpf_link")
            })
        })
        .filter_map(|entry| {
            let fdinfo = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .ok()?;
            Some((fdinfo_prog_id(&fdinfo)?, fdinfo_tp_name(&fdinfo)))
        });
    for (id, tp_name) in held {
        let entry = ids.entry(id).or_insert(None);
        if entry.is_none() {
            *entry = tp_name;
        }
    }
    ids
}

fn fdinfo_prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("prog_id:")?.trim().parse().ok())
}

fn fdinfo_tp_name(fdinfo: &str) -> Option<String> {
    fdinfo
        .lines()
        .find_map(|line| Some(line.strip_prefix("tp_name:")?.trim().to_string()))
}

/// What `ids` ran between the snapshots, per iteration of a loop of
/// `iterations`: each program that ran (named by its tracepoint where a
/// link gave one), the most expensive first, and the sum. Programs that
/// did not run are left out.
pub fn per_op(
    before: &BTreeMap<u32, ProgStat>,
    after: &BTreeMap<u32, ProgStat>,
    ids: &BTreeMap<u32, Option<String>>,
    iterations: u64,
) -> Result<Value> {
    if iterations == 0 {
        bail!("no iterations");
    }
    let n = iterations as f64;
    let mut programs: Vec<(f64, Value)> = ids
        .iter()
        .filter_map(|(id, tp_name)| {
            let (b, a) = (before.get(id)?, after.get(id)?);
            let runs = a.run_cnt.saturating_sub(b.run_cnt);
            let ns = a.run_time_ns.saturating_sub(b.run_time_ns);
            (runs > 0).then(|| {
                (
                    ns as f64 / n,
                    json!({
                        "name": tp_name.as_deref().unwrap_or(&a.name),
                        "program": a.name,
                        "id": id,
                        "ns_per_op": ns as f64 / n,
                        "runs_per_op": runs as f64 / n,
                        "ns_per_run": ns as f64 / runs as f64,
                    }),
                )
            })
        })
        .collect();
    programs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = programs.iter().map(|(ns, _)| ns).sum();
    Ok(json!({
        "iterations": iterations,
        "programs_held": ids.len(),
        "ns_per_op": total,
        "programs": programs.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prog_id_from_fdinfo() {
        let link = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2075\nlink_type:\tperf\n\
                    link_id:\t12\nprog_tag:\tabc\nprog_id:\t4242\n";
        assert_eq!(fdinfo_prog_id(link), Some(4242));
        assert_eq!(fdinfo_prog_id("pos:\t0\n"), None);
        let tracepoint = "link_type:\tperf\nprog_id:\t7\ntp_name:\tsched_process_exit\n";
        assert_eq!(
            fdinfo_tp_name(tracepoint).as_deref(),
            Some("sched_process_exit")
        );
        assert_eq!(fdinfo_tp_name(link), None);
    }

    #[test]
    fn parses_the_uapi_layout() {
        let mut info = [0u8; INFO_SIZE];
        info[INFO_NAME..INFO_NAME + 14].copy_from_slice(b"sys_exit_opena");
        info[INFO_RUN_TIME_NS..INFO_RUN_TIME_NS + 8].copy_from_slice(&1234u64.to_ne_bytes());
        info[INFO_RUN_CNT..INFO_RUN_CNT + 8].copy_from_slice(&7u64.to_ne_bytes());
        let stat = parse_info(&info);
        assert_eq!(stat.name, "sys_exit_opena");
        assert_eq!((stat.run_time_ns, stat.run_cnt), (1234, 7));
    }

    #[test]
    fn per_op_divides_the_deltas_and_sorts() {
        let stat = |name: &str, ns, cnt| ProgStat {
            name: name.into(),
            run_time_ns: ns,
            run_cnt: cnt,
        };
        let before = BTreeMap::from([
            (1, stat("a", 100, 10)),
            (2, stat("b", 0, 0)),
            (3, stat("idle", 5, 1)),
            (9, stat("not ours", 0, 0)),
        ]);
        let after = BTreeMap::from([
            (1, stat("a", 1100, 110)),
            (2, stat("b", 3000, 100)),
            (3, stat("idle", 5, 1)),
            (9, stat("not ours", 9999, 99)),
        ]);
        let ids = BTreeMap::from([(1, None), (2, Some("b_tracepoint".to_string())), (3, None)]);
        let out = per_op(&before, &after, &ids, 100).unwrap();
        assert_eq!(out["ns_per_op"], 40.0);
        let programs = out["programs"].as_array().unwrap();
        assert_eq!(programs.len(), 2);
        assert_eq!(programs[0]["name"], "b_tracepoint");
        assert_eq!(programs[0]["program"], "b");
        assert_eq!(programs[0]["ns_per_run"], 30.0);
        assert_eq!(programs[1]["runs_per_op"], 1.0);
    }
}
