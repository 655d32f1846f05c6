//! Sessions: opened when an agent is found (at exec by the kernel, from an
//! interpreter's argv, or running at start), adopted after a restart or a
//! lost event, ended when their last process exits; and the interpreters
//! the kernel held at exec, released either way.

use std::{
    collections::BTreeMap,
    path::Path,
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
    discovery::{descendants, read_process},
};
use crate::{
    event::{Body, Event, SessionChange},
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
        Ok(())
    }

    /// Registers a session the kernel (or a scan) opened with id `session`.
    pub(super) fn open_session(
        &mut self,
        session: u32,
        agent: u32,
        found_by: FoundBy,
    ) -> Result<()> {
        if self.sessions.contains_key(&session) {
            return Ok(());
        }
        self.set_watching(true)?;
        // The kernel opened the others itself (and may have tainted them).
        if matches!(found_by, FoundBy::Running | FoundBy::Argv) {
            self.engine.add_session(session, self.action)?;
            self.engine.track_process(session, session)?;
        }
        if let Ok(cwd) = proc::cwd(session)
            && cwd != Path::new("/")
        {
            // The agent already runs: the whole walk goes on in the
            // background rather than hold up the daemon's loop.
            self.engine.add_workspace(&cwd, Duration::ZERO)?;
        }
        Responder::prepare(&mut self.engine, self.action)?;
        let name = self.agents.name(agent);
        info!(
            "session {session}: {name} ({}), pid {session}, found by {found_by}",
            self.agents.id(agent)
        );
        self.sessions.insert(
            session,
            Session {
                agent: name.clone(),
                started: SystemTime::now(),
                action: self.action,
                stopped_for: None,
            },
        );
        self.publish(self.session_event(session, SessionTransition::Start, name, found_by));
        Ok(())
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
