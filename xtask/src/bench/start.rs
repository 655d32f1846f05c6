//! How long `agentwatch run -- true` takes, exec to exit: standalone (it
//! loads its own programs, then detaches them) and through a running daemon
//! (it loads nothing: the daemon opens the session), beside `true` alone,
//! in interleaved rounds.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{Ctx, procs::Proc, report::percentiles};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let rounds = if ctx.quick { 3 } else { 10 };
    let (daemon, socket) = ctx.start_daemon()?;
    let socket = socket.to_string_lossy().into_owned();
    let (mut alone, mut standalone, mut through) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        alone.push(milliseconds(&mut ctx.lab.command("true"), "true")?);
        standalone.push(milliseconds(
            ctx.watched(&["--standalone"]).arg("true"),
            "run --standalone -- true",
        )?);
        through.push(milliseconds(
            ctx.watched(&["--socket", &socket]).arg("true"),
            "run through the daemon -- true",
        )?);
    }
    drop(daemon);
    let median = |values: &[f64]| percentiles(values)["p50"].as_f64();
    Ok(json!({
        "method": "wall-clock from spawning the command to reaping it, in the lab's namespace; each round \
                   runs `true` alone, `agentwatch run --standalone -- true` and `agentwatch run --socket \
                   DAEMON -- true` (the bench's daemon, observe mode) one after another",
        "rounds": rounds,
        "true_ms": percentiles(&alone),
        "standalone_ms": percentiles(&standalone),
        "through_daemon_ms": percentiles(&through),
        "standalone_over_through_daemon": median(&standalone)
            .zip(median(&through))
            .map(|(standalone, through)| standalone / through),
    }))
}

/// Runs `cmd` (`what`) to its end; how long it took, in ms.
fn milliseconds(cmd: &mut Command, what: &str) -> Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut proc = Proc::spawn(cmd, what)?;
    match proc.wait_timeout(Duration::from_secs(60))? {
        Some(status) if status.success() => Ok(start.elapsed().as_secs_f64() * 1e3),
        Some(status) => bail!("{what} exited with {status}"),
        None => {
            proc.stop();
            bail!("{what} did not finish within 60 s")
        }
    }
}
