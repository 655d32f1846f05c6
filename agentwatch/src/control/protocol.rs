// CONTRACT for agentwatch's control socket (daemon <-> CLI clients).
// Lives in agentwatch/src/control/protocol.rs. Unix stream socket, default
// /run/agentwatch/agentwatch.sock (mode 0660, root:admin-group or 0600 root),
// newline-delimited JSON: one Request line from the client, then Response lines.

use agentwatch_common::names::Action;
use serde::{Deserialize, Serialize};

use crate::event::Event;

pub const DEFAULT_SOCKET: &str = "/run/agentwatch/agentwatch.sock";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// One `Response::Pending`.
    Pending,
    /// One `Response::Done` or `Response::Error`.
    Approve {
        id: u64,
    },
    Deny {
        id: u64,
    },
    /// One `Response::Status`.
    Status,
    /// `Response::Event` lines: the daemon's recent-events buffer (up to 10_000) unless
    /// `replay` is false, then with `follow: false` `Response::End`; with follow,
    /// `Response::Live` and live events until the client goes away.
    Events {
        follow: bool,
        session: Option<u32>,
        /// False for a client that read the history from the event log itself.
        #[serde(default = "replay_by_default")]
        replay: bool,
    },
    /// One `Response::Refusal`: the latest refusal in the asking process's own session (so
    /// any visible process may ask, an agent too). With `unreported`, only one not yet
    /// given to such a request (an agent's hook asks after every tool call).
    Why {
        #[serde(default)]
        unreported: bool,
    },
    /// `agentwatch run` through the daemon: `pid`, the asker's child, held before its exec,
    /// becomes the root of a new session with `mode` (default: the daemon's). One
    /// `Response::Opened` (or `Response::Error`), then the session's events as
    /// `Response::Event` lines, taken from before it opened, until the client goes away.
    Run {
        pid: u32,
        argv: Vec<String>,
        mode: Option<Action>,
    },
}

/// Clients from before `replay` was asked for wanted the replay.
fn replay_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pending {
        pending: Vec<PendingRequest>,
    },
    Status(Status),
    /// An agentwatch event exactly as the JSON-lines sink writes it (the README's "Event
    /// schema"); ask-mode requests are events of kind "request".
    Event {
        /// Boxed: an event is several times the size of the other responses.
        event: Box<Event>,
    },
    Done {
        message: String,
    },
    End,
    /// To a follower, after the replay: the daemon is subscribed to the live feed, and
    /// every event it publishes from now on follows.
    Live,
    /// The alert event of the refusal; None when the session (or the asker, outside any
    /// session) has none.
    Refusal {
        event: Option<Box<Event>>,
    },
    /// To `Run`: the session is open; the held command may start.
    Opened {
        session: u32,
        action: Action,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingRequest {
    pub id: u64,
    pub session: u32,
    pub agent: String, // agent name, e.g. "Claude Code"
    pub pid: u32,      // the process whose connect was blocked
    pub comm: String,
    pub credential: String, // e.g. "railway: /home/u/.railway/config.json"
    pub host: String,       // hostname or address
    pub addr: String,
    pub port: u16,
    pub since: String,        // RFC 3339 time the request was created
    pub expires_in_secs: u64, // seconds until it is denied automatically
    /// What the stopped call does, when it was judged by its operation
    /// ("GraphQL mutation volumeDelete on Railway (destructive)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

impl PendingRequest {
    /// What the request asks to do, for tables: the operation and where it
    /// goes, or the endpoint of the refused connect.
    pub fn target(&self) -> String {
        let host = if self.host.is_empty() {
            &self.addr
        } else {
            &self.host
        };
        let endpoint = if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        };
        match &self.operation {
            Some(operation) if self.port == 0 => operation.clone(),
            Some(operation) => format!("{operation} to {host}"),
            None => endpoint,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub mode: Action, // daemon's default action
    pub sessions: Vec<SessionInfo>,
    pub tracked_processes: u64,
    pub events_lost: u64,
    pub alerts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub id: u32,
    pub agent: String,
    pub root_pid: u32,
    pub started: String, // RFC 3339
    pub action: Action,
    pub stopped: bool,            // SIGSTOPped awaiting approval
    pub credentials: Vec<String>, // class ids the session holds
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

/// How `Response::Event` is written without copying the event: the same event goes to every
/// follower.
#[derive(Serialize)]
#[serde(tag = "type", rename = "event")]
pub struct EventLine<'a> {
    pub event: &'a Event,
}
