//! Syscall overhead: the open+close and connect loops of `bench-load loops`
//! under each configuration, in interleaved rounds (the order rotates each
//! round), as ratios to the no-monitor baseline of the same round.

use std::{
    io::{BufReader, Read as _},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx,
    peers::{self, AuditRule, Auditd, Bpftrace, BpftraceMode},
    procs::{Proc, last_json, read_line, write_line},
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
            configs.extend([Config::BpftraceMap, Config::BpftracePrint]);
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
    Ok(json!({
        "method": "each figure: one `xtask bench-load loops` process in the bench's network namespace, \
                   500 warm-up iterations then each loop for a fixed time; ns/op = elapsed/iterations; \
                   ratio = figure / the no-monitor figure of the same round; median over rounds",
        "millis_per_loop": millis,
        "configs": configs.iter().map(|c| json!({ "key": c.key(), "what": c.describe() })).collect::<Vec<_>>(),
        "unavailable": unavailable,
        "versions": versions,
        "summary": summary,
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

/// The load, started paused so that `attach` can trace its pid first.
fn traced<T>(
    ctx: &Ctx,
    args: &[&str],
    attach: impl FnOnce(u32) -> Result<T>,
) -> Result<(Loops, T)> {
    let name = ctx.name("traced-load");
    let mut cmd = ctx.load(args);
    cmd.arg("--wait-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(
            ctx.dir.join(format!("{name}.stderr")),
        )?);
    let mut proc = Proc::spawn(&mut cmd, &name)?;
    let mut stdin = proc.stdin().context("the load's stdin")?;
    let mut stdout = BufReader::new(proc.stdout().context("the load's stdout")?);
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
