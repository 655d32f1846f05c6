//! The peers agentwatch is compared with, doing equivalent work for one
//! traced pid: bpftrace on the same syscall tracepoints, and an audit rule
//! on openat+connect with auditd writing the records.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, run_quiet},
};

/// Once audit has been enabled on a machine, every process created after
/// takes the audit slow path on each system call, rules or not — which
/// would slow the baseline too. With no audit rules loaded, the bench adds
/// `-a task,never` (the standard way to switch that off) for its duration.
pub struct AuditQuiet {
    pub engaged: bool,
}

impl AuditQuiet {
    pub fn engage() -> Self {
        let empty = Command::new("auditctl")
            .arg("-l")
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "No rules"
            });
        let engaged = empty && quiet(true).is_ok();
        Self { engaged }
    }
}

impl Drop for AuditQuiet {
    fn drop(&mut self) {
        if self.engaged {
            let _ = quiet(false);
        }
    }
}

/// Adds (or deletes) the `task,never` rule.
pub fn quiet(on: bool) -> Result<()> {
    run_quiet(Command::new("auditctl").args([if on { "-a" } else { "-d" }, "task,never"]))?;
    Ok(())
}

/// auditd running and auditing enabled, for the section's duration; what
/// was started or changed is put back on drop.
pub struct Auditd {
    started: Option<Proc>,
    enabled_before: u32,
    pub version: String,
}

fn audit_status() -> Result<(u32, u32)> {
    let status = run_quiet(Command::new("auditctl").arg("-s"))?;
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("enabled "), field("pid ")))
}

impl Auditd {
    pub fn start(ctx: &Ctx) -> Result<Self> {
        let version = run_quiet(Command::new("auditctl").arg("-v"))
            .context("auditctl (Debian package auditd)")?
            .trim()
            .to_string();
        let (enabled_before, pid) = audit_status()?;
        let mut auditd = Self {
            started: None,
            enabled_before,
            version,
        };
        if pid == 0 {
            let mut cmd = Command::new("auditd");
            cmd.arg("-n");
            auditd.started = Some(Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("auditd"))?);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while audit_status()?.1 == 0 {
                if std::time::Instant::now() >= deadline {
                    bail!("auditd did not register with the kernel");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if audit_status()?.0 == 0 {
            run_quiet(Command::new("auditctl").args(["-e", "1"]))?;
        }
        Ok(auditd)
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        if let Some(mut auditd) = self.started.take() {
            auditd.stop();
        }
        if self.enabled_before == 0 {
            let _ = run_quiet(Command::new("auditctl").args(["-e", "0"]));
        }
    }
}

/// A syscall rule for one pid, deleted on drop.
pub struct AuditRule {
    spec: Vec<String>,
}

impl AuditRule {
    pub fn add(pid: u32) -> Result<Self> {
        let spec: Vec<String> = [
            "always,exit",
            "-F",
            "arch=b64",
            "-S",
            "openat",
            "-S",
            "connect",
            "-F",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("pid={pid}")])
        .collect();
        run_quiet(Command::new("auditctl").arg("-a").args(&spec))?;
        Ok(Self { spec })
    }
}

impl Drop for AuditRule {
    fn drop(&mut self) {
        let _ = run_quiet(Command::new("auditctl").arg("-d").args(&self.spec));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BpftraceMode {
    /// Each event counted in a map keyed by path (or address) and result.
    Map,
    /// Each event printed to user space, as agentwatch sends each.
    Print,
}

const BPFTRACE_ENTER: &str = r#"
BEGIN { printf("ready\n"); }
tracepoint:syscalls:sys_enter_openat /pid == $1/ { @filename[tid] = args->filename; }
tracepoint:syscalls:sys_enter_connect /pid == $1/ { @sockaddr[tid] = args->uservaddr; }
"#;

const BPFTRACE_MAP: &str = r#"
tracepoint:syscalls:sys_exit_openat /pid == $1 && @filename[tid] != 0/ {
    @opens[str(@filename[tid]), args->ret >= 0] = count(); delete(@filename[tid]);
}
tracepoint:syscalls:sys_exit_connect /pid == $1 && @sockaddr[tid] != 0/ {
    @connects[buf(@sockaddr[tid], 8), args->ret] = count(); delete(@sockaddr[tid]);
}
END { clear(@filename); clear(@sockaddr); }
"#;

const BPFTRACE_PRINT: &str = r#"
tracepoint:syscalls:sys_exit_openat /pid == $1 && @filename[tid] != 0/ {
    printf("open %d %s %d\n", tid, str(@filename[tid]), args->ret); delete(@filename[tid]);
}
tracepoint:syscalls:sys_exit_connect /pid == $1 && @sockaddr[tid] != 0/ {
    printf("connect %d %r %d\n", tid, buf(@sockaddr[tid], 8), args->ret); delete(@sockaddr[tid]);
}
END { clear(@filename); clear(@sockaddr); }
"#;

pub struct Bpftrace {
    proc: Proc,
    reader: JoinHandle<(u64, Vec<String>)>,
}

impl Bpftrace {
    /// Starts bpftrace on `pid` and returns once its probes are attached.
    pub fn attach(ctx: &Ctx, pid: u32, mode: BpftraceMode) -> Result<Self> {
        let script = ctx.dir.join(match mode {
            BpftraceMode::Map => "map.bt",
            BpftraceMode::Print => "print.bt",
        });
        let body = match mode {
            BpftraceMode::Map => BPFTRACE_MAP,
            BpftraceMode::Print => BPFTRACE_PRINT,
        };
        std::fs::write(&script, format!("{BPFTRACE_ENTER}{body}"))?;
        let name = ctx.name("bpftrace");
        let mut cmd = Command::new("bpftrace");
        cmd.arg(&script)
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                ctx.dir.join(format!("{name}.stderr")),
            )?);
        let mut proc = Proc::spawn(&mut cmd, &name)?;
        let stdout = proc.stdout().context("bpftrace's stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = 0u64;
            let mut maps = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready_tx.send(());
                } else if line.starts_with('@') {
                    maps.push(line);
                } else if line.starts_with("open ") || line.starts_with("connect ") {
                    lines += 1;
                } else if line.starts_with("Lost ") {
                    // "Lost 123 events": the perf buffer was full.
                    maps.push(line);
                }
            }
            (lines, maps)
        });
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => Ok(Self { proc, reader }),
            Err(_) => {
                proc.stop_with(libc::SIGINT);
                let stderr = std::fs::read_to_string(ctx.dir.join(format!("{name}.stderr")))
                    .unwrap_or_default();
                bail!(
                    "bpftrace did not attach: {}",
                    super::procs::tail(&stderr, 600)
                )
            }
        }
    }

    /// Stops bpftrace (SIGINT: it prints its maps) and says what it recorded.
    pub fn finish(mut self) -> Value {
        self.proc.stop_with(libc::SIGINT);
        let (printed, maps) = self.reader.join().unwrap_or_default();
        // "@opens[/tmp/aw-bench-load-1234, 1]: 50000"
        let counted: u64 = maps
            .iter()
            .filter(|line| line.starts_with('@'))
            .filter_map(|line| line.rsplit(": ").next()?.trim().parse::<u64>().ok())
            .sum();
        let lost: u64 = maps
            .iter()
            .filter_map(|line| {
                line.strip_prefix("Lost ")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        json!({ "events_printed": printed, "events_counted": counted, "events_lost": lost })
    }
}

pub fn bpftrace_version() -> Option<String> {
    let out = Command::new("bpftrace").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
