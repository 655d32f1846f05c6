//! Throughput: N parallel watched sessions (`agentwatch run --events FILE`)
//! each running an open+close loop at a set rate; how many open events
//! reach FILE, and how many agentwatch reports lost to a full ring buffer.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx,
    procs::{Proc, check_interrupted},
};

/// Sessions in parallel: the rate steps, then the last step again with twice
/// as many (more producers than cores, to push the consumers).
const SESSIONS: u64 = 2;
/// Offered aggregate rate of 0: as fast as the sessions go.
const UNTHROTTLED: u64 = 0;

pub fn run(ctx: &Ctx) -> Result<Value> {
    let millis = if ctx.quick { 1000 } else { 3000 };
    let rates: &[u64] = if ctx.quick {
        &[50_000, 100_000, UNTHROTTLED]
    } else {
        &[
            25_000,
            50_000,
            100_000,
            150_000,
            200_000,
            300_000,
            450_000,
            UNTHROTTLED,
        ]
    };
    let plan = rates
        .iter()
        .map(|&rate| (SESSIONS, rate))
        .chain([(2 * SESSIONS, UNTHROTTLED)]);
    let mut steps = Vec::new();
    for (sessions, rate) in plan {
        check_interrupted()?;
        let step = step(ctx, sessions, rate, millis).unwrap_or_else(
            |error| json!({ "sessions": sessions, "offered": rate, "error": format!("{error:#}") }),
        );
        eprintln!(
            "bench: throughput {sessions} sessions offered {}: achieved {:.0}/s, {} events seen of {} opens, {} lost",
            if rate == UNTHROTTLED {
                "max".to_string()
            } else {
                format!("{rate}/s")
            },
            step["achieved_rate"].as_f64().unwrap_or(0.0),
            step["events_seen"],
            step["opens"],
            step["lost"],
        );
        steps.push(step);
    }
    let ok = |step: &&Value| step.get("error").is_none();
    let zero_loss = |step: &&Value| step["zero_loss"].as_bool() == Some(true);
    let rates_of = |zero: bool| -> Vec<f64> {
        steps
            .iter()
            .filter(ok)
            .filter(|step| zero_loss(step) == zero)
            .filter_map(|step| step["achieved_rate"].as_f64())
            .collect()
    };
    let max_zero_loss = rates_of(true).into_iter().reduce(f64::max);
    let first_loss = rates_of(false).into_iter().reduce(f64::min);
    let max_rate = rates_of(true)
        .into_iter()
        .chain(rates_of(false))
        .reduce(f64::max);
    // Each session has its own ring buffer and consumer: what one session
    // can produce without loss is the figure that carries over.
    let sessions_of = |lossless: bool| -> Vec<f64> {
        steps
            .iter()
            .filter(ok)
            .flat_map(|step| step["per_session"].as_array().cloned().unwrap_or_default())
            .filter(|session| (session["lost"].as_u64() == Some(0)) == lossless)
            .filter_map(|session| session["rate"].as_f64())
            .collect()
    };
    let session_max_zero_loss = sessions_of(true).into_iter().reduce(f64::max);
    let session_first_loss = sessions_of(false).into_iter().reduce(f64::min);
    let at_100k = steps
        .iter()
        .find(|step| step["offered"] == 100_000)
        .map(|step| {
            json!({
                "lost": step["lost"],
                "missing": step["missing"],
                "achieved_rate": step["achieved_rate"],
                "zero_loss": step["zero_loss"],
            })
        });
    Ok(json!({
        "method": format!(
            "N parallel `agentwatch run --events FILE -- xtask bench-load open-rate` sessions (FILE in /dev/shm), \
             each offered 1/N of the rate for {millis} ms, opening a path that does not exist (a failed open is \
             reported every time; a repeated successful one is counted, not sent); events seen = open \
             events of that path in FILE; \
             lost = agentwatch's exit report (ring buffer full); offered 0 = as fast as the loads go"
        ),
        "millis": millis,
        "summary": {
            "max_zero_loss_rate": max_zero_loss,
            "loss_starts_at_rate": first_loss,
            "max_rate_reached": max_rate,
            "per_session_max_zero_loss_rate": session_max_zero_loss,
            "per_session_loss_starts_at_rate": session_first_loss,
            "at_100k": at_100k,
        },
        "steps": steps,
    }))
}

fn step(ctx: &Ctx, sessions: u64, rate: u64, millis: u64) -> Result<Value> {
    let per_session = if rate == UNTHROTTLED {
        1_000_000_000
    } else {
        rate / sessions
    };
    // Events go to memory, not disk: tens of MB per step.
    let events_dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        ctx.dir.clone()
    };
    let mut running = Vec::new();
    for _ in 0..sessions {
        let name = ctx.name("throughput");
        let events = events_dir.join(format!("aw-bench-{}-{name}.jsonl", std::process::id()));
        let events_arg = events.to_string_lossy().into_owned();
        let mut cmd = ctx.watched_load(
            &["--events", &events_arg],
            &[
                "open-rate",
                "--rate",
                &per_session.to_string(),
                "--millis",
                &millis.to_string(),
            ],
        );
        running.push((Proc::spawn_logged(&mut cmd, &ctx.dir, &name)?, events));
    }
    let mut per_session_results = Vec::new();
    for (proc, events) in running {
        let finished = proc.finish(Duration::from_millis(millis) + Duration::from_secs(180));
        let seen = count_open_events(&events);
        let _ = std::fs::remove_file(&events);
        let finished = finished?;
        let load = finished.json()?;
        let report: Vec<&str> = finished
            .stderr
            .lines()
            .filter(|line| line.starts_with("agentwatch:"))
            .collect();
        per_session_results.push(json!({
            "opens": load["ops"],
            "rate": load["rate"],
            "failures": load["failures"],
            "events_seen": seen?,
            "lost": lost_events(&finished.stderr),
            "exit": finished.status.to_string(),
            "report": report,
        }));
    }
    let sum = |key: &str| -> u64 {
        per_session_results
            .iter()
            .filter_map(|s| s[key].as_u64())
            .sum()
    };
    let opens = sum("opens");
    let seen = sum("events_seen");
    let lost = sum("lost");
    let achieved: f64 = per_session_results
        .iter()
        .filter_map(|s| s["rate"].as_f64())
        .sum();
    Ok(json!({
        "sessions": sessions,
        "offered": rate,
        "achieved_rate": achieved,
        "opens": opens,
        "events_seen": seen,
        "lost": lost,
        "missing": opens.saturating_sub(seen),
        "zero_loss": lost == 0 && seen >= opens,
        "events_per_s_ingested": seen as f64 * 1000.0 / millis as f64,
        "per_session": per_session_results,
    }))
}

/// "agentwatch: N events were lost because the ring buffer was full ..."
pub fn lost_events(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|line| line.contains("events were lost"))
        .filter_map(|line| {
            line.trim_start_matches("agentwatch:")
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Open events of the load's own file (`aw-bench-load-PID`) in an events file.
fn count_open_events(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut count = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if contains(&line, b"\"kind\":\"open\"") && contains(&line, b"aw-bench-load-") {
            count += 1;
        }
    }
    Ok(count)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
