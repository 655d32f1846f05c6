//! Events as agentwatch reports them: decoded from the kernel's records, with
//! a stable JSON form (one object per line; the schema is in the README).

pub mod decode;
pub mod path;

use std::time::SystemTime;

use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(serialize_with = "rfc3339")]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    Open(Open),
    Connect(Connect),
    Exec(Exec),
    Fork { child: u32 },
    Exit(Exit),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    pub syscall: &'static str,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connect {
    /// `inet`, `inet6`, `unix`, `unspec` or the family number.
    pub family: String,
    /// The IP address, or the socket path (`@name` for an abstract socket).
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 0, or `-errno`.
    pub ret: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exec {
    pub filename: String,
    pub argv: Vec<String>,
    /// 0, or `-errno` of a failed exec.
    pub ret: i32,
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exit {
    /// The exit status, or 128 + the signal, as a shell reports it.
    pub code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn rfc3339<S: Serializer>(ts: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*ts))
}
