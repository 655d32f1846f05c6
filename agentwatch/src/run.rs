//! `agentwatch run -- CMD`: start CMD as a new watched session and report
//! what it and all its descendants do.

use std::{
    ffi::OsString, io, os::unix::process::ExitStatusExt as _, path::PathBuf, process::ExitStatus,
};

use anyhow::{Context as _, Result};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, setgid, setgroups, setuid},
};
use tokio::{
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
};
use tracing::warn;

use crate::{
    event::decode::{Clock, decode},
    kernel::{
        maps::KernelMaps,
        probes::{LoadOptions, Probes},
        ringbuf::RecordStream,
    },
    privileges::{Account, require_privileges},
    sink::JsonLines,
};

/// Session id of the one session `run` watches.
const SESSION: u32 = 1;

pub struct RunOptions {
    pub events: Option<PathBuf>,
    pub ring_buffer_size: u32,
    pub command: Vec<OsString>,
}

/// Runs the command and returns the exit status agentwatch should exit with.
pub async fn run(options: RunOptions) -> Result<i32> {
    require_privileges("agentwatch run")?;
    let mut probes = Probes::load(&LoadOptions {
        ring_buffer_bytes: options.ring_buffer_size,
        ..LoadOptions::default()
    })?;
    for failure in &probes.attach_failures {
        eprintln!(
            "agentwatch: running without {}: {}",
            failure.program, failure.error
        );
    }
    let mut maps = KernelMaps::take(&mut probes.ebpf)?;
    let mut records = RecordStream::take(&mut probes.ebpf)?;
    let mut sink = JsonLines::open(options.events.as_deref())?;
    let clock = Clock::now();
    let mut decode_errors = 0u64;
    let mut handle = |record: &[u8]| match decode(&clock, record) {
        Ok(event) => {
            if let Err(error) = sink.write(&event) {
                warn!("cannot write event: {error:#}");
            }
        }
        Err(error) => {
            decode_errors += 1;
            warn!("undecodable record: {error}");
        }
    };

    // Every process this one forks while registered joins the session from
    // its first instruction, so nothing the command does runs unwatched.
    let me = std::process::id();
    maps.add_spawner(me, SESSION)?;
    let spawned = spawn(&options.command);
    maps.remove_spawner(me)?;
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let program = options.command[0].to_string_lossy();
            eprintln!("agentwatch: {program}: {error}");
            return Ok(match error.kind() {
                io::ErrorKind::NotFound => 127,
                _ => 126,
            });
        }
    };
    let child_pid = child.id().map(|pid| Pid::from_raw(pid as i32));

    // Ctrl-C reaches the command through the terminal; agentwatch stays to
    // report what happens. SIGTERM and SIGHUP are passed on.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            received = records.recv(&mut handle) => received?,
            _ = interrupt.recv() => {}
            _ = terminate.recv() => forward(child_pid, Signal::SIGTERM),
            _ = hangup.recv() => forward(child_pid, Signal::SIGHUP),
        }
    };
    // The kernel wrote the command's last records before the wait returned.
    records.drain(&mut handle);
    sink.flush()?;
    report_losses(&maps, decode_errors)?;
    let remaining = maps.session_pids(SESSION);
    if !remaining.is_empty() {
        eprintln!(
            "agentwatch: the command exited but {} of its processes still run and are no longer watched: {remaining:?}",
            remaining.len()
        );
    }
    Ok(exit_code(status))
}

fn forward(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid {
        let _ = kill(pid, sig);
    }
}

/// Shell convention: the exit status, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn report_losses(maps: &KernelMaps, decode_errors: u64) -> Result<()> {
    let counters = maps.counters()?;
    let lost = counters.lost_total();
    if lost > 0 {
        eprintln!(
            "agentwatch: {lost} events were lost because the ring buffer was full (by kind: {:?})",
            &counters.lost[1..]
        );
    }
    if counters.procs_full > 0 {
        eprintln!(
            "agentwatch: {} processes could not be tracked: the process map was full",
            counters.procs_full
        );
    }
    if counters.pending_full > 0 || counters.read_failed > 0 || decode_errors > 0 {
        eprintln!(
            "agentwatch: incomplete events: {} syscalls not followed to their exit, {} kernel reads failed, {} records undecodable",
            counters.pending_full, counters.read_failed, decode_errors
        );
    }
    Ok(())
}

/// Starts the command, as the sudo user when agentwatch was started by sudo.
fn spawn(command: &[OsString]) -> io::Result<Child> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    let account = Account::invoking_user().map_err(io::Error::other)?;
    if let Some(account) = account {
        cmd.env("HOME", &account.home)
            .env("USER", &account.name)
            .env("LOGNAME", &account.name);
        // SAFETY: only async-signal-safe system calls run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                setgroups(&account.groups)?;
                setgid(account.gid)?;
                setuid(account.uid)?;
                Ok(())
            });
        }
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_follows_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
