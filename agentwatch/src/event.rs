//! Events as agentwatch reports them: decoded from the kernel's records
//! (`crate::decode`), named (`crate::enrich`), with a stable JSON form (one object per line; the schema is in the README).
//! Clients of the control socket read that form back into these types.

use std::time::SystemTime;

use agentwatch_common::names::{
    Action, FoundBy, Kind, NameSource, OpenSyscall, SessionTransition, SocketJudgment, Verdict,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::operation::Operation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    pub ts: SystemTime,
    pub session: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    Open(Open),
    Connect(Connect),
    Exec(Exec),
    Fork {
        child: u32,
    },
    Exit(Exit),
    Alert(Alert),
    Name(Named),
    Found(Found),
    Session(SessionChange),
    /// An ask-mode request was opened (`verdict` absent) or answered.
    Request(RequestChange),
    Operation(OperationCall),
}

/// A session opened (an agent found) or ended (its last process exited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionChange {
    pub state: SessionTransition,
    pub agent: String,
    pub found_by: FoundBy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestChange {
    pub id: u64,
    pub host: String,
    pub port: u16,
    /// Absent while pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// A credential found by content in a file a session read: the session
/// holds it from now on, and the file counts as a credential file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Found {
    pub path: String,
    pub line: usize,
    /// The pattern that matched, e.g. `github-pat`, `generic-assignment`.
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Never the secret itself: a few characters of it.
    pub redacted: String,
    /// The class the session now holds.
    pub credential: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// The path as the process passed it.
    pub path: String,
    /// `path` made absolute against the working directory or `dirfd`, with
    /// `.` and `..` resolved lexically.
    pub resolved: String,
    pub flags: u32,
    /// File descriptor, or `-errno`.
    pub ret: i64,
    /// `st_dev` and `st_ino` of the opened file (0 when the open failed).
    pub dev: u64,
    pub ino: u64,
    pub syscall: OpenSyscall,
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// Credential classes this open gave the session (bit = class index).
    #[serde(skip)]
    pub cred_classes: u64,
    /// Ids of those classes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connect {
    /// `inet`, `inet6`, `unix`, `unspec` or the family number.
    pub family: String,
    /// The IP address, or the socket path (`@name` for an abstract socket).
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 0, or `-errno`.
    pub ret: i64,
    /// The name DNS, the system resolver or /etc/hosts gave for `addr`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How `host` was learned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<NameSource>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exec {
    pub filename: String,
    pub argv: Vec<String>,
    /// 0, or `-errno` of a failed exec.
    pub ret: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// Credential classes the new image's environment holds.
    #[serde(skip)]
    pub env_classes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<String>,
    /// Discovery's verdict in the kernel (`agent::HELD` bit for a held
    /// interpreter); named in `agent` once user space has decided.
    #[serde(skip)]
    pub agent_id: u32,
    /// The agent this exec was recognised as, opening a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A cataloged command the kernel stopped at exec for its argv to be judged.
    #[serde(skip)]
    pub held_command: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit status, or 128 + the signal, as a shell reports it.
    pub code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// What a session's TCP socket asked for at its first write, and what
/// that decided (`kind: "name"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    /// The name asked for; absent when the write named nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Where the name was read (`sni`, `host`, `connect-proxy`), or
    /// `address` when the socket was judged by its address.
    pub learned: NameSource,
    /// `infrastructure` (every write is judged) or `harmless` (left alone).
    pub judgment: SocketJudgment,
    pub addr: String,
    pub port: u16,
    /// Provider whose infrastructure the name is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A session holding a credential connected to an infrastructure host that
/// credential counts against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What was done.
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// How the host was named: at the socket's first write (`sni`, `host`,
    /// `connect-proxy`), or for its address (`dns`, `hosts-file`, `address`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<NameSource>,
    pub addr: String,
    pub port: u16,
    /// Provider whose infrastructure the host is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The credential that counted (the latest taken), and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialUse>,
    /// Ids of every credential class the session held that counted.
    pub credentials: Vec<String>,
    /// The connecting process and its ancestors, nearest first.
    pub ancestry: Vec<Ancestor>,
    /// What the call did, when it was judged by its operation (a TLS
    /// request at `SSL_write`, a command at exec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Where `operation` was seen, as in `operation` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<OperationSeen>,
}

impl Alert {
    /// The operation the alert was raised for, and where it was seen.
    pub fn judged(&self) -> Option<(OperationSeen, &Operation)> {
        Some((self.seen?, self.operation.as_ref()?))
    }
}

/// A call of a session judged by what it does (`kind: "operation"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationCall {
    /// Where it was seen: `tls` (at `SSL_write`) or `exec` (a command's argv).
    pub seen: OperationSeen,
    pub operation: Operation,
    /// What was done: `pass`, or the action taken.
    pub decision: OperationDecision,
    /// The API host the request named (TLS), absent for a command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationSeen {
    Tls,
    Exec,
}

impl OperationSeen {
    pub const ALL: [OperationSeen; 2] = [OperationSeen::Tls, OperationSeen::Exec];

    /// As in the JSON form and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            OperationSeen::Tls => "tls",
            OperationSeen::Exec => "exec",
        }
    }
}

/// An operation's outcome: it passed (a read, or a call its session may
/// make), or an action was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationDecision {
    Pass,
    #[serde(untagged)]
    Action(Action),
}

impl OperationDecision {
    /// How far it stops a call, for the one decision a write of several
    /// requests gets: passing least, then recording, asking, refusing, and
    /// killing most.
    pub fn strictness(self) -> u8 {
        match self {
            OperationDecision::Pass => 0,
            OperationDecision::Action(Action::Observe) => 1,
            OperationDecision::Action(Action::Alert) => 2,
            OperationDecision::Action(Action::Ask) => 3,
            OperationDecision::Action(Action::Block) => 4,
            OperationDecision::Action(Action::Kill) => 5,
        }
    }

    /// Every decision: pass, then each action.
    pub fn all() -> impl Iterator<Item = OperationDecision> {
        std::iter::once(OperationDecision::Pass)
            .chain(Action::ALL.iter().copied().map(OperationDecision::Action))
    }

    /// As in the JSON form and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            OperationDecision::Pass => "pass",
            OperationDecision::Action(action) => action.name(),
        }
    }
}

/// How a session came to hold a credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialUse {
    /// Class id (a provider, or a `[credentials.X]` entry).
    pub class: String,
    /// The path read, `env:NAME`, `/proc/PID/environ`, or `content:RULE in PATH`.
    pub source: String,
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    pub at: SystemTime,
    pub pid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

const FOUND: &str = "found";
const SESSION: &str = "session";
const REQUEST: &str = "request";
const OPERATION: &str = "operation";

impl Body {
    /// Every `kind` an event can have.
    pub const KINDS: [&'static str; 11] = [
        Kind::Open.name(),
        Kind::Connect.name(),
        Kind::Exec.name(),
        Kind::Fork.name(),
        Kind::Exit.name(),
        Kind::Alert.name(),
        Kind::Name.name(),
        FOUND,
        SESSION,
        REQUEST,
        OPERATION,
    ];

    /// The `kind` field of the event's JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Open(_) => Kind::Open.name(),
            Body::Connect(_) => Kind::Connect.name(),
            Body::Exec(_) => Kind::Exec.name(),
            Body::Fork { .. } => Kind::Fork.name(),
            Body::Exit(_) => Kind::Exit.name(),
            Body::Alert(_) => Kind::Alert.name(),
            Body::Name(_) => Kind::Name.name(),
            Body::Found(_) => FOUND,
            Body::Session(_) => SESSION,
            Body::Request(_) => REQUEST,
            Body::Operation(_) => OPERATION,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn rfc3339<S: Serializer>(ts: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*ts))
}

pub fn from_rfc3339<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the daemon writes, a client reads back and writes again unchanged.
    #[test]
    fn json_form_round_trips() {
        let lines = [
            // The README's example.
            r#"{"ts":"2026-11-25T11:50:21.132193Z","session":1,"pid":11185,"tid":11185,"ppid":11183,"uid":0,"comm":"cat","kind":"open","path":"./hostname","resolved":"/etc/hostname","flags":0,"ret":3,"dev":65024,"ino":611,"syscall":"openat"}"#,
            r#"{"ts":"2026-11-25T11:50:22.000001Z","session":1,"pid":11186,"tid":11186,"ppid":11183,"uid":0,"comm":"curl","kind":"alert","action":"ask","host":"backboard.railway.app","learned":"hosts-file","addr":"127.0.0.2","port":443,"provider":"railway","credential":{"class":"railway","source":"/root/.railway/config.json","at":"2026-11-25T11:50:21.132193Z","pid":11185,"comm":"cat"},"credentials":["railway"],"ancestry":[{"pid":11183,"comm":"bash","argv":["bash","-c","x"]}]}"#,
            r#"{"ts":"2026-11-25T11:50:22.500000Z","session":1,"pid":11186,"tid":11186,"ppid":11183,"uid":0,"comm":"curl","kind":"connect","family":"inet","addr":"127.0.0.2","port":443,"ret":-1,"host":"backboard.railway.app","learned":"dns"}"#,
            r#"{"ts":"2026-11-25T11:50:23.000000Z","session":1,"pid":11183,"tid":11183,"ppid":1,"uid":0,"comm":"bash","kind":"exec","filename":"/usr/bin/bash","argv":["bash"],"ret":0,"truncated":true,"credentials":["github"],"agent":"Claude Code"}"#,
            r#"{"ts":"2026-11-25T11:50:24.000000Z","session":1,"pid":11183,"tid":11183,"ppid":1,"uid":0,"comm":"bash","kind":"fork","child":11190}"#,
            r#"{"ts":"2026-11-25T11:50:25.000000Z","session":1,"pid":11183,"tid":11183,"ppid":1,"uid":0,"comm":"bash","kind":"session","state":"end","agent":"Claude Code","found_by":"lost-event"}"#,
            r#"{"ts":"2026-11-25T11:50:26.000000Z","session":1,"pid":11183,"tid":11183,"ppid":1,"uid":0,"comm":"curl","kind":"request","id":7,"host":"backboard.railway.app","port":443,"verdict":"timeout"}"#,
        ];
        for line in lines {
            let event: Event = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&event).unwrap(), line);
        }
    }
}
