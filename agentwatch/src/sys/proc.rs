//! The one reader of other processes' /proc entries. A process that has
//! exited (or was never visible) reads as absent: every caller treats that
//! as "not there", so there is no error to report.

use std::{collections::HashMap, fs, path::PathBuf};

/// Every process id /proc lists.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

pub fn exists(pid: u32) -> bool {
    pid != 0 && fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// `comm`: the executable's name, cut to 15 bytes.
pub fn comm(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// The arguments, `argv[0]` first.
pub fn cmdline(pid: u32) -> Vec<String> {
    nul_separated(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
}

/// The environment's raw `NAME=value\0` block.
pub fn environ_block(pid: u32) -> Option<Vec<u8>> {
    fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The environment's `NAME=value` entries.
pub fn environ(pid: u32) -> Vec<String> {
    nul_separated(&environ_block(pid).unwrap_or_default())
}

pub fn cwd(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// pid → parent pid of every running process.
pub fn parents() -> HashMap<u32, u32> {
    pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect()
}

/// The parent pid from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_field(pid, 4)?.parse().ok()
}

/// Whether a process is stopped (`T` in `/proc/PID/stat`).
pub fn is_stopped(pid: u32) -> bool {
    stat_field(pid, 3).is_some_and(|state| state == "T")
}

/// When a process started, in clock ticks since boot: with the pid, it
/// names one process for the life of the boot.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// `pid` and its ancestors up to init, nearest first (bounded).
pub fn ancestry(pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    while let Some(parent) = chain.last().and_then(|&pid| parent_of(pid)) {
        if parent == 0 || chain.contains(&parent) || chain.len() == 64 {
            break;
        }
        chain.push(parent);
    }
    chain
}

/// The `Groups:` of /proc/PID/status; empty when it cannot be read.
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Field `number` (1-based, as proc(5) counts) of `/proc/PID/stat`, for
/// the fields after the parenthesised comm, which may itself contain spaces
/// and parentheses.
fn stat_field(pid: u32, number: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(number.checked_sub(3)?)
        .map(str::to_string)
}

fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_this_process() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
        // Running, and started some time after boot.
        assert!(!is_stopped(std::process::id()));
        assert!(start_time(std::process::id()).is_some_and(|ticks| ticks > 0));
    }
}
