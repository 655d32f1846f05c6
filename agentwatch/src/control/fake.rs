//! A daemon stand-in for tests of the socket's server and clients.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use agentwatch_common::names::Action;
use tokio::sync::broadcast;

use super::{
    ControlHandler, Peer,
    authorize::Authority,
    listener::{bind, serve},
    protocol::{PendingRequest, Status},
};
use crate::event::{Body, Event};

/// A daemon stand-in: one pending request (id 1), a replay buffer and a live feed.
pub struct Fake {
    pub watched: AtomicBool,
    pub events: broadcast::Sender<Arc<Event>>,
    pub recent: Vec<Arc<Event>>,
    pub decisions: Mutex<Vec<(u64, bool, Peer)>>,
    /// The pids `open_run` was asked for.
    pub runs: Mutex<Vec<u32>>,
}

impl Fake {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            watched: AtomicBool::new(false),
            events: broadcast::channel(capacity).0,
            recent: (1..=4u32).map(|n| Arc::new(event(n, n % 2 + 1))).collect(),
            decisions: Mutex::new(Vec::new()),
            runs: Mutex::new(Vec::new()),
        })
    }

    fn decide(&self, id: u64, approve: bool, peer: Peer) -> Result<String, String> {
        if id != 1 {
            return Err(format!("no pending request {id}"));
        }
        self.decisions.lock().unwrap().push((id, approve, peer));
        Ok(format!(
            "request {id} {}",
            if approve { "approved" } else { "denied" }
        ))
    }
}

/// Event `n` of `session`: process `n` forked.
pub fn event(n: u32, session: u32) -> Event {
    Event {
        ts: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        session,
        pid: n,
        tid: n,
        ppid: 1,
        uid: 0,
        comm: "sh".into(),
        body: Body::Fork { child: n + 1 },
    }
}

pub fn pending_request() -> PendingRequest {
    PendingRequest {
        id: 1,
        session: 2,
        agent: "Claude Code".into(),
        pid: 4242,
        comm: "curl".into(),
        credential: "railway: /home/u/.railway/config.json".into(),
        host: "backboard.railway.app".into(),
        addr: "1.2.3.4".into(),
        port: 443,
        since: "2026-01-01T00:00:00Z".into(),
        expires_in_secs: 55,
        operation: None,
    }
}

impl ControlHandler for Fake {
    fn pending(&self) -> Vec<PendingRequest> {
        vec![pending_request()]
    }
    fn status(&self) -> Status {
        Status {
            mode: Action::Ask,
            sessions: Vec::new(),
            tracked_processes: 3,
            events_lost: 0,
            alerts: 1,
        }
    }
    fn approve(&self, id: u64, peer: Peer) -> Result<String, String> {
        self.decide(id, true, peer)
    }
    fn deny(&self, id: u64, peer: Peer) -> Result<String, String> {
        self.decide(id, false, peer)
    }
    fn events(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        (self.recent.clone(), self.events.subscribe())
    }
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }
    fn open_run(
        &self,
        pid: u32,
        _argv: Vec<String>,
        mode: Option<Action>,
        _peer: Peer,
    ) -> Result<Action, String> {
        self.runs.lock().unwrap().push(pid);
        Ok(mode.unwrap_or(Action::Block))
    }
    fn is_watched(&self, _pid: u32) -> bool {
        self.watched.load(Ordering::Relaxed)
    }
    fn last_refusal(&self, _pid: u32, _unreported: bool) -> Option<Arc<Event>> {
        self.recent.last().cloned()
    }
}

/// These tests check what root may do: run as anyone else they fail,
/// as agentwatch's tests do, rather than skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root"
    );
}

/// Serves `fake` on a socket in a fresh temp dir.
pub fn start(fake: &Arc<Fake>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/agentwatch.sock");
    let listener = bind(&path, None).unwrap();
    let authority = Arc::new(Authority { admin_gid: None });
    tokio::spawn(serve(listener, authority, fake.clone()));
    (dir, path)
}
