//! Sessions: opened when an agent is found (at exec by the kernel, from an
//! interpreter's argv, or running at start), adopted after a restart or a
//! lost event, ended when their last process exits; and the interpreters
//! the kernel held at exec, released either way.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use agentwatch_common::names::{FoundBy, SessionTransition};
use anyhow::Result;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{info, warn};

use super::{
    Daemon, Session,
    discovery::{ProcessView, comm_of, descendants, read_process},
    shared::RunRequest,
};
use crate::{
    enrich::state::Process,
    event::{Body, Event, SessionChange},
    feed::workspace::START_BUDGET,
    policy::Action,
    respond::Responder,
    sys::proc,
};

impl Daemon {
    /// Agents already running when the daemon starts (or restarts) get
    /// their sessions now, with every descendant.
    pub(super) fn adopt_running_agents(&mut self) -> Result<()> {
        let saved = self.saved.load();
        let parents = proc::parents();
        let me = std::process::id();
        let mut taken = std::collections::HashSet::<u32>::new();
        let mut pids: Vec<u32> = parents.keys().copied().collect();
        pids.sort();
        for pid in pids {
            if pid == me || taken.contains(&pid) {
                continue;
            }
            let Some(agent) = read_process(pid)
                .ok()
                .and_then(|view| self.agents.match_process(&view))
            else {
                continue;
            };
            let members = descendants(pid, &parents);
            taken.extend(&members);
            self.open_session(pid, agent, FoundBy::Running)?;
            for member in members {
                self.engine.track_process(member, pid)?;
            }
            // What it held before the restart, it still holds.
            if let Some(session) = saved.get(&pid) {
                self.engine.restore_credentials(pid, &session.credentials)?;
            }
        }
        // `agentwatch run`'s sessions whose command still runs: no matcher
        // knows them, the saved root does.
        for (pid, session) in &saved {
            let Some(run) = &session.run else { continue };
            if taken.contains(pid) {
                continue;
            }
            let members = descendants(*pid, &parents);
            taken.extend(&members);
            self.start_session(*pid, run.agent.clone(), FoundBy::Run, run.action)?;
            for member in members {
                self.engine.track_process(member, *pid)?;
            }
            self.engine
                .restore_credentials(*pid, &session.credentials)?;
        }
        Ok(())
    }

    /// Registers a session the kernel (or a scan) opened with id `session`.
    pub(super) fn open_session(
        &mut self,
        session: u32,
        agent: u32,
        found_by: FoundBy,
    ) -> Result<()> {
        let name = self.agents.name(agent);
        info!(
            "session {session}: {name} ({}), pid {session}, found by {found_by}",
            self.agents.id(agent)
        );
        self.start_session(session, name, found_by, self.action)
    }

    /// Registers session `session`, named `name`, in the kernel's tables
    /// unless the kernel opened it itself (at exec).
    fn start_session(
        &mut self,
        session: u32,
        name: String,
        found_by: FoundBy,
        action: Action,
    ) -> Result<()> {
        if self.sessions.contains_key(&session) {
            return Ok(());
        }
        self.set_watching(true)?;
        // The kernel opened the others itself (and may have tainted them).
        if matches!(found_by, FoundBy::Running | FoundBy::Argv | FoundBy::Run) {
            self.engine.add_session(session, action)?;
            self.engine.track_process(session, session)?;
        }
        if let Ok(cwd) = proc::cwd(session)
            && cwd != Path::new("/")
        {
            // A command held before its exec waits for the walk's start, as
            // under a standalone `run`. An agent already runs: its whole
            // walk goes on in the background rather than hold up the loop.
            let wait = if found_by == FoundBy::Run {
                START_BUDGET
            } else {
                Duration::ZERO
            };
            self.engine.add_workspace(&cwd, wait)?;
        }
        Responder::prepare(&mut self.engine, action)?;
        self.sessions.insert(
            session,
            Session {
                agent: name.clone(),
                started: SystemTime::now(),
                action,
                found_by,
                stopped_for: None,
            },
        );
        self.publish(self.session_event(session, SessionTransition::Start, name, found_by));
        // What the root holds open from before its exec (`3<FILE`) counts
        // from now: exactly for one held or paused at exec, or not yet
        // started; at once after the fact for an agent already running.
        let comm = self
            .engine
            .process(session)
            .map(|process| process.comm.clone())
            .or_else(|| proc::comm(session).ok())
            .unwrap_or_default();
        let mut events = Vec::new();
        let inherited = self
            .engine
            .inherit_open_files(session, session, &comm, &mut events);
        for event in events {
            self.handle(event);
        }
        inherited
    }

    /// `agentwatch run` through the daemon: its command, held before its
    /// exec by its parent (the asker), becomes the root of a session with
    /// the mode asked for. What it inherits open is read, and the start of
    /// its workspace walked, before the reply lets it start.
    pub(super) async fn open_run(&mut self, request: RunRequest) {
        let RunRequest {
            pid,
            argv,
            mode,
            peer,
            reply,
        } = request;
        let result = self
            .open_run_session(pid, argv, mode.unwrap_or(self.action), peer.pid)
            .await;
        if let Err(message) = &result {
            warn!("run for pid {}: {message}", peer.pid);
        }
        let _ = reply.send(result);
    }

    async fn open_run_session(
        &mut self,
        pid: u32,
        argv: Vec<String>,
        action: Action,
        parent: u32,
    ) -> Result<Action, String> {
        // The socket checked a snapshot; the kernel's map is exact.
        for (who, process) in [("the requesting process", parent), ("the command", pid)] {
            if self.engine.is_tracked(process) {
                return Err(format!(
                    "refused: {who} (pid {process}) is already in a watched session"
                ));
            }
        }
        let program = argv.first().map_or("", |arg0| {
            Path::new(arg0)
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or(arg0)
        });
        let comm = comm_of(program).to_string();
        let view = ProcessView {
            comm: comm.clone(),
            argv: argv.clone(),
            environ: Vec::new(),
            // Held before its exec: the program it is about to run.
            exe: argv.first().map(PathBuf::from),
        };
        let name = match self.agents.match_process(&view) {
            Some(agent) => self.agents.name(agent),
            None => format!("`{program}` under agentwatch run"),
        };
        info!("session {pid}: {name}, pid {pid}, started by agentwatch run (pid {parent})");
        self.engine.add_process(
            pid,
            Process {
                ppid: parent,
                session: pid,
                comm,
                argv,
            },
        );
        let mut events = Vec::new();
        // The content scans of what it inherits finish before it starts.
        let opened = match self.start_session(pid, name, FoundBy::Run, action) {
            Ok(()) => self.engine.finish_scans(&mut events).await,
            Err(error) => Err(error),
        };
        for event in events {
            self.handle(event);
        }
        opened.map_err(|error| format!("opening the session: {error:#}"))?;
        Ok(action)
    }

    fn session_event(
        &self,
        session: u32,
        state: SessionTransition,
        agent: String,
        found_by: FoundBy,
    ) -> Event {
        let comm = proc::comm(session).unwrap_or_default();
        Event {
            ts: SystemTime::now(),
            session,
            pid: session,
            tid: session,
            ppid: proc::parent_of(session).unwrap_or(0),
            uid: 0,
            comm,
            body: Body::Session(SessionChange {
                state,
                agent,
                found_by,
            }),
        }
    }

    /// Decides on an interpreter the kernel held at exec: a session if its
    /// argv names an agent; resumed either way.
    pub(super) fn release_held(&mut self, pid: u32, argv: &[String]) -> Option<u32> {
        let matched = self.agents.match_argv(argv);
        if let Some(agent) = matched
            && let Err(error) = self.open_session(pid, agent, FoundBy::Argv)
        {
            warn!("session for pid {pid}: {error:#}");
        }
        self.engine.release_held(pid);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        matched
    }

    /// Interpreters still held whose exec event was lost: decided from
    /// /proc, so none stays stopped.
    pub(super) fn release_lost_holds(&mut self) {
        for pid in self.engine.held_processes() {
            let argv = read_process(pid).map(|view| view.argv).unwrap_or_default();
            self.release_held(pid, &argv);
        }
    }

    /// Sessions the kernel opened whose exec event was lost (ring buffer
    /// full): registered now, and resumed if discovery paused them.
    pub(super) fn adopt_unknown_sessions(&mut self, members: &BTreeMap<u32, Vec<u32>>) {
        let unknown: Vec<u32> = members
            .keys()
            .filter(|session| !self.sessions.contains_key(session))
            .copied()
            .collect();
        for session in unknown {
            let agent = read_process(session)
                .ok()
                .and_then(|view| self.agents.match_process(&view))
                .unwrap_or(0);
            if let Err(error) = self.open_session(session, agent, FoundBy::LostEvent) {
                warn!("session {session}: {error:#}");
            }
            if matches!(proc::is_stopped(session), Ok(true)) {
                let _ = kill(Pid::from_raw(session as i32), Signal::SIGCONT);
            }
        }
    }

    pub(super) fn end_session(&mut self, session: u32) {
        let Some(ended) = self.sessions.remove(&session) else {
            return;
        };
        self.engine.end_session(session);
        for id in self.requests.close_session(session) {
            self.handler
                .shared
                .lock()
                .expect("shared state")
                .pending
                .remove(&id);
        }
        info!("session {session} ({}) ended", ended.agent);
        self.publish(self.session_event(
            session,
            SessionTransition::End,
            ended.agent,
            FoundBy::Exec,
        ));
    }
}
