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
    /// The floor: programs that return at once, on every tracepoint
    /// agentwatch attaches to (see [`FLOOR_TRACEPOINTS`]), for every process.
    Floor,
}

/// The tracepoints agentwatch's programs attach to (agentwatch-ebpf/src:
/// file.rs, net.rs, process.rs, uring.rs), as bpftrace names them. The
/// sched ones agentwatch attaches as BTF tracepoints (tp_btf); bpftrace
/// 0.17 has no raw tracepoints, so the floor uses the plain tracepoints of
/// the same events. There is no close(2) tracepoint: agentwatch has none.
/// Its cgroup hooks (connect4/6, sendmsg4/6, sock_create, skb egress and
/// ingress, sock_ops) and its sk_msg program cannot be attached by
/// bpftrace, so the floor lacks them.
pub const FLOOR_TRACEPOINTS: [&str; 15] = [
    "syscalls:sys_exit_openat",
    "syscalls:sys_exit_openat2",
    "syscalls:sys_exit_open",
    "syscalls:sys_exit_creat",
    "syscalls:sys_exit_open_by_handle_at",
    "syscalls:sys_exit_connect",
    "syscalls:sys_enter_execve",
    "syscalls:sys_exit_execve",
    "syscalls:sys_enter_execveat",
    "syscalls:sys_exit_execveat",
    "sched:sched_process_fork",
    "sched:sched_process_exec",
    "sched:sched_process_exit",
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_complete",
];

/// The floor's script: the tracepoints of [`FLOOR_TRACEPOINTS`] this
/// kernel has, with an empty body each (bpftrace still loads and attaches
/// a program for each, which returns at once), and no pid filter.
fn floor_script() -> (String, Vec<&'static str>) {
    let events = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .map(std::path::Path::new)
    .find(|dir| dir.join("syscalls").is_dir());
    let present: Vec<&'static str> = FLOOR_TRACEPOINTS
        .into_iter()
        .filter(|tp| events.is_none_or(|dir| dir.join(tp.replace(':', "/")).is_dir()))
        .collect();
    let probes: Vec<String> = present
        .iter()
        .map(|tp| format!("tracepoint:{tp}"))
        .collect();
    (
        format!(
            "BEGIN {{ printf(\"ready\\n\"); }}\n{} {{ }}\n",
            probes.join(",\n")
        ),
        present,
    )
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
    /// The floor's tracepoints, and the programs bpftrace holds once attached.
    floor: Option<(Vec<&'static str>, usize)>,
}

impl Bpftrace {
    /// Starts bpftrace on `pid` and returns once its probes are attached.
    pub fn attach(ctx: &Ctx, pid: u32, mode: BpftraceMode) -> Result<Self> {
        let script = ctx.dir.join(match mode {
            BpftraceMode::Map => "map.bt",
            BpftraceMode::Print => "print.bt",
            BpftraceMode::Floor => "floor.bt",
        });
        let mut floor = None;
        let text = match mode {
            BpftraceMode::Map => format!("{BPFTRACE_ENTER}{BPFTRACE_MAP}"),
            BpftraceMode::Print => format!("{BPFTRACE_ENTER}{BPFTRACE_PRINT}"),
            BpftraceMode::Floor => {
                let (text, tracepoints) = floor_script();
                floor = Some((tracepoints, 0));
                text
            }
        };
        std::fs::write(&script, text)?;
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
            Ok(()) => {
                if let Some((tracepoints, held)) = &mut floor {
                    // A program per probe (BEGIN's may be gone by now).
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    loop {
                        *held = super::bpfstats::prog_ids_of(proc.pid()).len();
                        if *held >= tracepoints.len() || std::time::Instant::now() >= deadline {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if *held < tracepoints.len() {
                        proc.stop_with(libc::SIGINT);
                        bail!(
                            "bpftrace holds {held} programs for the floor's {} tracepoints",
                            tracepoints.len()
                        );
                    }
                }
                Ok(Self {
                    proc,
                    reader,
                    floor,
                })
            }
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
        let mut out =
            json!({ "events_printed": printed, "events_counted": counted, "events_lost": lost });
        if let Some((tracepoints, held)) = self.floor {
            out["floor_tracepoints"] = json!(tracepoints);
            out["floor_programs_held"] = json!(held);
        }
        out
    }

    /// bpftrace's own pid (its programs are the ones it holds).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

pub fn bpftrace_version() -> Option<String> {
    let out = Command::new("bpftrace").arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
