//! Small socket writes: what the first-write sensor (sk_msg on a sockhash)
//! costs each write, in interleaved rounds as ratios to no agentwatch. Only
//! a watched session's sockets enter the sockhash, and one whose first
//! write names a harmless host leaves it again, so only a session's socket
//! to an infrastructure host should pay per write.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Ctx,
    lab::RAILWAY_HOST,
    rounds::{
        self, Config as _, Figure, beside_a_session, interleaved, micros, result_of, summarize,
    },
};

#[derive(Clone, Copy)]
enum Config {
    Baseline,
    Untracked,
    Harmless,
    Infrastructure,
}

impl rounds::Config for Config {
    fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Untracked => "untracked",
            Config::Harmless => "harmless",
            Config::Infrastructure => "infrastructure",
        }
    }
}

impl Config {
    const ALL: [Config; 4] = [
        Config::Baseline,
        Config::Untracked,
        Config::Harmless,
        Config::Infrastructure,
    ];

    fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no agentwatch",
            Config::Untracked => {
                "process outside any session while a session runs (`agentwatch run -- sleep`)"
            }
            Config::Harmless => {
                "inside a watched session, the first write names a harmless host \
                 (user space takes the socket out of the sockhash)"
            }
            Config::Infrastructure => {
                "inside a watched session, the first write names an infrastructure host and \
                 no credential was read (the socket stays in the sockhash, every write is judged)"
            }
        }
    }

    /// The host the first write names. Outside a session it changes
    /// nothing, so those send the infrastructure socket's bytes.
    fn host(self) -> &'static str {
        match self {
            Config::Harmless => HARMLESS_HOST,
            _ => RAILWAY_HOST,
        }
    }
}

const HARMLESS_HOST: &str = "example.org";

/// CPU time of the writing thread is what sk_msg costs; wall time also
/// holds waiting for the other core.
const FIGURES: [Figure; 2] = [
    ("cpu", "/writes/cpu_ns_per_op"),
    ("wall", "/writes/ns_per_op"),
];

pub fn run(ctx: &Ctx) -> Result<Value> {
    let millis = if ctx.quick { 200 } else { 400 };
    let sink = ctx.lab.sink("127.0.0.1:0")?;
    let to = sink.addr().to_string();
    let configs = Config::ALL;
    let rounds = interleaved(
        ctx,
        "writes",
        &configs,
        |config| {
            let millis = millis.to_string();
            let args = [
                "writes",
                "--to",
                &to,
                "--host",
                config.host(),
                "--millis",
                &millis,
            ];
            measure(ctx, config, &args)
        },
        |writes| micros(writes, &FIGURES),
    )?;
    let summary = summarize(&rounds, &configs, Config::Baseline, &FIGURES);
    Ok(json!({
        "method": "each figure: one `xtask bench-load writes` process in the bench's network namespace: \
                   connect to a loopback listener that discards, TCP_NODELAY, a first write \
                   `GET / HTTP/1.1` naming the host, 100 ms for agentwatch to act on it, 500 warm-up \
                   writes, then 64-byte writes for a fixed time in 5 slices; cpu = the thread's CPU time \
                   (CLOCK_THREAD_CPUTIME_ID) / writes, wall = elapsed / writes, each the median slice's; \
                   ratio = figure / the no-agentwatch figure of the same round; median over rounds",
        "millis_per_load": millis,
        "configs": configs.iter().map(|c| json!({ "key": c.key(), "what": c.describe(), "host": c.host() })).collect::<Vec<_>>(),
        "summary": summary,
        "rounds": rounds,
    }))
}

fn measure(ctx: &Ctx, config: Config, args: &[&str]) -> Result<Value> {
    let writes = match config {
        Config::Baseline => result_of(ctx, ctx.load(args), "writes")?,
        Config::Untracked => beside_a_session(ctx, || result_of(ctx, ctx.load(args), "writes"))?,
        Config::Harmless | Config::Infrastructure => watched(ctx, config, args)?,
    };
    let failures = writes["writes"]["failures"].as_u64();
    if failures != Some(0) {
        bail!("writes failed ({failures:?} of them): {writes}");
    }
    Ok(writes)
}

/// The load inside a watched session, checked to have been judged at its
/// first write as the configuration's key says (else it measured
/// something else).
fn watched(ctx: &Ctx, config: Config, args: &[&str]) -> Result<Value> {
    let expected = config.key();
    let events = ctx.dir.join(format!("{}.jsonl", ctx.name("writes-events")));
    let events_arg = events.to_string_lossy().into_owned();
    let mut writes = result_of(
        ctx,
        ctx.watched_load(&["--events", &events_arg], args),
        "watched-writes",
    )?;
    let text = std::fs::read_to_string(&events).context("the session's events")?;
    let _ = std::fs::remove_file(&events);
    let judgment = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["kind"] == "name" && event["host"] == config.host())
        .map(|event| event["judgment"].clone())
        .with_context(|| {
            format!(
                "no `name` event for {}: is the first-write sensor attached?",
                config.host()
            )
        })?;
    if judgment != expected {
        bail!("the first write was judged {judgment}, not {expected}");
    }
    writes["judgment"] = judgment;
    Ok(writes)
}
