//! TLS writes: what the `SSL_write` probes cost, in interleaved rounds as
//! ratios to no agentwatch. A python client (system libssl) writes 64-byte
//! records to a loopback TLS server. Outside any session the probe returns
//! at its first map lookup; in an untainted session at the taint check; in
//! a tainted one every write is stopped and shown to user space, which
//! resumes it (a write that is no request to an infrastructure host).

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    Ctx,
    lab::railway_home,
    rounds::{
        self, Config as _, Figure, beside_a_session, interleaved, micros, result_of, summarize,
    },
};

#[derive(Clone, Copy)]
enum Config {
    Baseline,
    Untracked,
    Watched,
    Tainted,
}

impl rounds::Config for Config {
    fn key(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Untracked => "untracked",
            Config::Watched => "watched",
            Config::Tainted => "tainted",
        }
    }
}

impl Config {
    const ALL: [Config; 4] = [
        Config::Baseline,
        Config::Untracked,
        Config::Watched,
        Config::Tainted,
    ];

    fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no agentwatch",
            Config::Untracked => "process outside any session while a session runs",
            Config::Watched => "inside a watched session that read no credential",
            Config::Tainted => {
                "inside a session that read the Railway credential: every write stopped, \
                 judged in user space and resumed"
            }
        }
    }
}

const FIGURES: [Figure; 2] = [("cpu", "/tls/cpu_ns_per_op"), ("wall", "/tls/ns_per_op")];

const SCRIPT: &str = include_str!("tls_writes.py");

pub fn run(ctx: &Ctx) -> Result<Value> {
    let millis = if ctx.quick { 200 } else { 400 };
    let dir = ctx.dir.join("tls");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("tls_writes.py");
    std::fs::write(&script, SCRIPT)?;
    let (cert, key) = agentwatch_tests::self_signed_certificate(&dir)?;
    let home = railway_home(&dir)?;
    let credential = home.join(".railway/config.json");
    let configs = Config::ALL;
    let rounds = interleaved(
        ctx,
        "tls",
        &configs,
        |config| {
            let mut args: Vec<String> = vec![
                "python3".into(),
                script.display().to_string(),
                "--cert".into(),
                cert.display().to_string(),
                "--key".into(),
                key.display().to_string(),
                "--millis".into(),
                millis.to_string(),
            ];
            if matches!(config, Config::Tainted) {
                args.extend(["--read".into(), credential.display().to_string()]);
            }
            measure(ctx, config, &home, &args)
        },
        |value| micros(value, &FIGURES),
    )?;
    let summary = summarize(&rounds, &configs, Config::Baseline, &FIGURES);
    Ok(json!({
        "method": "each figure: one python3 process (ssl, the system libssl) in the bench's network \
                   namespace: a loopback TLS server thread that discards, 200 warm-up writes, then \
                   64-byte sendall calls for a fixed time in 5 slices; cpu = the writing thread's CPU \
                   time / writes, wall = elapsed / writes, each the median slice's; ratio = figure / \
                   the no-agentwatch figure of the same round; median over rounds",
        "millis_per_load": millis,
        "configs": configs.iter().map(|c| json!({ "key": c.key(), "what": c.describe() })).collect::<Vec<_>>(),
        "summary": summary,
        "rounds": rounds,
    }))
}

fn measure(ctx: &Ctx, config: Config, home: &Path, args: &[String]) -> Result<Value> {
    let plain = || {
        let mut cmd = ctx.lab.command(&args[0]);
        cmd.args(&args[1..]).current_dir(&ctx.dir);
        result_of(ctx, cmd, "tls")
    };
    match config {
        Config::Baseline => plain(),
        Config::Untracked => beside_a_session(ctx, plain),
        Config::Watched | Config::Tainted => {
            // HOME holds the credential the tainted configuration reads.
            let mut cmd = ctx.watched(&["--events", "/dev/null"]);
            cmd.args(args).current_dir(&ctx.dir).env("HOME", home);
            result_of(ctx, cmd, "watched-tls")
        }
    }
}
