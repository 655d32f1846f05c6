//! Syscall overhead: the open+close and connect loops of `bench-load loops`
//! under each configuration, in interleaved rounds (the order rotates each
//! round), as ratios to the no-monitor baseline of the same round.
//!
//! One configuration is the floor: bpftrace programs that return at once on
//! the tracepoints agentwatch uses, for every process — what the kernel's
//! tracepoints cost before any program does work. "Outside a session" is
//! also given as a ratio to it.
//!
//! After the rounds, a profile: with `kernel.bpf_stats_enabled=1`, one more
//! load each for the watched, outside-a-session and floor configurations,
//! paused around each loop while the bench reads every BPF program's run
//! time and count (bench/bpfstats.rs); per loop iteration, by program, for
//! the programs the monitor's process holds. The rounds run with the stats
//! off, since counting adds two clock reads to every program run.

use std::{
    io::{BufReader, Read as _},
    process::{ChildStdin, ChildStdout, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx, bpfstats,
    peers::{self, AuditRule, Auditd, Bpftrace, BpftraceMode},
    procs::{Proc, last_json, parent_of, read_line, wait_for_child, write_line},
    rounds::{
        self, Config as _, Figure, beside_a_session, interleaved, micros, result_of, summarize,
    },
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Config {
    Baseline,
    Untracked,
    Watched,
    Daemon,
    Floor,
    BpftraceMap,
    BpftracePrint,
    Auditd,
}

impl rounds::Config for Config {
    fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Untracked => "untracked",
            Config::Watched => "watched",
            Config::Daemon => "daemon",
            Config::Floor => "floor",
            Config::BpftraceMap => "bpftrace_map",
            Config::BpftracePrint => "bpftrace_print",
            Config::Auditd => "auditd",
        }
    }
}

impl Config {
    pub fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no monitor",
            Config::Untracked => {
                "process outside any session while a session runs (`agentwatch run -- sleep`)"
            }
            Config::Watched => "process inside a watched session (`agentwatch run -- LOAD`)",
            Config::Daemon => "`agentwatch daemon` running, no agent session",
            Config::Floor => {
                "floor: bpftrace, programs that return at once on every tracepoint agentwatch uses, \
                 for every process (no cgroup hooks: bpftrace cannot attach them)"
            }
            Config::BpftraceMap => {
                "bpftrace, openat/connect enter+exit tracepoints for the pid, every event counted in a map by path/address and result"
            }
            Config::BpftracePrint => {
                "bpftrace, same tracepoints, every event printed to user space (path/address, result)"
            }
            Config::Auditd => {
                "auditd running, rule `-a always,exit -S openat -S connect -F pid=PID`"
            }
        }
    }
}

const FIGURES: [Figure; 2] = [
    ("open_close", "/open_close/ns_per_op"),
    ("connect", "/connect/ns_per_op"),
];

struct Loops {
    value: Value,
}

impl Loops {
    fn parse(value: Value) -> Result<Self> {
        for (name, pointer) in FIGURES {
            value
                .pointer(pointer)
                .and_then(Value::as_f64)
                .with_context(|| format!("no {name} figure in {value}"))?;
        }
        Ok(Self { value })
    }
}

pub fn run(ctx: &Ctx) -> Result<Value> {
    let millis = if ctx.quick { 200 } else { 400 };
    let mut configs = vec![Config::Baseline, Config::Untracked, Config::Watched];
    let mut unavailable = json!({});
    let mut versions = json!({});
    if ctx.daemon_help.is_some() {
        configs.push(Config::Daemon);
    } else {
        unavailable["daemon"] = json!("not available in this build (no `agentwatch daemon`)");
    }
    match peers::bpftrace_version() {
        Some(version) => {
            versions["bpftrace"] = json!(version);
            configs.extend([Config::Floor, Config::BpftraceMap, Config::BpftracePrint]);
        }
        None => unavailable["bpftrace"] = json!("bpftrace is not installed"),
    }
    let auditd = match Auditd::start(ctx) {
        Ok(auditd) => {
            versions["auditd"] = json!(auditd.version);
            configs.push(Config::Auditd);
            Some(auditd)
        }
        Err(error) => {
            unavailable["auditd"] = json!(format!("{error:#}"));
            None
        }
    };
    let rounds = interleaved(
        ctx,
        "overhead",
        &configs,
        |config| Ok(measure(ctx, config, millis)?.value),
        |loops| micros(loops, &FIGURES),
    )?;
    drop(auditd);
    let summary = summarize(&rounds, &configs, Config::Baseline, &FIGURES);
    let vs_floor = configs
        .contains(&Config::Floor)
        .then(|| summarize(&rounds, &configs, Config::Floor, &FIGURES));
    let profiled: Vec<Config> = [Config::Watched, Config::Untracked, Config::Floor]
        .into_iter()
        .filter(|config| configs.contains(config))
        .collect();
    let profile = profile(ctx, millis, &profiled, &summary)
        .unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
    Ok(json!({
        "method": "each figure: one `xtask bench-load loops` process in the bench's network namespace, \
                   500 warm-up iterations then each loop for a fixed time; ns/op = elapsed/iterations; \
                   ratio = figure / the no-monitor figure of the same round; median over rounds",
        "millis_per_loop": millis,
        "configs": configs.iter().map(|c| json!({ "key": c.key(), "what": c.describe() })).collect::<Vec<_>>(),
        "unavailable": unavailable,
        "versions": versions,
        "summary": summary,
        "vs_floor": vs_floor,
        "profile": profile,
        "rounds": rounds,
    }))
}

fn measure(ctx: &Ctx, config: Config, millis: u64) -> Result<Loops> {
    let millis_arg = millis.to_string();
    let loops_args = ["loops", "--millis", &millis_arg];
    match config {
        Config::Baseline => plain(ctx, &loops_args),
        Config::Untracked => beside_a_session(ctx, || plain(ctx, &loops_args)),
        Config::Watched => Loops::parse(result_of(
            ctx,
            ctx.watched_load(&["--events", "/dev/null"], &loops_args),
            "watched",
        )?),
        Config::Daemon => {
            let (daemon, _socket) = ctx.start_daemon()?;
            // What it has attached while the loops run (no session: the
            // syscall tracepoints should be detached).
            let links = super::procs::bpf_links(daemon.pid());
            let mut loops = plain(ctx, &loops_args)?;
            loops.value["daemon_links"] = links;
            drop(daemon);
            Ok(loops)
        }
        Config::Floor => {
            let (mut loops, tracer) = traced(ctx, &loops_args, |pid| {
                Bpftrace::attach(ctx, pid, BpftraceMode::Floor)
            })?;
            loops.value["tracer"] = tracer.finish();
            Ok(loops)
        }
        Config::BpftraceMap | Config::BpftracePrint => {
            let mode = if config == Config::BpftraceMap {
                BpftraceMode::Map
            } else {
                BpftraceMode::Print
            };
            let (mut loops, tracer) =
                traced(ctx, &loops_args, |pid| Bpftrace::attach(ctx, pid, mode))?;
            loops.value["tracer"] = tracer.finish();
            Ok(loops)
        }
        Config::Auditd => {
            // A process needs an audit context to be audited: let this one
            // be created without the bench's `task,never` rule.
            if ctx.audit_quiet {
                peers::quiet(false)?;
            }
            let result = traced(ctx, &loops_args, |pid| {
                if ctx.audit_quiet {
                    peers::quiet(true)?;
                }
                AuditRule::add(pid)
            });
            if ctx.audit_quiet {
                let _ = peers::quiet(true);
            }
            Ok(result?.0)
        }
    }
}

/// The load alone (no tracer of its own).
fn plain(ctx: &Ctx, args: &[&str]) -> Result<Loops> {
    Loops::parse(result_of(ctx, ctx.load(args), "load")?)
}

/// Starts a load that is told on its stdin when to go on, its lines read
/// from its stdout and its stderr kept in the scratch directory.
fn spawn_told(
    ctx: &Ctx,
    mut cmd: std::process::Command,
    what: &str,
) -> Result<(Proc, ChildStdin, BufReader<ChildStdout>)> {
    let name = ctx.name(what);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(
            ctx.dir.join(format!("{name}.stderr")),
        )?);
    let mut proc = Proc::spawn(&mut cmd, &name)?;
    let stdin = proc.stdin().context("the load's stdin")?;
    let stdout = BufReader::new(proc.stdout().context("the load's stdout")?);
    Ok((proc, stdin, stdout))
}

/// The load, started paused so that `attach` can trace its pid first.
fn traced<T>(
    ctx: &Ctx,
    args: &[&str],
    attach: impl FnOnce(u32) -> Result<T>,
) -> Result<(Loops, T)> {
    let mut cmd = ctx.load(args);
    cmd.arg("--wait-stdin");
    let (mut proc, mut stdin, mut stdout) = spawn_told(ctx, cmd, "traced-load")?;
    let ready: Value = serde_json::from_str(&read_line(&mut stdout, "the load")?)?;
    let pid = ready["ready"].as_u64().context("no pid from the load")? as u32;
    let tracer = attach(pid)?;
    write_line(&mut stdin, "go")?;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    proc.wait_timeout(Duration::from_secs(30))?;
    let value = last_json(&rest).with_context(|| format!("no result from the load: {rest}"))?;
    Ok((Loops::parse(value)?, tracer))
}

/// The profile of `configs`: for each, one load paused around each loop,
/// the BPF programs' counters read at each pause, per loop iteration; and
/// the split of the measured cost (`summary`'s median extra ns over no
/// monitor) into the monitor's programs and the rest.
fn profile(ctx: &Ctx, millis: u64, configs: &[Config], summary: &Value) -> Result<Value> {
    let stats = bpfstats::StatsEnabled::engage()?;
    let mut out = json!({
        "method": "kernel.bpf_stats_enabled=1 (restored after); every program's run_time_ns and run_cnt \
                   through bpf(2) (BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD) \
                   before and after each timed loop of one paused load; per loop iteration, for the \
                   programs the monitor's process holds (prog_id of its prog and link fds); run counts \
                   are machine-wide, so runs_per_op above the loop's own calls is other processes",
        "millis_per_loop": millis,
    });
    let millis_arg = millis.to_string();
    let args = ["loops", "--millis", &millis_arg, "--pause-each"];
    for &config in configs {
        let result = match config {
            Config::Watched => paused_load(
                ctx,
                ctx.watched_load(&["--events", "/dev/null"], &args),
                parent_of,
            ),
            Config::Untracked => (|| {
                let mut cmd = ctx.watched(&["--events", "/dev/null"]);
                cmd.args(["sleep", "600"]);
                let mut session =
                    Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("profile-session"))?;
                let child = wait_for_child(&session, Duration::from_secs(60))?;
                // `ip netns exec` execs agentwatch, so the session's pid is
                // agentwatch's (its first child may be a short-lived helper).
                let monitor = Some(session.pid())
                    .filter(|&pid| !bpfstats::prog_ids_of(pid).is_empty())
                    .or_else(|| parent_of(child));
                let result = paused_load(ctx, ctx.load(&args), |_| monitor);
                session.stop();
                result
            })(),
            Config::Floor => (|| {
                let tracer = Bpftrace::attach(ctx, 0, BpftraceMode::Floor)?;
                let monitor = tracer.pid();
                let result = paused_load(ctx, ctx.load(&args), |_| Some(monitor));
                let mut result = result?;
                result["tracer"] = tracer.finish();
                Ok(result)
            })(),
            _ => continue,
        };
        let mut value = result.unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
        for (name, _) in FIGURES {
            let measured = summary[config.key()][name]["median_extra_ns"].as_f64();
            let programs = value[name]["ns_per_op"].as_f64();
            if let (Some(measured), Some(programs)) = (measured, programs) {
                value[name]["split"] = json!({
                    "measured_extra_ns": measured,
                    "programs_ns": programs,
                    "rest_ns": measured - programs,
                });
            }
        }
        out[config.key()] = value;
    }
    drop(stats);
    Ok(out)
}

/// Runs a load started with `--pause-each`: at each pause, reads the
/// counters of the programs of the monitor's process (`monitor` finds its
/// pid from the load's), and says go. Returns, for each loop, the programs'
/// cost per iteration.
fn paused_load(
    ctx: &Ctx,
    cmd: std::process::Command,
    monitor: impl Fn(u32) -> Option<u32>,
) -> Result<Value> {
    let (mut proc, mut stdin, mut stdout) = spawn_told(ctx, cmd, "profiled-load")?;
    let mut pending = None;
    let mut windows = Vec::new();
    let result = loop {
        let line = read_line(&mut stdout, "the profiled load")?;
        let Ok(message) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        if let Some(at) = message["before"].as_str() {
            let pid = message["pid"].as_u64().context("no pid from the load")? as u32;
            let monitor = monitor(pid).context("no monitor process to profile")?;
            let ids = bpfstats::prog_ids_of(monitor);
            pending = Some((at.to_string(), ids, bpfstats::snapshot()));
            write_line(&mut stdin, "go")?;
        } else if let Some(at) = message["after"].as_str() {
            let after = bpfstats::snapshot();
            let (name, ids, before) = pending.take().context("`after` without `before`")?;
            if name != at {
                anyhow::bail!("the load paused after {at}, before {name}");
            }
            windows.push((name, ids, before, after));
            write_line(&mut stdin, "go")?;
        } else if message.is_object() {
            break message;
        }
    };
    proc.wait_timeout(Duration::from_secs(30))?;
    let mut out = json!({});
    for (name, ids, before, after) in windows {
        let iterations = result[&name]["iterations"].as_u64().unwrap_or(0);
        out[&name] = bpfstats::per_op(&before, &after, &ids, iterations)?;
        out[&name]["loop_ns_per_op"] = result[&name]["ns_per_op"].clone();
    }
    Ok(out)
}
