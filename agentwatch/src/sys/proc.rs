//! The one reader of /proc: other processes' entries, and agentwatch's own
//! (capabilities, mounts). Per-process reads say why they failed, above all
//! whether the process is gone, and leave it to the caller what that means.

use std::{collections::HashMap, fmt, fs, io, path::PathBuf};

/// Why a /proc entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process has exited, or was never visible from here.
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {what} not found or unreadable")]
    Malformed { path: PathBuf, what: &'static str },
}

/// Whose /proc directory to read.
#[derive(Clone, Copy)]
enum Of {
    Pid(u32),
    /// `/proc/self`: agentwatch itself.
    Me,
}

impl fmt::Display for Of {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Of::Pid(pid) => write!(f, "{pid}"),
            Of::Me => f.write_str("self"),
        }
    }
}

impl Of {
    fn path(self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{self}/{file}"))
    }

    /// A process that went away mid-read reads as not found (ENOENT) or as
    /// no such process (ESRCH).
    fn error(self, path: PathBuf, source: io::Error) -> ProcError {
        match self {
            Of::Pid(pid)
                if source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH) =>
            {
                ProcError::Gone(pid)
            }
            _ => ProcError::Read { path, source },
        }
    }

    fn read(self, file: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.path(file);
        fs::read(&path).map_err(|source| self.error(path, source))
    }

    fn read_to_string(self, file: &str) -> Result<String, ProcError> {
        let path = self.path(file);
        fs::read_to_string(&path).map_err(|source| self.error(path, source))
    }

    /// The value of the `key:` line of `status`.
    fn status_line(self, key: &'static str) -> Result<String, ProcError> {
        let status = self.read_to_string("status")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .map(|value| value.trim().to_string())
            .ok_or(ProcError::Malformed {
                path: self.path("status"),
                what: key,
            })
    }

    /// Field `number` (1-based, as proc(5) counts) of `stat`, for the fields
    /// after the parenthesised comm, which may itself contain spaces and
    /// parentheses.
    fn stat_field<T: std::str::FromStr>(
        self,
        number: usize,
        what: &'static str,
    ) -> Result<T, ProcError> {
        let stat = self.read_to_string("stat")?;
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(number.checked_sub(3)?))
            .and_then(|field| field.parse().ok())
            .ok_or(ProcError::Malformed {
                path: self.path("stat"),
                what,
            })
    }
}

/// Every process id /proc lists (none if /proc cannot be read).
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
pub fn comm(pid: u32) -> Result<String, ProcError> {
    Ok(Of::Pid(pid).read_to_string("comm")?.trim_end().to_string())
}

/// The arguments, `argv[0]` first.
pub fn cmdline(pid: u32) -> Result<Vec<String>, ProcError> {
    Ok(nul_separated(&Of::Pid(pid).read("cmdline")?))
}

/// The environment's raw `NAME=value\0` block.
pub fn environ_block(pid: u32) -> Result<Vec<u8>, ProcError> {
    Of::Pid(pid).read("environ")
}

/// The environment's `NAME=value` entries.
pub fn environ(pid: u32) -> Result<Vec<String>, ProcError> {
    Ok(nul_separated(&environ_block(pid)?))
}

pub fn cwd(pid: u32) -> Result<PathBuf, ProcError> {
    let of = Of::Pid(pid);
    let path = of.path("cwd");
    fs::read_link(&path).map_err(|source| of.error(path, source))
}

/// pid → parent pid of every running process (those that exit meanwhile are left out).
pub fn parents() -> HashMap<u32, u32> {
    pids()
        .into_iter()
        .filter_map(|pid| Some((pid, parent_of(pid).ok()?)))
        .collect()
}

/// The parent pid from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Result<u32, ProcError> {
    Of::Pid(pid).stat_field(4, "the parent pid")
}

/// Whether a process is stopped (`T` in `/proc/PID/stat`).
pub fn is_stopped(pid: u32) -> Result<bool, ProcError> {
    let state: String = Of::Pid(pid).stat_field(3, "the state")?;
    Ok(state == "T")
}

/// When a process started, in clock ticks since boot: with the pid, it
/// names one process for the life of the boot.
pub fn start_time(pid: u32) -> Result<u64, ProcError> {
    Of::Pid(pid).stat_field(22, "the start time")
}

/// `pid` and its ancestors up to init, nearest first (bounded).
pub fn ancestry(pid: u32) -> Vec<u32> {
    let mut chain = vec![pid];
    while let Some(parent) = chain.last().and_then(|&pid| parent_of(pid).ok()) {
        if parent == 0 || chain.contains(&parent) || chain.len() == 64 {
            break;
        }
        chain.push(parent);
    }
    chain
}

/// The `Groups:` of /proc/PID/status.
pub fn supplementary_groups(pid: u32) -> Result<Vec<u32>, ProcError> {
    let groups = Of::Pid(pid).status_line("Groups")?;
    Ok(groups
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect())
}

/// agentwatch's own effective capabilities (`CapEff:`), one bit per capability.
pub fn effective_capabilities() -> Result<u64, ProcError> {
    let hex = Of::Me.status_line("CapEff")?;
    u64::from_str_radix(&hex, 16).map_err(|_| ProcError::Malformed {
        path: Of::Me.path("status"),
        what: "CapEff",
    })
}

/// The mounts agentwatch sees (`/proc/self/mountinfo`, parsed by `kernel::mounts`).
pub fn mountinfo() -> Result<String, ProcError> {
    Of::Me.read_to_string("mountinfo")
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
        let me = std::process::id();
        assert_eq!(parent_of(me).unwrap(), std::os::unix::process::parent_id());
        // Running, and started some time after boot.
        assert!(!is_stopped(me).unwrap());
        assert!(start_time(me).unwrap() > 0);
        assert!(effective_capabilities().is_ok());
        assert!(mountinfo().unwrap().contains(" / "));
    }

    #[test]
    fn a_process_that_is_not_there_is_gone() {
        // Above the kernel's pid_max limit (2^22), so never a process.
        let nobody = 1 << 23;
        assert!(matches!(comm(nobody), Err(ProcError::Gone(pid)) if pid == nobody));
        assert!(matches!(parent_of(nobody), Err(ProcError::Gone(_))));
        assert!(matches!(cwd(nobody), Err(ProcError::Gone(_))));
    }
}
