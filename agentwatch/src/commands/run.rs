//! `agentwatch run -- CMD`: start CMD as a new watched session, report what
//! it and all its descendants do, and enforce the policy on it.

use std::{
    ffi::OsString,
    io,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::ExitStatus,
    time::Duration,
};

use agentwatch_common::maps::{DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES};
use anyhow::{Context as _, Result, bail};
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
    engine::{Engine, EngineOptions},
    enrich::state::Process,
    event::{Body, Event},
    feed::{tables::Tables, workspace::START_BUDGET},
    kernel::{probes::kernel_process_capacity, teardown},
    policy::{Action, Policy},
    privileges::{Account, require_privileges},
    respond::Responder,
    sinks::{
        alert_line::alert_line,
        journal,
        json_lines::{FLUSH_INTERVAL, JsonLines},
    },
};

/// Session id of the one session `run` watches.
const SESSION: u32 = 1;

/// `agentwatch run`'s options, as the command line gives them.
#[derive(clap::Args)]
pub struct RunOptions {
    /// Append every event as a JSON line to FILE (`-`: stderr). Without
    /// it stderr carries only alerts and the exit report, so a full-screen
    /// command's display is left alone.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Bytes of the kernel-to-user ring buffer (a power of two, at least a page).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RING_BUFFER_BYTES, value_parser = crate::parse_ring_buffer_size)]
    pub ring_buffer_size: u32,
    /// Policy file extending the built-in catalog.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// What to do when the session calls an infrastructure host after
    /// reading a credential: observe, alert, block or kill (default: the policy's).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<Action>,
    /// Milliseconds the command's start waits for the walk of its working
    /// directory for credential files; the rest is walked meanwhile.
    #[arg(long, value_name = "MS", default_value_t = START_BUDGET.as_millis() as u64)]
    pub workspace_wait: u64,
    /// Sockets watched for the name of their first write at once; beyond
    /// that they are judged by address as they send.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SOCKETS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sockets: u32,
    /// The daemon's control socket: when a daemon answers there, the
    /// session is opened through it (nothing is loaded, and its policy and
    /// mode apply; `--mode` may still set this session's).
    #[arg(long, value_name = "PATH", default_value = crate::control::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Load agentwatch's own kernel programs even when a daemon is running
    /// (as `--policy` does).
    #[arg(long)]
    pub standalone: bool,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

mod through_daemon;

/// How often `run` looks whether the processes its command left have exited.
const DESCENDANTS_CHECK: Duration = Duration::from_millis(200);

/// Runs the command and returns the exit status agentwatch should exit with.
pub async fn run(options: RunOptions) -> Result<i32> {
    if !options.standalone
        && options.policy.is_none()
        && through_daemon::daemon_listens(&options.socket).await
    {
        let account = Account::invoking_user().context("finding the sudo user")?;
        return through_daemon::run(&options, account.as_ref()).await;
    }
    standalone(options).await
}

/// `run` with agentwatch's own kernel programs, loaded for this session.
async fn standalone(options: RunOptions) -> Result<i32> {
    require_privileges("agentwatch run")?;
    let policy = match &options.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let action = options.mode.unwrap_or(policy.action);
    if action == Action::Ask {
        bail!(
            "--mode ask needs a running daemon (`agentwatch daemon`) to ask through: there is no one to ask here"
        );
    }
    let account = Account::invoking_user().context("finding the sudo user")?;
    let home = match &account {
        Some(account) => account.home.clone(),
        None => std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from),
    };
    let mut sink = options.events.as_deref().map(JsonLines::open).transpose()?;
    let mut engine = Engine::start(EngineOptions {
        ring_buffer_bytes: options.ring_buffer_size,
        max_processes: kernel_process_capacity(),
        max_sockets: options.max_sockets,
        policy,
        homes: vec![home],
    })
    .await?;
    engine.add_workspace(
        &std::env::current_dir().context("the working directory")?,
        Duration::from_millis(options.workspace_wait),
    )?;
    engine.add_session(SESSION, action)?;
    Responder::prepare(&mut engine, action)?;
    let mut responder = Responder::new(None);
    // What the command inherits open (`3<FILE`) it holds from its first
    // instruction: known before it starts, content scans included.
    let mut events = Vec::new();
    engine.inherit_open_files(
        SESSION,
        std::process::id(),
        &options.command[0].to_string_lossy(),
        &mut events,
    )?;
    engine.finish_scans(&mut events).await?;

    // Every process this one forks while registered joins the session from
    // its first instruction, so nothing the command does runs unwatched.
    let me = std::process::id();
    engine.add_spawner(me, SESSION)?;
    let spawned = spawn(&options.command, account.as_ref());
    engine.remove_spawner(me)?;
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => return Ok(not_started(&options.command[0], &error)),
    };
    let child_pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    if let Some(pid) = child.id() {
        engine.add_process(
            pid,
            Process {
                ppid: me,
                session: SESSION,
                comm: options.command[0].to_string_lossy().into_owned(),
                argv: options
                    .command
                    .iter()
                    .map(|arg| arg.to_string_lossy().into_owned())
                    .collect(),
            },
        );
    }

    // Ctrl-C reaches the command through the terminal; agentwatch stays to
    // report what happens. SIGTERM and SIGHUP are passed on.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    // Alerts are written at once; the other events within a second, so the
    // file tells what happened while the command still runs.
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            stepped = engine.step(&mut events) => stepped?,
            _ = flush.tick() => flush_sink(sink.as_mut()),
            _ = interrupt.recv() => {}
            _ = terminate.recv() => forward(child_pid, Signal::SIGTERM),
            _ = hangup.recv() => forward(child_pid, Signal::SIGHUP),
        }
        publish(sink.as_mut(), &mut events, &mut engine, &mut responder);
        responder.sweep(&mut engine).await;
    };
    // What the command left running (`setsid -f`, a daemon it started) is
    // still the session's: watched until the last of it exits, or until
    // agentwatch is told to stop.
    engine.drain(&mut events)?;
    let left = engine.session_pids(SESSION);
    if !left.is_empty() {
        journal::info(format!(
            "agentwatch: the command exited; still watching what it left running until that \
             exits (Ctrl-C stops watching): pids {left:?}"
        ));
        let mut check = tokio::time::interval(DESCENDANTS_CHECK);
        loop {
            tokio::select! {
                stepped = engine.step(&mut events) => stepped?,
                _ = check.tick() => {
                    if engine.session_pids(SESSION).is_empty() {
                        break;
                    }
                }
                _ = flush.tick() => flush_sink(sink.as_mut()),
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = hangup.recv() => break,
            }
            publish(sink.as_mut(), &mut events, &mut engine, &mut responder);
            responder.sweep(&mut engine).await;
        }
    }
    // The kernel wrote the command's last records before the wait returned;
    // what the scans of its last reads find still counts.
    engine.drain(&mut events)?;
    engine.finish_scans(&mut events).await?;
    publish(sink.as_mut(), &mut events, &mut engine, &mut responder);
    responder.sweep(&mut engine).await;
    if let Some(sink) = &mut sink {
        sink.flush()?;
    }
    for line in engine.losses()?.describe() {
        eprintln!("agentwatch: {line}");
    }
    let remaining = engine.session_pids(SESSION);
    if !remaining.is_empty() {
        eprintln!(
            "agentwatch: stopped watching; {} processes of the session still run unwatched: {remaining:?}",
            remaining.len()
        );
    }
    // Detaching waits on the kernel's grace periods: done by a child once
    // this process has exited, not by the caller's clock.
    if let Err(error) = teardown::detach_after_exit() {
        warn!("detaching as this process exits instead: {error:#}");
    }
    Ok(exit_code(status))
}

fn flush_sink(sink: Option<&mut JsonLines>) {
    if let Some(sink) = sink
        && let Err(error) = sink.flush()
    {
        warn!("cannot write events: {error:#}");
    }
}

/// Writes the events out, alerts also as a line on stderr, and has the
/// responder carry out what the kernel decided in them.
fn publish(
    mut sink: Option<&mut JsonLines>,
    events: &mut Vec<Event>,
    engine: &mut Engine,
    responder: &mut Responder,
) {
    for event in events.drain(..) {
        if let Body::Alert(alert) = &event.body {
            responder.on_alert(engine, event.session, alert.action);
        }
        write_event(sink.as_deref_mut(), &event, engine.tables());
    }
}

/// Writes `event` to the events file, and an alert that acted (observe
/// only records) as a line on stderr.
fn write_event(sink: Option<&mut JsonLines>, event: &Event, tables: &Tables) {
    if let Body::Alert(alert) = &event.body
        && alert.action != Action::Observe
        && let Some(line) = alert_line(event, tables)
    {
        journal::warning(line);
    }
    if let Some(sink) = sink
        && let Err(error) = sink.write(event)
    {
        warn!("cannot write event: {error:#}");
    }
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

/// Starts the command, as the sudo user when agentwatch was started by sudo.
fn spawn(command: &[OsString], account: Option<&Account>) -> io::Result<Child> {
    Command::from(account_command(command, account)).spawn()
}

/// The command, to run as the sudo user when agentwatch was started by sudo.
fn account_command(command: &[OsString], account: Option<&Account>) -> std::process::Command {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(account) = account.cloned() {
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
    cmd
}

/// Says why the command could not start; the status to exit with, as a
/// shell's (127: not found, 126: found but not run).
fn not_started(program: &std::ffi::OsStr, error: &io::Error) -> i32 {
    eprintln!("agentwatch: {}: {error}", program.to_string_lossy());
    match error.kind() {
        io::ErrorKind::NotFound => 127,
        _ => 126,
    }
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
