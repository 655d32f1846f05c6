//! Detection latency under `--mode block`: a process that has read the
//! Railway token connects to backboard.railway.app every 10 ms; each connect
//! is denied in the kernel and alerted on agentwatch's stderr. Latency =
//! the time agentwatch's `BLOCKED` line is read from its stderr pipe minus
//! the time the denied connect was called (and, second, returned) in the
//! load, both CLOCK_MONOTONIC, matched in order. A third figure takes the
//! alert event's own `ts` (kernel time, converted to wall-clock by
//! agentwatch) to the same line.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx,
    lab::{RAILWAY_HOST, railway_home},
    load::{monotonic_ns, realtime_ns},
    procs::Proc,
    report::{parse_rfc3339_ns, percentiles},
};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let count = if ctx.quick { 100 } else { 500 };
    let interval_ms = 10;
    let home = railway_home(&ctx.dir)?;
    let credential = home
        .join(".railway/config.json")
        .to_string_lossy()
        .into_owned();
    let name = ctx.name("latency");
    let events = ctx.dir.join(format!("{name}.jsonl"));
    let events_arg = events.to_string_lossy().into_owned();
    let mut cmd = ctx.watched_load(
        &["--mode", "block", "--events", &events_arg],
        &[
            "latency",
            "--credential",
            &credential,
            "--target",
            &format!("{RAILWAY_HOST}:443"),
            "--count",
            &count.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
        ],
    );
    cmd.current_dir(&home)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(
            ctx.dir.join(format!("{name}.stdout")),
        )?)
        .stderr(Stdio::piped());
    let mut proc = Proc::spawn(&mut cmd, &name)?;
    let stderr = proc.stderr().context("agentwatch's stderr")?;
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let (mono, real) = (monotonic_ns(), realtime_ns());
                    if line.starts_with("agentwatch: BLOCKED") {
                        lines.push((mono, real));
                    }
                }
            }
        }
        lines
    });
    let status = proc.wait_timeout(Duration::from_secs(60 + count * interval_ms / 1000 * 4))?;
    if status.is_none() {
        proc.stop();
    }
    let lines = reader.join().unwrap_or_default();
    let stdout = std::fs::read_to_string(ctx.dir.join(format!("{name}.stdout")))?;
    let load = super::procs::last_json(&stdout)
        .with_context(|| format!("no result from the load: {stdout}"))?;
    // [called, returned] of each denied connect.
    let denied: Vec<(u64, u64)> = load["samples"]
        .as_array()
        .context("no samples")?
        .iter()
        .filter(|sample| sample[3].as_i64() == Some(-(libc::EPERM as i64)))
        .filter_map(|sample| Some((sample[0].as_u64()?, sample[1].as_u64()?)))
        .collect();
    let since = |pick: fn(&(u64, u64)) -> u64| -> Vec<f64> {
        denied
            .iter()
            .zip(&lines)
            .map(|(connect, (read, _))| (*read as f64 - pick(connect) as f64) / 1e3)
            .collect()
    };
    let from_call = since(|c| c.0);
    let from_return = since(|c| c.1);
    let syscall: Vec<f64> = denied.iter().map(|(a, b)| (b - a) as f64 / 1e3).collect();
    let alert_ts: Vec<u64> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("\"kind\":\"alert\""))
        .filter_map(|line| {
            let event: Value = serde_json::from_str(line).ok()?;
            parse_rfc3339_ns(event["ts"].as_str()?)
        })
        .collect();
    let kernel: Vec<f64> = alert_ts
        .iter()
        .zip(&lines)
        .map(|(ts, (_, real))| (*real as f64 - *ts as f64) / 1e3)
        .collect();
    Ok(json!({
        "method": "the load reads the token, then every 10 ms: socket(), t0 = CLOCK_MONOTONIC, connect() (denied \
                   in the kernel: EPERM), t1, close(). The bench reads agentwatch's stderr through a pipe and \
                   takes CLOCK_MONOTONIC as each `agentwatch: BLOCKED` line arrives; lines and denied connects \
                   are matched in order. call_to_line = line - t0 (includes the connect syscall itself); \
                   return_to_line = line - t1 (can be negative: the load may be preempted between the \
                   syscall's return and t1 by the very wake-up that runs agentwatch). kernel_to_line: the \
                   alert event's ts (kernel time as agentwatch converts it to wall-clock) → the line's \
                   CLOCK_REALTIME; as good as that conversion",
        "connects": load["samples"].as_array().map_or(0, Vec::len),
        "denied": denied.len(),
        "alert_lines": lines.len(),
        "alert_events": alert_ts.len(),
        "call_to_line_us": percentiles(&from_call),
        "return_to_line_us": percentiles(&from_return),
        "denied_connect_syscall_us": percentiles(&syscall),
        "kernel_to_line_us": percentiles(&kernel),
        "call_to_line_us_all": from_call,
    }))
}
