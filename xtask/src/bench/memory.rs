//! Memory: resident set of agentwatch with 10,000 tracked processes and with
//! none. `agentwatch run` always; the daemon too when this build has one
//! (its agents are found by executable name: the sleepers are started
//! through a symlink named `claude`, the catalog's Claude Code executable).

use std::{
    io::BufReader,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, bpf_memlock, check_interrupted, read_line, status_kb, write_line},
};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let many: u64 = if ctx.quick { 2000 } else { 10_000 };
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    let running = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count() as u64;
    if running + many + 1000 > pid_max {
        bail!("pid_max {pid_max} leaves no room for {many} more processes ({running} run)");
    }
    let mut out = json!({
        "method": "sleepers = `xtask bench-load sleepers --count N` (forks N children that pause); \
                   RSS = VmRSS of the agentwatch process once it has been stable for 1 s; \
                   bpf = memlock of the BPF maps and programs it holds (kernel memory, not in RSS)",
        "processes": many,
        "pid_max": pid_max,
    });
    let mut run = json!({});
    for count in [0, many] {
        check_interrupted()?;
        let key = if count == 0 { "idle" } else { "tracked" };
        run[key] = run_session(ctx, count).unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        eprintln!(
            "bench: memory: agentwatch run with {count} sleeping processes: RSS {} kB",
            run[key]["rss_kb"]
        );
    }
    out["run"] = run;
    out["daemon"] = if ctx.daemon_help.is_some() {
        daemon(ctx, many).unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
    } else {
        json!({ "error": "not available in this build (no `agentwatch daemon`)" })
    };
    Ok(out)
}

/// Starts sleepers through `cmd`; returns the process, the sleepers' report
/// and where its stderr goes.
fn start_sleepers(
    ctx: &Ctx,
    mut cmd: std::process::Command,
    what: &str,
) -> Result<(Proc, Value, PathBuf)> {
    let name = ctx.name(what);
    let stderr = ctx.dir.join(format!("{name}.stderr"));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?);
    let mut proc = Proc::spawn(&mut cmd, &name)?;
    let mut stdout = BufReader::new(proc.stdout().context("stdout")?);
    let line = read_line(&mut stdout, what)?;
    let ready: Value =
        serde_json::from_str(&line).with_context(|| format!("sleepers said {line:?}"))?;
    // Keep the pipe open (and drained) until the end.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Ok((proc, ready, stderr))
}

fn stop_sleepers(mut proc: Proc) -> Result<()> {
    if let Some(mut stdin) = proc.stdin() {
        let _ = write_line(&mut stdin, "stop");
    }
    if proc.wait_timeout(Duration::from_secs(60))?.is_none() {
        proc.stop();
    }
    Ok(())
}

fn run_session(ctx: &Ctx, count: u64) -> Result<Value> {
    let cmd = ctx.watched_load(
        &["--events", "/dev/null"],
        &["sleepers", "--count", &count.to_string()],
    );
    let (proc, ready, stderr) = start_sleepers(ctx, cmd, "memory-run")?;
    // The sleepers' parent is agentwatch (`ip netns exec` execs it in place).
    let agentwatch = ready["ppid"].as_u64().map_or(proc.pid(), |pid| pid as u32);
    let figures = settle(agentwatch);
    stop_sleepers(proc)?;
    let mut figures = figures?;
    figures["sleepers"] = ready;
    let stderr = std::fs::read_to_string(stderr).unwrap_or_default();
    figures["agentwatch_report"] = json!(
        stderr
            .lines()
            .filter(|line| line.starts_with("agentwatch:"))
            .take(5)
            .collect::<Vec<_>>()
    );
    Ok(figures)
}

/// Waits until `pid`'s RSS has not moved by more than 1% for a second.
fn settle(pid: u32) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0u64, Instant::now());
    loop {
        let rss = status_kb(pid, "VmRSS").context("the process is gone")?;
        if rss.abs_diff(last.0) * 100 > last.0 {
            last = (rss, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) || Instant::now() >= deadline {
            let (bpf_bytes, maps, progs) = bpf_memlock(pid);
            return Ok(json!({
                "rss_kb": rss,
                "hwm_kb": status_kb(pid, "VmHWM"),
                "bpf_memlock_kb": bpf_bytes / 1024,
                "bpf_maps": maps,
                "bpf_progs": progs,
                "settled": Instant::now() < deadline,
            }));
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn daemon(ctx: &Ctx, many: u64) -> Result<Value> {
    let (daemon, _socket) = ctx.start_daemon()?;
    let mut idle = settle(daemon.pid())?;
    idle["metrics"] = daemon_metrics(ctx);
    idle["links"] = super::procs::bpf_links(daemon.pid());
    // An agent the daemon recognises by its executable's name.
    let agent = ctx.dir.join("claude");
    let _ = std::fs::remove_file(&agent);
    std::os::unix::fs::symlink(&ctx.xtask, &agent)?;
    let mut cmd = ctx.lab.command(&agent);
    cmd.args(["bench-load", "sleepers", "--count", &many.to_string()])
        .current_dir(&ctx.dir);
    let (sleepers, ready, _) = start_sleepers(ctx, cmd, "memory-daemon")?;
    let tracked = settle(daemon.pid());
    let metrics = daemon_metrics(ctx);
    let links = super::procs::bpf_links(daemon.pid());
    stop_sleepers(sleepers)?;
    let mut tracked = tracked?;
    tracked["sleepers"] = ready;
    tracked["metrics"] = metrics;
    tracked["links"] = links;
    drop(daemon);
    Ok(json!({ "idle": idle, "tracked": tracked }))
}

/// What the daemon says it tracks (its Prometheus metrics).
fn daemon_metrics(ctx: &Ctx) -> Value {
    json!({
        "tracked_processes": ctx.daemon_metric("agentwatch_tracked_processes"),
        "sessions_active": ctx.daemon_metric("agentwatch_sessions_active"),
    })
}
