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
    procs::{Proc, check_interrupted, last_json, read_line, wait_for_child, write_line},
    report::median,
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

impl Config {
    pub fn key(self) -> &'static str {
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

pub const LOOPS: [&str; 2] = ["open_close", "connect"];

struct Loops {
    value: Value,
}

impl Loops {
    fn parse(value: Value) -> Result<Self> {
        for name in LOOPS {
            value[name]["ns_per_op"]
                .as_f64()
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
    let mut rounds = Vec::new();
    for round in 0..ctx.rounds {
        check_interrupted()?;
        let mut order = configs.clone();
        order.rotate_left(round % configs.len());
        let mut figures = json!({ "order": order.iter().map(|c| c.key()).collect::<Vec<_>>() });
        let mut line = format!("bench: overhead round {}/{}:", round + 1, ctx.rounds);
        for config in order {
            check_interrupted()?;
            figures[config.key()] = match measure(ctx, config, millis) {
                Ok(loops) => {
                    line += &format!(
                        " {} {:.2}/{:.2} µs;",
                        config.key(),
                        loops.value["open_close"]["ns_per_op"]
                            .as_f64()
                            .unwrap_or(0.0)
                            / 1e3,
                        loops.value["connect"]["ns_per_op"].as_f64().unwrap_or(0.0) / 1e3
                    );
                    loops.value
                }
                Err(error) => {
                    line += &format!(
                        " {} failed ({});",
                        config.key(),
                        super::procs::tail(&format!("{error:#}"), 300)
                    );
                    json!({ "error": format!("{error:#}") })
                }
            };
        }
        eprintln!("{line}");
        rounds.push(figures);
    }
    drop(auditd);
    let mut summary = json!({});
    for config in &configs {
        for name in LOOPS {
            let ns: Vec<f64> = rounds
                .iter()
                .filter_map(|round| round[config.key()][name]["ns_per_op"].as_f64())
                .collect();
            let ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|round| {
                    Some(
                        round[config.key()][name]["ns_per_op"].as_f64()?
                            / round["baseline"][name]["ns_per_op"].as_f64()?,
                    )
                })
                .collect();
            let errors: Vec<&Value> = rounds
                .iter()
                .filter_map(|round| round[config.key()].get("error"))
                .collect();
            summary[config.key()][name] = json!({
                "median_ns": median(&ns),
                "median_ratio": median(&ratios),
                "ratios": ratios,
                "rounds_measured": ns.len(),
            });
            if !errors.is_empty() {
                summary[config.key()]["errors"] = json!(errors);
            }
        }
    }
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
        Config::Untracked => {
            let mut cmd = ctx.watched(&["--events", "/dev/null"]);
            cmd.args(["sleep", "600"]);
            let mut session =
                Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("untracked-session"))?;
            wait_for_child(&session, Duration::from_secs(60))?;
            let loops = plain(ctx, &loops_args);
            session.stop();
            loops
        }
        Config::Watched => {
            let mut cmd = ctx.watched_load(&["--events", "/dev/null"], &loops_args);
            let finished = Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("watched"))?
                .finish(Duration::from_secs(120))?;
            Loops::parse(finished.json()?)
        }
        Config::Daemon => {
            let daemon = ctx.start_daemon()?;
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
    let mut cmd = ctx.load(args);
    let finished = Proc::spawn_logged(&mut cmd, &ctx.dir, &ctx.name("load"))?
        .finish(Duration::from_secs(120))?;
    Loops::parse(finished.json()?)
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
