//! Processes the bench starts: each is ended by its own pid (SIGTERM, then
//! SIGKILL) when dropped, so that a failing section leaves nothing behind.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Set by SIGINT/SIGTERM: sections stop at their next step and clean up.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn catch_interrupts() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A child process the bench owns.
pub struct Proc {
    child: Child,
    what: String,
    stdout_file: Option<PathBuf>,
    stderr_file: Option<PathBuf>,
}

/// What a finished process left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last line of stdout that parses as a JSON object.
    pub fn json(&self) -> Result<Value> {
        last_json(&self.stdout).with_context(|| {
            format!(
                "no JSON result (exit {}); stdout: {}; stderr: {}",
                self.status,
                tail(&self.stdout, 400),
                tail(&self.stderr, 800)
            )
        })
    }
}

pub fn last_json(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line.trim()).ok())
        .find(Value::is_object)
}

pub fn tail(text: &str, max: usize) -> String {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to files in `dir` (read by
    /// [`Proc::finish`]), stdin from /dev/null.
    pub fn spawn_logged(cmd: &mut Command, dir: &Path, name: &str) -> Result<Self> {
        let stdout_file = dir.join(format!("{name}.stdout"));
        let stderr_file = dir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout_file)?)
            .stderr(File::create(&stderr_file)?);
        let mut proc = Self::spawn(cmd, name)?;
        proc.stdout_file = Some(stdout_file);
        proc.stderr_file = Some(stderr_file);
        Ok(proc)
    }

    /// Starts `cmd` with whatever stdio it was given.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            what: name.to_string(),
            stdout_file: None,
            stderr_file: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    fn try_status(&self) -> std::io::Result<Option<ExitStatus>> {
        // try_wait needs &mut; peek through waitid without reaping.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with WNOWAIT does not reap it.
        let ret = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if ret < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: filled in by waitid.
        if unsafe { info.si_pid() } == 0 {
            Ok(None)
        } else {
            Ok(Some(ExitStatus::default()))
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits up to `timeout`; None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process (killing it after `timeout`) and collects its output.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        let status = match self.wait_timeout(timeout)? {
            Some(status) => status,
            None => {
                self.stop();
                bail!("{} did not finish within {timeout:?}", self.what);
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout)?;
        }
        if let Some(path) = &self.stdout_file {
            stdout = std::fs::read_to_string(path).unwrap_or_default();
        }
        if let Some(path) = &self.stderr_file {
            stderr = std::fs::read_to_string(path).unwrap_or_default();
        }
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }

    /// SIGTERM, then SIGKILL after 5 s; waits for it.
    pub fn stop(&mut self) {
        self.stop_with(libc::SIGTERM);
    }

    pub fn stop_with(&mut self, signal: libc::c_int) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        if let Ok(Some(_)) = self.wait_timeout(Duration::from_secs(5)) {
            return;
        }
        eprintln!("bench: {} ignored signal {signal}: killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the first line of `out`; the reader keeps what follows.
pub fn read_line(reader: &mut BufReader<ChildStdout>, timeout_what: &str) -> Result<String> {
    let mut line = String::new();
    let n = reader.read_line(&mut line)?;
    if n == 0 {
        bail!("{timeout_what}: end of output before the first line");
    }
    Ok(line)
}

pub fn write_line(stdin: &mut ChildStdin, line: &str) -> Result<()> {
    stdin.write_all(line.as_bytes())?;
    stdin.write_all(b"\n")?;
    stdin.flush()?;
    Ok(())
}

/// Runs a set-up command to completion; fails with its stderr.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pids whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(ppid))
        .collect()
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// Waits until `pid` has a child (agentwatch has started its command).
pub fn wait_for_child(proc: &Proc, timeout: Duration) -> Result<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(&child) = children_of(proc.pid()).first() {
            return Ok(child);
        }
        if !proc.running() {
            bail!("{} exited before starting its command", proc.what);
        }
        if Instant::now() >= deadline {
            bail!("{} started no command within {timeout:?}", proc.what);
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `/proc/PID/status` field in kB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Kernel memory charged for the BPF maps and programs `pid` holds open
/// (`memlock:` in their fdinfo), in bytes, and how many of each.
pub fn bpf_memlock(pid: u32) -> (u64, u64, u64) {
    let (mut bytes, mut maps, mut progs) = (0, 0, 0);
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0, 0);
    };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let is_map = target.contains("bpf-map");
        let is_prog = target.contains("bpf-prog");
        if !is_map && !is_prog {
            continue;
        }
        maps += u64::from(is_map);
        progs += u64::from(is_prog);
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        bytes += fdinfo
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    (bytes, maps, progs)
}

/// How many BPF links and programs `pid` holds: agentwatch is attached once
/// this stops growing.
pub fn bpf_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target.contains("bpf_link") || target.contains("bpf-prog")
        })
        .count()
}

/// Waits until `proc` has attached its programs: it holds BPF links or
/// programs and their number has not changed for half a second.
pub fn wait_attached(proc: &Proc, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (0, Instant::now());
    loop {
        if !proc.running() {
            bail!("{what} exited while starting");
        }
        let now = bpf_fds(proc.pid());
        if now != last.0 {
            last = (now, Instant::now());
        } else if now > 0 && last.1.elapsed() >= Duration::from_millis(500) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} attached nothing within a minute");
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kinds of BPF links `pid` holds (`link_type` in their fdinfo, with
/// the attach type for cgroup links), and how many of each.
pub fn bpf_links(pid: u32) -> serde_json::Value {
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return serde_json::Value::Null;
    };
    for entry in dir.flatten() {
        let is_link = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().contains("bpf_link"));
        if !is_link {
            continue;
        }
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        let field = |name: &str| {
            fdinfo
                .lines()
                .find_map(|line| Some(line.strip_prefix(name)?.trim().to_string()))
        };
        let kind = match (field("link_type:"), field("attach_type:")) {
            (Some(kind), Some(attach)) => format!("{kind} (attach type {attach})"),
            (Some(kind), None) => kind,
            _ => "unknown".into(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    serde_json::json!(kinds)
}
