//! The one owner of what user space does to a session's processes after the
//! kernel has decided: kill (and sweep what is left), stop for a human, and
//! resume. The kernel has already refused the connection; this is matched
//! on the alert's typed action.

pub mod stopped;

use std::{net::IpAddr, time::Duration};

use agentwatch_common::names::Action;
use anyhow::Result;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::engine::Engine;
use stopped::StoppedSessions;

/// Rounds of SIGKILL a sweep makes before leaving the rest for the next one.
const SWEEP_ROUNDS: usize = 200;
const SWEEP_PAUSE: Duration = Duration::from_millis(5);

/// What an approval lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The session's next connect to this address.
    Connect(IpAddr),
    /// The stopped call itself: a TLS request resumes unchanged; a command
    /// (`process` with `classes`) runs and may use them with its provider.
    Operation { process: u32, classes: u64 },
}

pub struct Responder {
    /// Sessions whose processes are being killed.
    killing: Vec<u32>,
    /// Sessions stopped for a human (the daemon's ask mode), remembered on
    /// disk; `run` cannot ask and has none.
    stopped: Option<StoppedSessions>,
}

impl Responder {
    pub fn new(stopped: Option<StoppedSessions>) -> Self {
        Self {
            killing: Vec::new(),
            stopped,
        }
    }

    /// Readies a session about to run under `action`. Under kill, each
    /// process of the session must die at its next system call once the
    /// kernel has denied a connect, not when user space gets round to it:
    /// the switch costs every syscall a tracepoint hit, so it is armed only
    /// while kill sessions exist.
    pub fn prepare(engine: &mut Engine, action: Action) -> Result<()> {
        if action == Action::Kill {
            engine.arm_kill_switch()?;
        }
        Ok(())
    }

    /// Carries out what the kernel decided about a session's connect.
    pub fn on_alert(&mut self, engine: &mut Engine, session: u32, action: Action) {
        match action {
            Action::Kill => self.killing.push(session),
            // Every process of the session stops now, not at its next
            // traced syscall.
            Action::Ask => self.stop(engine, session),
            Action::Observe | Action::Alert | Action::Block => {}
        }
    }

    fn stop(&mut self, engine: &mut Engine, session: u32) {
        signal_session(engine, session, Signal::SIGSTOP);
        if let Some(stopped) = &mut self.stopped {
            stopped.insert(session, engine.session_pids(session));
        }
    }

    /// A stopped session is let go: its retry of the connection goes
    /// through once, or the stopped call continues as it was.
    pub fn resume(&mut self, engine: &mut Engine, session: u32, retry: Retry) -> Result<()> {
        self.release(session);
        let resumed = match retry {
            Retry::Connect(addr) => engine.allow_retry(session, addr),
            Retry::Operation { process, classes } => {
                engine.allow_operation(session, process, classes)
            }
        };
        signal_session(engine, session, Signal::SIGCONT);
        resumed
    }

    /// A stopped session is killed (denied, or nobody answered).
    pub fn kill(&mut self, engine: &mut Engine, session: u32) {
        self.release(session);
        let _ = engine.mark_killed(session);
        self.killing.push(session);
    }

    fn release(&mut self, session: u32) {
        if let Some(stopped) = &mut self.stopped {
            stopped.remove(session);
        }
    }

    /// Kills what is left of the sessions being killed; one that outlasts
    /// the sweep is swept again next time.
    pub async fn sweep(&mut self, engine: &mut Engine) {
        let mut still = Vec::new();
        for session in std::mem::take(&mut self.killing) {
            if !sweep_session(engine, session).await {
                still.push(session);
            }
        }
        self.killing = still;
    }

    /// Disarms the kill switch once no session needs it.
    pub fn disarm_unless(&self, engine: &mut Engine, kill_sessions: bool) {
        if !kill_sessions && self.killing.is_empty() {
            let _ = engine.disarm_kill_switch();
        }
    }
}

fn signal_session(engine: &Engine, session: u32, sig: Signal) {
    for pid in engine.session_pids(session) {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

/// Kills every process of `session` until none is left (bounded); the
/// kernel already refuses the session everything.
async fn sweep_session(engine: &mut Engine, session: u32) -> bool {
    engine.arm_kill_switch().ok();
    for _ in 0..SWEEP_ROUNDS {
        let pids = engine.session_pids(session);
        if pids.is_empty() {
            return true;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        tokio::time::sleep(SWEEP_PAUSE).await;
    }
    engine.session_pids(session).is_empty()
}
