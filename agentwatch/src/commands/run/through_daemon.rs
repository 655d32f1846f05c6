//! `agentwatch run` through a running daemon: one set of kernel programs on
//! the machine, and a start that loads nothing. The command is forked and
//! held before its exec until the daemon has made it the root of a session;
//! from then on the daemon judges it as it does the agents it finds, and
//! `run` reports the session's events as a standalone run does.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
    process::ExitStatus,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use nix::{fcntl::OFlag, sys::signal::Signal, unistd::pipe2};
use tokio::{
    net::UnixStream,
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};

use super::{RunOptions, account_command, exit_code, forward, not_started, write_event};
use crate::{
    control::{
        client::Subscription,
        protocol::{Request, Response},
    },
    event::{Body, Event},
    feed::tables::Tables,
    policy::Policy,
    privileges::Account,
    sinks::{
        journal,
        json_lines::{FLUSH_INTERVAL, JsonLines},
    },
};

/// How long, after the command exited, `run` waits for the daemon to pass
/// on its exit (and what came just before it).
const LAST_EVENTS: Duration = Duration::from_secs(1);

/// How long the daemon may take to open the session (its loop walks the
/// start of the workspace and reads what the command inherits) before `run`
/// gives up, the command unstarted.
const OPEN_WAIT: Duration = Duration::from_secs(30);

/// Whether a daemon answers on `socket`.
pub async fn daemon_listens(socket: &Path) -> bool {
    UnixStream::connect(socket).await.is_ok()
}

/// Runs the command as a session of the daemon on `socket`; returns the
/// exit status agentwatch should exit with.
pub async fn run(options: &RunOptions, account: Option<&Account>) -> Result<i32> {
    let mut sink = options.events.as_deref().map(JsonLines::open).transpose()?;
    let held = match hold(&options.command, account).await {
        Ok(held) => held,
        Err(error) => return Ok(not_started(&options.command[0], &error)),
    };
    let argv = options
        .command
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let request = Request::Run {
        pid: held.pid,
        argv,
        mode: options.mode,
    };
    let mut session = Subscription::open(&options.socket, &request).await?;
    let answer = tokio::time::timeout(OPEN_WAIT, session.next()).await;
    let refused = match answer {
        Ok(answer) => match answer? {
            Some(Response::Opened { .. }) => None,
            Some(Response::Error { message }) => Some(message),
            None => Some("the daemon closed the connection without answering".into()),
            Some(other) => bail!("unexpected answer from the daemon: {other:?}"),
        },
        Err(_) => Some(format!("no answer within {} s", OPEN_WAIT.as_secs())),
    };
    if let Some(message) = refused {
        // Closing the gate unopened makes the held command exit unstarted.
        drop(held.gate);
        let _ = held.spawned.await;
        bail!("the daemon did not watch the command: {message}");
    }
    let root = held.pid;
    let mut child = match held.start().await {
        Ok(child) => child,
        Err(error) => return Ok(not_started(&options.command[0], &error)),
    };
    let mut waited: JoinHandle<io::Result<ExitStatus>> =
        tokio::task::spawn_blocking(move || child.wait());
    // Names for the alert lines: the policy the daemon reads by default.
    let tables = Tables::compile(&Policy::load_config(None).unwrap_or_else(|_| Policy::builtin()));
    let mut report = Report {
        sink: sink.as_mut(),
        tables: &tables,
        live: BTreeSet::from([root]),
        root_exited: false,
    };
    let pid = nix::unistd::Pid::from_raw(root as i32);
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut flush = tokio::time::interval(FLUSH_INTERVAL);
    let mut connected = true;
    let status = loop {
        tokio::select! {
            status = &mut waited => break status.context("waiting for the command")??,
            response = session.next(), if connected => {
                connected = report.take(response.context("reading the daemon's events")?);
            }
            _ = flush.tick() => report.flush(),
            // Ctrl-C reaches the command through the terminal.
            _ = interrupt.recv() => {}
            _ = terminate.recv() => forward(Some(pid), Signal::SIGTERM),
            _ = hangup.recv() => forward(Some(pid), Signal::SIGHUP),
        }
    };
    // The daemon passes on the command's exit, and what came just before it.
    let last = async {
        while connected && !report.root_exited {
            connected = report.take(session.next().await?);
        }
        anyhow::Ok(())
    };
    let _ = tokio::time::timeout(LAST_EVENTS, last).await;
    report.flush();
    report.live.remove(&root);
    if !report.live.is_empty() {
        journal::info(format!(
            "agentwatch: the command exited; the daemon keeps watching what it left running: pids {:?}",
            report.live
        ));
    }
    Ok(exit_code(status))
}

/// What `run` makes of the daemon's responses: lines on stderr, the events
/// file, and which of the session's processes still run.
struct Report<'a> {
    sink: Option<&'a mut JsonLines>,
    tables: &'a Tables,
    live: BTreeSet<u32>,
    root_exited: bool,
}

impl Report<'_> {
    /// Takes one response; false once the daemon has gone.
    fn take(&mut self, response: Option<Response>) -> bool {
        match response {
            Some(Response::Event { event }) => self.event(&event),
            Some(Response::Live) => {}
            // Events this client fell behind on: said, and the stream goes on.
            Some(Response::Error { message }) => eprintln!("agentwatch: {message}"),
            Some(other) => eprintln!("agentwatch: unexpected answer from the daemon: {other:?}"),
            None => {
                eprintln!(
                    "agentwatch: the daemon closed the session's connection (it stopped or \
                     restarted); the command goes on, and this run reports no more of it"
                );
                return false;
            }
        }
        true
    }

    fn event(&mut self, event: &Event) {
        match &event.body {
            Body::Fork { child } => {
                self.live.insert(*child);
            }
            Body::Exit(_) => {
                self.live.remove(&event.pid);
                self.root_exited |= event.pid == event.session;
            }
            _ => {}
        }
        write_event(self.sink.as_deref_mut(), event, self.tables);
    }

    fn flush(&mut self) {
        super::flush_sink(self.sink.as_deref_mut());
    }
}

/// The command, forked and held before its exec.
struct Held {
    pid: u32,
    /// One byte written lets the command exec; closed unwritten, it exits
    /// without having started.
    gate: File,
    /// The spawn, which returns once the command has exec'd (or failed to).
    spawned: JoinHandle<io::Result<std::process::Child>>,
}

impl Held {
    async fn start(mut self) -> io::Result<std::process::Child> {
        self.gate.write_all(&[1])?;
        drop(self.gate);
        self.spawned.await.map_err(io::Error::other)?
    }
}

/// Forks the command, which tells its pid and waits on the gate before it
/// execs.
async fn hold(command: &[OsString], account: Option<&Account>) -> io::Result<Held> {
    let (pid_read, pid_write) = pipe2(OFlag::O_CLOEXEC)?;
    let (gate_read, gate_write) = pipe2(OFlag::O_CLOEXEC)?;
    let mut cmd = account_command(command, account);
    let (pid_fd, gate_fd, gate_writer) = (
        pid_write.as_raw_fd(),
        gate_read.as_raw_fd(),
        gate_write.as_raw_fd(),
    );
    // SAFETY: only async-signal-safe system calls (close, getpid, write,
    // read) run between fork and exec, on descriptors this process holds
    // open until the spawn has returned.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            // The gate's only writer must be agentwatch's, so that closing
            // it reads as end of file here.
            libc::close(gate_writer);
            let pid = libc::getpid().to_ne_bytes();
            if libc::write(pid_fd, pid.as_ptr().cast(), pid.len()) != pid.len() as isize {
                return Err(io::Error::last_os_error());
            }
            let mut open = 0u8;
            loop {
                match libc::read(gate_fd, (&raw mut open).cast(), 1) {
                    1 => return Ok(()),
                    0 => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => return Err(io::Error::last_os_error()),
                }
            }
        });
    }
    let spawned = tokio::task::spawn_blocking(move || {
        let child = cmd.spawn();
        // Now the child has them, or there is none: a pid never written
        // reads as end of file.
        drop((pid_write, gate_read));
        child
    });
    let mut pid = [0u8; 4];
    // The child writes it at once after the fork: not worth a task.
    match File::from(pid_read).read_exact(&mut pid) {
        Ok(()) => Ok(Held {
            pid: i32::from_ne_bytes(pid) as u32,
            gate: File::from(gate_write),
            spawned,
        }),
        // No pid: the fork or the switch to the invoking user failed, and
        // the spawn says why.
        Err(_) => {
            drop(gate_write);
            let error = match spawned.await.map_err(io::Error::other)? {
                Ok(mut child) => {
                    let _ = child.kill();
                    io::Error::other("the command did not say its pid")
                }
                Err(error) => error,
            };
            Err(error)
        }
    }
}
