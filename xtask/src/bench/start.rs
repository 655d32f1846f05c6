//! How long `agentwatch run -- true` takes, exec to exit: standalone (it
//! loads its own programs; a child of it detaches them after it has exited)
//! and through a running daemon (it loads nothing: the daemon opens the
//! session), beside `true` alone, in interleaved rounds. A standalone run
//! is timed once the previous one's detaching has ended, and again started
//! right after another (it then waits for that detaching).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use std::os::fd::AsRawFd as _;

use agentwatch_common::names::DETACHING_LOCK;
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Ctx, procs::Proc, report::percentiles};

pub fn run(ctx: &Ctx) -> Result<Value> {
    let rounds = if ctx.quick { 3 } else { 10 };
    let (daemon, socket) = ctx.start_daemon()?;
    let socket = socket.to_string_lossy().into_owned();
    let (mut alone, mut standalone, mut through) = (Vec::new(), Vec::new(), Vec::new());
    let mut back_to_back = Vec::new();
    for _ in 0..rounds {
        alone.push(milliseconds(&mut ctx.lab.command("true"), "true")?);
        wait_for_detaching()?;
        standalone.push(milliseconds(
            ctx.watched(&["--standalone"]).arg("true"),
            "run --standalone -- true",
        )?);
        back_to_back.push(milliseconds(
            ctx.watched(&["--standalone"]).arg("true"),
            "run --standalone -- true, right after another",
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
                   runs `true` alone, `agentwatch run --standalone -- true` (once the previous run's \
                   detaching has ended, untimed wait), the same again at once (it waits for the first's \
                   detaching) and `agentwatch run --socket DAEMON -- true` (the bench's daemon, observe \
                   mode) one after another",
        "rounds": rounds,
        "true_ms": percentiles(&alone),
        "standalone_ms": percentiles(&standalone),
        "standalone_back_to_back_ms": percentiles(&back_to_back),
        "through_daemon_ms": percentiles(&through),
        "standalone_over_through_daemon": median(&standalone)
            .zip(median(&through))
            .map(|(standalone, through)| standalone / through),
    }))
}

/// Waits, untimed, until no earlier run's programs are being detached.
fn wait_for_detaching() -> Result<()> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(DETACHING_LOCK)
        .with_context(|| format!("opening {DETACHING_LOCK}"))?;
    // SAFETY: flock(2) on a descriptor this function owns; closing it unlocks.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!(
            "locking {DETACHING_LOCK}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
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
