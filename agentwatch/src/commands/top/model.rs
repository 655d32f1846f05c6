//! What `agentwatch top` shows, and how keys change it: kept apart from the
//! terminal and the socket so it can be tested on its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use agentwatch_common::names::Action;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::control::protocol::{PendingRequest, ProcessInfo, Response, SessionInfo, Status};
use crate::event::{Ancestor, Body, CredentialUse, Event};

/// Entries kept of each history (reads, connections, alerts).
pub const HISTORY: usize = 500;
/// How long a footer message stays up.
const MESSAGE_FOR: Duration = Duration::from_secs(5);
/// Rows PgUp and PgDn move by.
const PAGE: usize = 10;

/// Every key, for the help overlay (the footer shows the first few).
pub const KEYS: &[(&str, &str)] = &[
    ("q", "quit"),
    ("?", "help"),
    ("a", "approve the selected request"),
    ("d", "deny the selected request (asks y/n)"),
    (
        "K",
        "kill the selected session: deny its request (asks y/n)",
    ),
    ("Enter", "details of the selected row"),
    ("Tab/←→", "next/previous pane"),
    ("↑↓ j/k", "select"),
    ("PgUp/PgDn", "select 10 rows up/down"),
    ("g/G Home/End", "select the first/last row"),
    ("s", "show the selected session only / all"),
    ("Esc", "close the details; quit"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    Sessions,
    Pending,
    Alerts,
    Connections,
    Reads,
}

/// Tab / → order.
const PANES: [Pane; 5] = [
    Pane::Sessions,
    Pane::Pending,
    Pane::Alerts,
    Pane::Connections,
    Pane::Reads,
];

/// What a key asks of the event loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Quit,
    Approve(u64),
    Deny(u64),
}

/// The daemon's two feeds; the view says "disconnected" while either is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Events,
    Poll,
}

pub struct Pending {
    pub request: PendingRequest,
    /// When `request.expires_in_secs` was read, for the countdown.
    seen: Instant,
}

pub struct CredRead {
    seq: u64,
    pub ts: SystemTime,
    pub session: u32,
    pub pid: u32,
    pub comm: String,
    pub path: String,
    pub credentials: Vec<String>,
}

pub struct Connection {
    seq: u64,
    pub ts: SystemTime,
    pub session: u32,
    pub pid: u32,
    pub comm: String,
    pub dest: String,
    pub ret: i64,
}

pub struct Alert {
    seq: u64,
    pub ts: SystemTime,
    pub session: u32,
    pub pid: u32,
    pub action: Action,
    pub comm: String,
    /// `host:port`, else the address.
    pub dest: String,
    pub addr: String,
    pub provider: String,
    /// The credential that counted; `source` is its path (or variable).
    pub credential: Option<CredentialUse>,
    pub credentials: Vec<String>,
    /// "GraphQL mutation volumeDelete on Railway (destructive)", when judged by operation.
    pub operation: Option<String>,
    /// The calling process and its ancestors, nearest first.
    pub ancestry: Vec<Ancestor>,
}

impl Alert {
    pub fn source(&self) -> &str {
        self.credential.as_ref().map_or("", |c| c.source.as_str())
    }
}

/// A history entry: which session it is of, and its place in the history
/// (a selection that stays on it while newer entries arrive).
trait Entry {
    fn session(&self) -> u32;
    fn seq(&self) -> u64;
}

macro_rules! entry {
    ($($t:ty),*) => {$(
        impl Entry for $t {
            fn session(&self) -> u32 {
                self.session
            }
            fn seq(&self) -> u64 {
                self.seq
            }
        }
    )*};
}
entry!(CredRead, Connection, Alert);

/// A denial waiting for the human's `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    Deny {
        request: u64,
    },
    /// A session is killed by denying the request it is stopped for.
    Kill {
        session: u32,
        request: u64,
    },
}

impl Confirm {
    pub fn prompt(self) -> String {
        match self {
            Confirm::Deny { request } => format!("deny request {request}? y/n"),
            Confirm::Kill { session, .. } => format!("kill session {session}? y/n"),
        }
    }

    fn cancelled(self) -> String {
        match self {
            Confirm::Deny { request } => format!("request {request} not denied"),
            Confirm::Kill { session, .. } => format!("session {session} not killed"),
        }
    }

    fn request(self) -> u64 {
        match self {
            Confirm::Deny { request } | Confirm::Kill { request, .. } => request,
        }
    }
}

/// What Enter shows of the selected row: a title and labelled values, in full.
#[derive(Debug, PartialEq, Eq)]
pub struct Detail {
    pub title: String,
    pub fields: Vec<(&'static str, String)>,
}

/// How a selection moves.
#[derive(Clone, Copy)]
enum Move {
    Up(usize),
    Down(usize),
    First,
    Last,
}

pub struct Message {
    pub text: String,
    pub error: bool,
    until: Instant,
}

pub struct Model {
    /// The latest `Status`, sessions sorted by id.
    pub status: Option<Status>,
    /// Sorted by id.
    pub pending: Vec<Pending>,
    reads: VecDeque<CredRead>,
    connections: VecDeque<Connection>,
    alerts: VecDeque<Alert>,
    pub focus: Pane,
    /// The history shown below (Alerts, Connections or Reads): the last one focused.
    pub tab: Pane,
    /// Ids, not indexes, so a selection survives sessions and requests coming and going.
    pub selected_session: Option<u32>,
    pub selected_pending: Option<u64>,
    /// The selected row of each history tab by its `seq` (none: the newest).
    selected_rows: HashMap<Pane, u64>,
    /// Show only this session's reads, connections and alerts.
    pub filter: Option<u32>,
    /// A deny or kill asked for, until `y` (or any other key: not done).
    pub confirm: Option<Confirm>,
    /// The details of the selected row are shown.
    pub detail_open: bool,
    pub help_open: bool,
    /// The next history entry's `seq`.
    next_seq: u64,
    message: Option<Message>,
    events_up: bool,
    poll_up: bool,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            status: None,
            pending: Vec::new(),
            reads: VecDeque::new(),
            connections: VecDeque::new(),
            alerts: VecDeque::new(),
            focus: Pane::Sessions,
            tab: Pane::Alerts,
            selected_session: None,
            selected_pending: None,
            selected_rows: HashMap::new(),
            filter: None,
            confirm: None,
            detail_open: false,
            help_open: false,
            next_seq: 0,
            message: None,
            // top_command reached the daemon before starting the view.
            events_up: true,
            poll_up: true,
        }
    }
}

/// `host:port`, else `addr:port` (`[v6]:port`), else a unix socket's path.
pub fn dest(host: Option<&str>, addr: &str, port: Option<u16>) -> String {
    let name = match host {
        Some(host) if !host.is_empty() => host.to_string(),
        _ if addr.contains(':') && port.is_some() => format!("[{addr}]"),
        _ => addr.to_string(),
    };
    match port {
        Some(port) => format!("{name}:{port}"),
        None => name,
    }
}

impl Model {
    pub fn apply(&mut self, response: Response, now: Instant) {
        match response {
            Response::Status(mut status) => {
                status.sessions.sort_by_key(|s| s.id);
                self.status = Some(status);
                self.fix_selection();
            }
            Response::Pending { pending } => {
                self.pending = pending
                    .into_iter()
                    .map(|request| Pending { request, seen: now })
                    .collect();
                self.pending.sort_by_key(|p| p.request.id);
                self.fix_selection();
            }
            Response::Event { event } => self.event(*event),
            Response::Done { message } => self.say(message, false, now),
            Response::Error { message } => self.say(message, true, now),
            // `top` never asks Why or Run.
            Response::End | Response::Live | Response::Refusal { .. } | Response::Opened { .. } => {
            }
        }
    }

    /// Credential reads, connections and alerts go to their histories. Pending requests come
    /// from the 1 s poll instead: a replayed request event may be long resolved.
    fn event(&mut self, event: Event) {
        let Event {
            ts,
            session,
            pid,
            comm,
            body,
            ..
        } = event;
        let seq = self.next_seq;
        self.next_seq += 1;
        match body {
            Body::Open(open) if !open.credentials.is_empty() => push(
                &mut self.reads,
                CredRead {
                    path: if open.resolved.is_empty() {
                        open.path
                    } else {
                        open.resolved
                    },
                    seq,
                    ts,
                    session,
                    pid,
                    comm,
                    credentials: open.credentials,
                },
            ),
            Body::Connect(connect) => push(
                &mut self.connections,
                Connection {
                    dest: dest(connect.host.as_deref(), &connect.addr, connect.port),
                    seq,
                    ts,
                    session,
                    pid,
                    comm,
                    ret: connect.ret,
                },
            ),
            Body::Alert(alert) => push(
                &mut self.alerts,
                Alert {
                    dest: dest(alert.host.as_deref(), &alert.addr, Some(alert.port)),
                    operation: alert.operation.as_ref().map(|op| op.with_class()),
                    seq,
                    ts,
                    session,
                    pid,
                    action: alert.action,
                    comm,
                    addr: alert.addr,
                    provider: alert.provider.unwrap_or_default(),
                    credential: alert.credential,
                    credentials: alert.credentials,
                    ancestry: alert.ancestry,
                },
            ),
            _ => {}
        }
    }

    pub fn link(&mut self, link: Link, up: bool) {
        match link {
            Link::Events => {
                // A new subscription starts with the daemon's replay: start over
                // rather than show events twice.
                if up {
                    self.reads.clear();
                    self.connections.clear();
                    self.alerts.clear();
                }
                self.events_up = up;
            }
            Link::Poll => self.poll_up = up,
        }
    }

    pub fn connected(&self) -> bool {
        self.events_up && self.poll_up
    }

    pub fn sessions(&self) -> &[SessionInfo] {
        self.status.as_ref().map_or(&[], |s| &s.sessions)
    }

    /// Newest first, limited to the filtered session.
    pub fn reads(&self) -> impl Iterator<Item = &CredRead> {
        newest(&self.reads, self.filter)
    }

    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        newest(&self.connections, self.filter)
    }

    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        newest(&self.alerts, self.filter)
    }

    /// Seconds until `pending` is denied automatically, counting down between polls.
    pub fn expires_in(pending: &Pending, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(pending.seen).as_secs();
        pending.request.expires_in_secs.saturating_sub(elapsed)
    }

    pub fn message(&self, now: Instant) -> Option<&Message> {
        self.message.as_ref().filter(|m| m.until > now)
    }

    pub fn say(&mut self, text: impl Into<String>, error: bool, now: Instant) {
        self.message = Some(Message {
            text: text.into(),
            error,
            until: now + MESSAGE_FOR,
        });
    }

    pub fn key(&mut self, key: KeyEvent, now: Instant) -> Option<Command> {
        // Raw mode turns Ctrl-C into a key.
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Command::Quit);
        }
        if let Some(confirm) = self.confirm.take() {
            if key.code == KeyCode::Char('y') {
                let request = confirm.request();
                self.say(format!("deny request {request}…"), false, now);
                return Some(Command::Deny(request));
            }
            self.say(confirm.cancelled(), false, now);
            return None;
        }
        if std::mem::take(&mut self.help_open) {
            return None;
        }
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Esc if !self.detail_open => return Some(Command::Quit),
            KeyCode::Esc => self.detail_open = false,
            KeyCode::Char('?') => self.help_open = true,
            KeyCode::Enter => self.detail_open = !self.detail_open,
            KeyCode::Tab | KeyCode::Right => self.cycle(1),
            KeyCode::BackTab | KeyCode::Left => self.cycle(PANES.len() - 1),
            KeyCode::Up | KeyCode::Char('k') => self.select(Move::Up(1)),
            KeyCode::Down | KeyCode::Char('j') => self.select(Move::Down(1)),
            KeyCode::PageUp => self.select(Move::Up(PAGE)),
            KeyCode::PageDown => self.select(Move::Down(PAGE)),
            KeyCode::Home | KeyCode::Char('g') => self.select(Move::First),
            KeyCode::End | KeyCode::Char('G') => self.select(Move::Last),
            KeyCode::Char('a') => return self.approve(now),
            KeyCode::Char('d') => self.ask_deny(now),
            KeyCode::Char('K') => self.ask_kill(now),
            KeyCode::Char('s') => self.toggle_filter(now),
            _ => {}
        }
        None
    }

    fn cycle(&mut self, by: usize) {
        let at = PANES.iter().position(|p| *p == self.focus).unwrap_or(0);
        self.focus = PANES[(at + by) % PANES.len()];
        if matches!(self.focus, Pane::Alerts | Pane::Connections | Pane::Reads) {
            self.tab = self.focus;
        }
    }

    fn select(&mut self, to: Move) {
        match self.focus {
            Pane::Sessions => {
                let ids: Vec<u32> = self.sessions().iter().map(|s| s.id).collect();
                self.selected_session = moved(&ids, self.selected_session, to);
            }
            Pane::Pending => {
                let ids: Vec<u64> = self.pending.iter().map(|p| p.request.id).collect();
                self.selected_pending = moved(&ids, self.selected_pending, to);
            }
            tab => {
                let ids = self.row_seqs(tab);
                if let Some(seq) = moved(&ids, self.selected_seq(tab, &ids), to) {
                    self.selected_rows.insert(tab, seq);
                }
            }
        }
    }

    /// The `seq`s of a history tab's rows, newest first, as shown.
    fn row_seqs(&self, tab: Pane) -> Vec<u64> {
        match tab {
            Pane::Alerts => self.alerts().map(Entry::seq).collect(),
            Pane::Connections => self.connections().map(Entry::seq).collect(),
            _ => self.reads().map(Entry::seq).collect(),
        }
    }

    /// The selected row of `tab` among `ids`: the one chosen while it is
    /// still shown, else the newest.
    fn selected_seq(&self, tab: Pane, ids: &[u64]) -> Option<u64> {
        self.selected_rows
            .get(&tab)
            .filter(|seq| ids.contains(seq))
            .or(ids.first())
            .copied()
    }

    /// Where the selection of `tab` is among its rows, newest first.
    pub fn selected_row(&self, tab: Pane) -> Option<usize> {
        let ids = self.row_seqs(tab);
        let seq = self.selected_seq(tab, &ids)?;
        ids.iter().position(|id| *id == seq)
    }

    /// The details of the focused pane's selected row, while they are open.
    pub fn detail(&self, now: Instant) -> Option<Detail> {
        if !self.detail_open {
            return None;
        }
        let selected = |tab| {
            let ids = self.row_seqs(tab);
            self.selected_seq(tab, &ids)
        };
        match self.focus {
            Pane::Sessions => self
                .sessions()
                .iter()
                .find(|s| Some(s.id) == self.selected_session)
                .map(session_detail),
            Pane::Pending => {
                let p = self
                    .pending
                    .iter()
                    .find(|p| Some(p.request.id) == self.selected_pending)?;
                // The alert that opened it has the ancestry.
                let alert = self
                    .alerts
                    .iter()
                    .rev()
                    .find(|a| a.session == p.request.session && a.pid == p.request.pid);
                Some(pending_detail(p, alert, Self::expires_in(p, now)))
            }
            Pane::Alerts => {
                let seq = selected(Pane::Alerts)?;
                self.alerts().find(|a| a.seq == seq).map(alert_detail)
            }
            Pane::Connections => {
                let seq = selected(Pane::Connections)?;
                let c = self.connections().find(|c| c.seq == seq)?;
                Some(Detail {
                    title: format!("connection of session {}", c.session),
                    fields: vec![
                        ("time", time(c.ts)),
                        ("process", format!("{} {}", c.pid, c.comm)),
                        ("destination", c.dest.clone()),
                        ("result", c.ret.to_string()),
                    ],
                })
            }
            Pane::Reads => {
                let seq = selected(Pane::Reads)?;
                let r = self.reads().find(|r| r.seq == seq)?;
                Some(Detail {
                    title: format!("credential read of session {}", r.session),
                    fields: vec![
                        ("time", time(r.ts)),
                        ("process", format!("{} {}", r.pid, r.comm)),
                        ("path", r.path.clone()),
                        ("credentials", r.credentials.join(", ")),
                    ],
                })
            }
        }
    }

    fn approve(&mut self, now: Instant) -> Option<Command> {
        let Some(id) = self.selected_pending else {
            self.say("no pending request to approve", true, now);
            return None;
        };
        self.say(format!("approve request {id}…"), false, now);
        Some(Command::Approve(id))
    }

    fn ask_deny(&mut self, now: Instant) {
        match self.selected_pending {
            Some(request) => self.confirm = Some(Confirm::Deny { request }),
            None => self.say("no pending request to deny", true, now),
        }
    }

    /// The daemon kills a session when the request it is stopped for is denied.
    fn ask_kill(&mut self, now: Instant) {
        let Some(session) = self.selected_session else {
            self.say("no session selected", true, now);
            return;
        };
        match self.pending.iter().find(|p| p.request.session == session) {
            Some(p) => {
                self.confirm = Some(Confirm::Kill {
                    session,
                    request: p.request.id,
                })
            }
            None => self.say(
                format!("session {session} is not waiting for approval: nothing to kill it for"),
                true,
                now,
            ),
        }
    }

    fn toggle_filter(&mut self, now: Instant) {
        if self.filter.take().is_some() {
            self.say("showing all sessions", false, now);
        } else if let Some(id) = self.selected_session {
            self.filter = Some(id);
            self.say(format!("showing session {id} only"), false, now);
        } else {
            self.say("no session selected", true, now);
        }
    }

    /// Keeps the selections on things that still exist (else the first one).
    fn fix_selection(&mut self) {
        let sessions: Vec<u32> = self.sessions().iter().map(|s| s.id).collect();
        if !self
            .selected_session
            .is_some_and(|id| sessions.contains(&id))
        {
            self.selected_session = sessions.first().copied();
        }
        let pending: Vec<u64> = self.pending.iter().map(|p| p.request.id).collect();
        if !self
            .selected_pending
            .is_some_and(|id| pending.contains(&id))
        {
            self.selected_pending = pending.first().copied();
        }
    }
}

fn time(ts: SystemTime) -> String {
    humantime::format_rfc3339_millis(ts).to_string()
}

/// A process and its command line, in full.
fn command_line(pid: u32, comm: &str, argv: &[String]) -> String {
    format!("{pid} {comm}: {}", argv.join(" "))
}

/// One field per ancestor, nearest first; the label on the first only.
fn ancestry_fields(ancestry: &[Ancestor]) -> impl Iterator<Item = (&'static str, String)> {
    ancestry.iter().enumerate().map(|(i, a)| {
        (
            if i == 0 { "ancestry" } else { "" },
            command_line(a.pid, &a.comm, &a.argv),
        )
    })
}

fn session_detail(s: &SessionInfo) -> Detail {
    let mut fields = vec![
        ("agent", s.agent.clone()),
        ("started", s.started.clone()),
        ("action", s.action.to_string()),
        (
            "stopped",
            if s.stopped {
                "yes, awaiting approval"
            } else {
                "no"
            }
            .into(),
        ),
        ("holds", s.credentials.join(", ")),
    ];
    fields.extend(
        process_tree(&s.processes, s.root_pid)
            .into_iter()
            .enumerate()
            .map(|(i, (depth, p))| {
                (
                    if i == 0 { "processes" } else { "" },
                    format!(
                        "{}{}",
                        "  ".repeat(depth),
                        command_line(p.pid, &p.comm, &p.argv)
                    ),
                )
            }),
    );
    Detail {
        title: format!("session {}", s.id),
        fields,
    }
}

fn pending_detail(p: &Pending, alert: Option<&Alert>, expires_in: u64) -> Detail {
    let r = &p.request;
    let mut fields = vec![
        ("agent", format!("{} (session {})", r.agent, r.session)),
        ("process", format!("{} {}", r.pid, r.comm)),
        ("host", format!("{}:{} ({})", r.host, r.port, r.addr)),
        (
            "operation",
            r.operation.clone().unwrap_or_else(|| "connect".into()),
        ),
        ("credential", r.credential.clone()),
        ("since", r.since.clone()),
        ("denied in", format!("{expires_in}s")),
    ];
    fields.extend(alert.into_iter().flat_map(|a| ancestry_fields(&a.ancestry)));
    Detail {
        title: format!("request {}", r.id),
        fields,
    }
}

fn alert_detail(a: &Alert) -> Detail {
    let mut fields = vec![
        ("time", time(a.ts)),
        ("action", a.action.to_string()),
        ("process", format!("{} {}", a.pid, a.comm)),
        ("host", format!("{} ({})", a.dest, a.addr)),
        ("provider", a.provider.clone()),
        (
            "operation",
            a.operation.clone().unwrap_or_else(|| "connect".into()),
        ),
    ];
    match &a.credential {
        Some(c) => {
            fields.push(("credential", format!("{}: {}", c.class, c.source)));
            fields.push(("read", format!("{} by {} {}", time(c.at), c.pid, c.comm)));
        }
        None => fields.push(("credential", a.credentials.join(", "))),
    }
    fields.extend(ancestry_fields(&a.ancestry));
    Detail {
        title: format!("alert in session {}", a.session),
        fields,
    }
}

fn push<T>(history: &mut VecDeque<T>, item: T) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(item);
}

fn newest<T: Entry>(history: &VecDeque<T>, filter: Option<u32>) -> impl Iterator<Item = &T> {
    history
        .iter()
        .rev()
        .filter(move |e| filter.is_none_or(|s| e.session() == s))
}

/// The id `to` of `current` in `ids`, staying at the ends.
fn moved<T: Copy + PartialEq>(ids: &[T], current: Option<T>, to: Move) -> Option<T> {
    let last = ids.len().saturating_sub(1);
    let at = current.and_then(|c| ids.iter().position(|id| *id == c));
    let next = match (at, to) {
        (_, Move::First) => 0,
        (_, Move::Last) => last,
        (None, _) => 0,
        (Some(i), Move::Down(n)) => (i + n).min(last),
        (Some(i), Move::Up(n)) => i.saturating_sub(n),
    };
    ids.get(next).copied()
}

/// A session's processes in tree order with their depth: children under their
/// parent (by ppid), siblings by pid. Processes whose parent is not in the
/// session (re-parented orphans, or the parent exited) start trees of their own
/// after the root's.
pub fn process_tree(processes: &[ProcessInfo], root_pid: u32) -> Vec<(usize, &ProcessInfo)> {
    let present: HashSet<u32> = processes.iter().map(|p| p.pid).collect();
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, p) in processes.iter().enumerate() {
        if p.pid != root_pid && p.ppid != p.pid && present.contains(&p.ppid) {
            children.entry(p.ppid).or_default().push(i);
        } else {
            roots.push(i);
        }
    }
    for kids in children.values_mut() {
        kids.sort_by_key(|&i| processes[i].pid);
    }
    roots.sort_by_key(|&i| (processes[i].pid != root_pid, processes[i].pid));

    let mut done = vec![false; processes.len()];
    let mut out = Vec::with_capacity(processes.len());
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&i| (0, i)).collect();
    loop {
        while let Some((depth, i)) = stack.pop() {
            if std::mem::replace(&mut done[i], true) {
                continue;
            }
            out.push((depth, &processes[i]));
            if let Some(kids) = children.get(&processes[i].pid) {
                stack.extend(kids.iter().rev().map(|&k| (depth + 1, k)));
            }
        }
        // A parent cycle (pids reused within one snapshot) is unreachable from
        // any root: list it flat rather than lose it.
        match done.iter().position(|d| !d) {
            Some(i) => stack.push((0, i)),
            None => return out,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    pub fn process(pid: u32, ppid: u32, comm: &str, argv: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid,
            comm: comm.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn status() -> Status {
        Status {
            mode: Action::Ask,
            sessions: vec![
                SessionInfo {
                    id: 2,
                    agent: "Codex".into(),
                    root_pid: 200,
                    started: "2026-11-27T15:00:00Z".into(),
                    action: Action::Block,
                    stopped: false,
                    credentials: vec![],
                    processes: vec![process(200, 1, "codex", &["codex"])],
                },
                SessionInfo {
                    id: 1,
                    agent: "Claude Code".into(),
                    root_pid: 100,
                    started: "2026-11-27T15:00:00Z".into(),
                    action: Action::Ask,
                    stopped: true,
                    credentials: vec!["railway".into()],
                    processes: vec![
                        process(100, 1, "claude", &["claude"]),
                        process(
                            101,
                            100,
                            "bash",
                            &["bash", "-c", "cat ~/.railway/config.json"],
                        ),
                        process(102, 101, "cat", &["cat", "/home/u/.railway/config.json"]),
                    ],
                },
            ],
            tracked_processes: 4,
            events_lost: 3,
            alerts: 1,
        }
    }

    pub fn pending_request(id: u64, expires_in_secs: u64) -> PendingRequest {
        PendingRequest {
            id,
            session: 1,
            agent: "Claude Code".into(),
            pid: 102,
            comm: "curl".into(),
            credential: "railway: /home/u/.railway/config.json".into(),
            host: "backboard.railway.app".into(),
            addr: "127.0.0.2".into(),
            port: 443,
            since: "2026-11-27T15:06:03Z".into(),
            expires_in_secs,
            operation: None,
        }
    }

    /// An event as the daemon sends it.
    fn event(json: serde_json::Value) -> Response {
        Response::Event {
            event: serde_json::from_value(json).unwrap(),
        }
    }

    pub fn open_event(session: u32, comm: &str) -> Response {
        event(
            json!({"ts":"2026-11-27T15:06:03.45Z","session":session,"pid":102,"tid":102,
            "ppid":101,"uid":0,"comm":comm,"kind":"open","path":"~/x",
            "resolved":"/home/u/.railway/config.json","flags":0,"ret":3,"dev":2049,
            "ino":1234,"syscall":"openat","credentials":["railway"]}),
        )
    }

    pub fn alert_event(session: u32) -> Response {
        event(
            json!({"ts":"2026-11-27T15:06:04.00Z","session":session,"pid":103,"tid":103,
            "ppid":101,"uid":0,"comm":"curl","kind":"alert","action":"block",
            "host":"backboard.railway.app","addr":"127.0.0.2","port":443,
            "provider":"railway","credential":{"class":"railway",
            "source":"/home/u/.railway/config.json","at":"2026-11-27T15:06:03.45Z",
            "pid":102,"comm":"cat"},"credentials":["railway"],
            "ancestry":[{"pid":101,"comm":"bash","argv":["bash","-c","deploy"]},
                {"pid":100,"comm":"claude","argv":["claude"]}]}),
        )
    }

    fn connect_event(session: u32, ret: i64) -> Response {
        event(
            json!({"ts":"2026-11-27T15:06:04.00Z","session":session,"pid":103,"tid":103,
            "ppid":101,"uid":0,"comm":"curl","kind":"connect","family":"inet",
            "addr":"127.0.0.2","port":443,"ret":ret,"host":"backboard.railway.app"}),
        )
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn events_fill_the_histories() {
        let now = Instant::now();
        let mut m = Model::default();
        m.apply(open_event(1, "cat"), now);
        m.apply(connect_event(1, -1), now);
        m.apply(alert_event(1), now);
        // Reads without credentials, and kinds top doesn't show, are left out.
        m.apply(
            event(
                json!({"ts":"2026-11-27T15:06:05Z","session":1,"pid":104,"tid":104,
                "ppid":101,"uid":0,"comm":"ls","kind":"open","path":"/etc/hostname",
                "resolved":"/etc/hostname","flags":0,"ret":3,"dev":2049,"ino":5,
                "syscall":"openat"}),
            ),
            now,
        );
        m.apply(
            event(
                json!({"ts":"2026-11-27T15:06:05Z","session":1,"pid":104,"tid":104,
                "ppid":101,"uid":0,"comm":"ls","kind":"exec","filename":"/bin/ls",
                "argv":["ls"],"ret":0}),
            ),
            now,
        );
        let reads: Vec<_> = m.reads().collect();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].path, "/home/u/.railway/config.json");
        assert_eq!(reads[0].credentials, ["railway"]);
        assert_eq!(reads[0].comm, "cat");
        let conns: Vec<_> = m.connections().collect();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].dest, "backboard.railway.app:443");
        assert_eq!(conns[0].ret, -1);
        let alerts: Vec<_> = m.alerts().collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].action, Action::Block);
        assert_eq!(alerts[0].provider, "railway");
        assert_eq!(alerts[0].source(), "/home/u/.railway/config.json");

        // A new subscription replays: the histories start over.
        m.link(Link::Events, false);
        assert!(!m.connected());
        m.link(Link::Events, true);
        assert!(m.connected());
        assert_eq!(
            m.reads().count() + m.connections().count() + m.alerts().count(),
            0
        );
    }

    #[test]
    fn dest_forms() {
        assert_eq!(dest(Some("h"), "1.2.3.4", Some(443)), "h:443");
        assert_eq!(dest(Some(""), "1.2.3.4", Some(443)), "1.2.3.4:443");
        assert_eq!(dest(None, "::1", Some(80)), "[::1]:80");
        assert_eq!(dest(None, "/run/nscd/socket", None), "/run/nscd/socket");
    }

    #[test]
    fn history_is_bounded_newest_first() {
        let now = Instant::now();
        let mut m = Model::default();
        for i in 0..HISTORY + 20 {
            m.apply(open_event(1, &format!("p{i}")), now);
        }
        assert_eq!(m.reads().count(), HISTORY);
        assert_eq!(m.reads().next().unwrap().comm, format!("p{}", HISTORY + 19));
        assert_eq!(m.reads().last().unwrap().comm, "p20");
    }

    #[test]
    fn tree_indents_children_and_keeps_orphans() {
        let procs = vec![
            process(300, 999, "orphan", &[]), // its parent exited
            process(102, 101, "cat", &[]),
            process(100, 1, "claude", &[]),
            process(101, 100, "bash", &[]),
            process(103, 100, "node", &[]),
            process(104, 101, "sleep", &[]),
            // A parent cycle from pid reuse: shown flat, not lost.
            process(500, 501, "x", &[]),
            process(501, 500, "y", &[]),
        ];
        let tree: Vec<(usize, u32)> = process_tree(&procs, 100)
            .into_iter()
            .map(|(d, p)| (d, p.pid))
            .collect();
        assert_eq!(
            tree,
            [
                (0, 100),
                (1, 101),
                (2, 102),
                (2, 104),
                (1, 103),
                (0, 300),
                (0, 500),
                (1, 501),
            ]
        );
        let orphans = vec![process(7, 6, "a", &[]), process(5, 4, "b", &[])];
        let tree: Vec<(usize, u32)> = process_tree(&orphans, 100)
            .into_iter()
            .map(|(d, p)| (d, p.pid))
            .collect();
        assert_eq!(tree, [(0, 5), (0, 7)]);
    }

    #[test]
    fn filter_follows_the_selected_session() {
        let now = Instant::now();
        let mut m = Model::default();
        m.apply(Response::Status(status()), now);
        // Sorted by id; the first is selected.
        assert_eq!(m.selected_session, Some(1));
        m.apply(open_event(1, "cat"), now);
        m.apply(open_event(2, "head"), now);
        m.apply(alert_event(2), now);
        m.key(key(KeyCode::Down), now);
        assert_eq!(m.selected_session, Some(2));
        m.key(key(KeyCode::Down), now); // stays at the end
        assert_eq!(m.selected_session, Some(2));
        m.key(key(KeyCode::Char('s')), now);
        assert_eq!(m.filter, Some(2));
        assert_eq!(
            m.reads().map(|r| r.comm.as_str()).collect::<Vec<_>>(),
            ["head"]
        );
        assert_eq!(m.alerts().count(), 1);
        m.key(key(KeyCode::Up), now);
        m.key(key(KeyCode::Char('s')), now);
        assert_eq!(m.filter, None);
        assert_eq!(m.reads().count(), 2);
        m.key(key(KeyCode::Char('s')), now);
        assert_eq!(m.filter, Some(1));
        assert_eq!(m.alerts().count(), 0);
        assert_eq!(m.message(now).unwrap().text, "showing session 1 only");
    }

    #[test]
    fn pending_counts_down_and_is_decided_by_key() {
        let t0 = Instant::now();
        let mut m = Model::default();
        assert_eq!(m.key(key(KeyCode::Char('a')), t0), None);
        assert!(m.message(t0).unwrap().error);
        m.apply(
            Response::Pending {
                pending: vec![pending_request(9, 30), pending_request(4, 5)],
            },
            t0,
        );
        assert_eq!(m.selected_pending, Some(4));
        assert_eq!(Model::expires_in(&m.pending[1], t0), 30);
        assert_eq!(
            Model::expires_in(&m.pending[1], t0 + Duration::from_millis(12_500)),
            18
        );
        assert_eq!(
            Model::expires_in(&m.pending[0], t0 + Duration::from_secs(60)),
            0
        );

        // ↑/↓ move in the pending pane once it has the focus.
        m.key(key(KeyCode::Tab), t0);
        assert_eq!(m.focus, Pane::Pending);
        m.key(key(KeyCode::Down), t0);
        assert_eq!(m.selected_pending, Some(9));
        assert_eq!(
            m.key(key(KeyCode::Char('a')), t0),
            Some(Command::Approve(9))
        );
        m.apply(
            Response::Done {
                message: "approved".into(),
            },
            t0,
        );
        let msg = m.message(t0).unwrap();
        assert_eq!((msg.text.as_str(), msg.error), ("approved", false));
        assert!(m.message(t0 + MESSAGE_FOR).is_none());

        // A poll without 9 moves the selection to what is left.
        m.apply(
            Response::Pending {
                pending: vec![pending_request(4, 3)],
            },
            t0,
        );
        assert_eq!(m.selected_pending, Some(4));
    }

    #[test]
    fn deny_and_kill_wait_for_y_and_anything_else_cancels() {
        let now = Instant::now();
        let mut m = Model::default();
        assert_eq!(m.key(key(KeyCode::Char('d')), now), None);
        assert_eq!(m.confirm, None);
        assert!(m.message(now).unwrap().error);
        m.apply(Response::Status(status()), now);
        m.apply(
            Response::Pending {
                pending: vec![pending_request(9, 30)],
            },
            now,
        );

        assert_eq!(m.key(key(KeyCode::Char('d')), now), None);
        assert_eq!(m.confirm.unwrap().prompt(), "deny request 9? y/n");
        // Not even `q` acts while the question is up: it answers no.
        assert_eq!(m.key(key(KeyCode::Char('q')), now), None);
        assert_eq!(m.confirm, None);
        assert_eq!(m.message(now).unwrap().text, "request 9 not denied");
        m.key(key(KeyCode::Char('d')), now);
        assert_eq!(m.key(key(KeyCode::Char('y')), now), Some(Command::Deny(9)));
        assert_eq!(m.confirm, None);

        // Session 1 is stopped for request 9: killing it denies that.
        assert_eq!(m.selected_session, Some(1));
        m.key(KeyEvent::new(KeyCode::Char('K'), KeyModifiers::SHIFT), now);
        assert_eq!(m.confirm.unwrap().prompt(), "kill session 1? y/n");
        assert_eq!(m.key(key(KeyCode::Enter), now), None);
        assert_eq!(m.message(now).unwrap().text, "session 1 not killed");
        assert!(!m.detail_open, "the answer is not also a key");
        m.key(key(KeyCode::Char('K')), now);
        assert_eq!(m.key(key(KeyCode::Char('y')), now), Some(Command::Deny(9)));
        // Session 2 waits for nothing.
        m.key(key(KeyCode::Char('j')), now);
        assert_eq!(m.selected_session, Some(2));
        m.key(key(KeyCode::Char('K')), now);
        assert_eq!(m.confirm, None);
        assert!(m.message(now).unwrap().error);
    }

    #[test]
    fn vi_arrow_and_page_keys_move_the_selection_which_stays_on_its_row() {
        let now = Instant::now();
        let mut m = Model::default();
        for session in 0..25 {
            m.apply(alert_event(session), now);
        }
        m.key(key(KeyCode::Tab), now);
        m.key(key(KeyCode::Tab), now);
        assert_eq!(m.focus, Pane::Alerts);
        let session_at = |m: &Model| {
            m.alerts()
                .nth(m.selected_row(Pane::Alerts).unwrap())
                .unwrap()
                .session
        };
        // Newest first, the newest selected.
        assert_eq!(session_at(&m), 24);
        for (code, row) in [
            (KeyCode::Char('j'), 1),
            (KeyCode::Down, 2),
            (KeyCode::Char('k'), 1),
            (KeyCode::PageDown, 11),
            (KeyCode::PageDown, 21),
            (KeyCode::PageDown, 24),
            (KeyCode::PageUp, 14),
            (KeyCode::Char('g'), 0),
            (KeyCode::Up, 0),
            (KeyCode::Char('G'), 24),
            (KeyCode::Home, 0),
            (KeyCode::End, 24),
        ] {
            m.key(key(code), now);
            assert_eq!(m.selected_row(Pane::Alerts), Some(row), "{code:?}");
        }
        m.key(key(KeyCode::Char('g')), now);
        m.key(key(KeyCode::Char('j')), now);
        assert_eq!(session_at(&m), 23);
        // A newer alert pushes the rows down; the selection stays on session 23's.
        m.apply(alert_event(99), now);
        assert_eq!(m.selected_row(Pane::Alerts), Some(2));
        assert_eq!(session_at(&m), 23);
    }

    #[test]
    fn enter_shows_the_selected_rows_details_in_full() {
        let now = Instant::now();
        let mut m = Model::default();
        m.apply(Response::Status(status()), now);
        let mut request = pending_request(9, 30);
        request.pid = 103;
        request.operation = Some("GraphQL mutation volumeDelete on Railway (destructive)".into());
        m.apply(
            Response::Pending {
                pending: vec![request],
            },
            now,
        );
        m.apply(alert_event(1), now);
        assert_eq!(m.detail(now), None);

        m.key(key(KeyCode::Tab), now); // Pending
        m.key(key(KeyCode::Enter), now);
        let detail = m.detail(now).unwrap();
        assert_eq!(detail.title, "request 9");
        let field = |d: &Detail, label: &str| {
            d.fields
                .iter()
                .find(|(l, _)| *l == label)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {label} in {d:?}"))
        };
        assert_eq!(
            field(&detail, "host"),
            "backboard.railway.app:443 (127.0.0.2)"
        );
        assert_eq!(
            field(&detail, "operation"),
            "GraphQL mutation volumeDelete on Railway (destructive)"
        );
        assert_eq!(
            field(&detail, "credential"),
            "railway: /home/u/.railway/config.json"
        );
        // From the alert that opened the request.
        assert_eq!(field(&detail, "ancestry"), "101 bash: bash -c deploy");

        // Tab moves on with the details open: the alert's.
        m.key(key(KeyCode::Tab), now);
        let detail = m.detail(now).unwrap();
        assert_eq!(detail.title, "alert in session 1");
        assert_eq!(
            field(&detail, "host"),
            "backboard.railway.app:443 (127.0.0.2)"
        );
        assert_eq!(field(&detail, "operation"), "connect");
        assert_eq!(
            field(&detail, "credential"),
            "railway: /home/u/.railway/config.json"
        );
        assert_eq!(
            field(&detail, "read"),
            "2026-11-27T15:06:03.450Z by 102 cat"
        );
        assert_eq!(field(&detail, "ancestry"), "101 bash: bash -c deploy");
        assert_eq!(detail.fields.last().unwrap().1, "100 claude: claude");

        // Esc closes the details, then quits.
        assert_eq!(m.key(key(KeyCode::Esc), now), None);
        assert_eq!(m.detail(now), None);
        assert_eq!(m.key(key(KeyCode::Esc), now), Some(Command::Quit));
    }

    #[test]
    fn question_mark_opens_help_and_any_key_closes_it() {
        let now = Instant::now();
        let mut m = Model::default();
        m.key(key(KeyCode::Char('?')), now);
        assert!(m.help_open);
        assert_eq!(m.key(key(KeyCode::Char('q')), now), None);
        assert!(!m.help_open);
        assert_eq!(m.key(key(KeyCode::Char('q')), now), Some(Command::Quit));
    }

    #[test]
    fn keys_cycle_panes_and_quit() {
        let now = Instant::now();
        let mut m = Model::default();
        m.key(key(KeyCode::Left), now);
        assert_eq!((m.focus, m.tab), (Pane::Reads, Pane::Reads));
        m.key(key(KeyCode::Right), now);
        assert_eq!((m.focus, m.tab), (Pane::Sessions, Pane::Reads));
        for _ in 0..3 {
            m.key(key(KeyCode::Tab), now);
        }
        assert_eq!((m.focus, m.tab), (Pane::Connections, Pane::Connections));
        assert_eq!(m.key(key(KeyCode::Char('q')), now), Some(Command::Quit));
        assert_eq!(m.key(key(KeyCode::Esc), now), Some(Command::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(m.key(ctrl_c, now), Some(Command::Quit));
    }
}
