//! What the daemon's loop shares with the control socket's clients: a
//! status snapshot, pending requests, recent events and the live feed.
//! Decisions (approve, deny) travel back to the loop, which owns the kernel.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use agentwatch_common::names::Action;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::control::{
    ControlHandler, Peer,
    protocol::{PendingRequest, Status},
};
use crate::event::{Body, Event};
use crate::sys::proc::ancestry;

/// Events replayed to a client that subscribes.
const RECENT: usize = 10_000;
/// Events a slow subscriber may fall behind before it is told it lost some.
pub const FEED: usize = 4096;

#[derive(Default)]
pub struct Shared {
    pub status: Status,
    pub pending: BTreeMap<u64, PendingRequest>,
    /// Every pid in a watched session, refreshed by the loop.
    pub watched: HashSet<u32>,
    recent: VecDeque<Arc<Event>>,
    /// Per session, the time of the refusal last given to an `unreported` Why request.
    reported: HashMap<u32, SystemTime>,
}

/// A human's answer, on its way to the loop.
pub struct Decision {
    pub id: u64,
    pub approve: bool,
    pub peer: Peer,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// `agentwatch run`'s request for a session, on its way to the loop.
pub struct RunRequest {
    pub pid: u32,
    pub argv: Vec<String>,
    pub mode: Option<Action>,
    pub peer: Peer,
    pub reply: oneshot::Sender<Result<Action, String>>,
}

/// What the socket's clients ask of the loop, which owns the kernel.
pub enum ToLoop {
    Decision(Decision),
    Run(RunRequest),
}

pub struct Handler {
    pub shared: Arc<Mutex<Shared>>,
    pub feed: broadcast::Sender<Arc<Event>>,
    pub to_loop: mpsc::Sender<ToLoop>,
}

impl Handler {
    /// `mode` is in the status from the start, before the loop's first refresh.
    pub fn new(to_loop: mpsc::Sender<ToLoop>, mode: Action) -> Self {
        let shared = Shared {
            status: Status {
                mode,
                ..Status::default()
            },
            ..Shared::default()
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            feed: broadcast::channel(FEED).0,
            to_loop,
        }
    }

    /// Adds an event to the replay buffer and the live feed.
    pub fn publish(&self, event: Arc<Event>) {
        let mut shared = self.shared.lock().expect("shared state");
        if shared.recent.len() == RECENT {
            shared.recent.pop_front();
        }
        shared.recent.push_back(event.clone());
        // Under the lock, so a subscriber's replay and feed never overlap.
        let _ = self.feed.send(event);
    }

    fn decide(&self, id: u64, approve: bool, peer: Peer) -> Result<String, String> {
        self.ask_loop(|reply| {
            ToLoop::Decision(Decision {
                id,
                approve,
                peer,
                reply,
            })
        })
    }

    /// Sends the loop what `message` makes of a reply channel, and waits for its answer.
    fn ask_loop<T>(
        &self,
        message: impl FnOnce(oneshot::Sender<Result<T, String>>) -> ToLoop,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.to_loop
            .blocking_send(message(reply))
            .map_err(|_| "the daemon is shutting down".to_string())?;
        answer
            .blocking_recv()
            .map_err(|_| "the daemon is shutting down".to_string())?
    }
}

impl ControlHandler for Handler {
    fn pending(&self) -> Vec<PendingRequest> {
        let shared = self.shared.lock().expect("shared state");
        shared.pending.values().cloned().collect()
    }

    fn status(&self) -> Status {
        self.shared.lock().expect("shared state").status.clone()
    }

    fn approve(&self, id: u64, peer: Peer) -> Result<String, String> {
        self.decide(id, true, peer)
    }

    fn deny(&self, id: u64, peer: Peer) -> Result<String, String> {
        self.decide(id, false, peer)
    }

    fn events(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let shared = self.shared.lock().expect("shared state");
        (
            shared.recent.iter().cloned().collect(),
            self.feed.subscribe(),
        )
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.subscribe()
    }

    fn open_run(
        &self,
        pid: u32,
        argv: Vec<String>,
        mode: Option<Action>,
        peer: Peer,
    ) -> Result<Action, String> {
        self.ask_loop(|reply| {
            ToLoop::Run(RunRequest {
                pid,
                argv,
                mode,
                peer,
                reply,
            })
        })
    }

    fn is_watched(&self, pid: u32) -> bool {
        // The pid or any ancestor: a process forked since the last refresh
        // descends from one that was in the set. Decisions are checked
        // again against the kernel's map by the loop.
        let chain = ancestry(pid);
        let shared = self.shared.lock().expect("shared state");
        chain.iter().any(|pid| shared.watched.contains(pid))
    }

    fn last_refusal(&self, pid: u32, unreported: bool) -> Option<Arc<Event>> {
        let chain = ancestry(pid);
        let mut shared = self.shared.lock().expect("shared state");
        let session = shared.status.sessions.iter().find(|session| {
            chain.contains(&session.root_pid)
                || session.processes.iter().any(|p| chain.contains(&p.pid))
        })?;
        let id = session.id;
        let refused = |action: Action| matches!(action, Action::Block | Action::Kill | Action::Ask);
        let event = shared
            .recent
            .iter()
            .rev()
            .find(|e| e.session == id && matches!(&e.body, Body::Alert(a) if refused(a.action)))?
            .clone();
        if unreported && shared.reported.insert(id, event.ts) == Some(event.ts) {
            return None;
        }
        Some(event)
    }
}
