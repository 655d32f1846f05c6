//! What `agentwatch top` shows, and how keys change it: kept apart from the
//! terminal and the socket so it can be tested on its own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use agentwatch_common::names::Action;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::control::protocol::{PendingRequest, ProcessInfo, Response, SessionInfo, Status};
use crate::event::{Body, Event};

/// Entries kept of each history (reads, connections, alerts).
pub const HISTORY: usize = 500;
/// How long a footer message stays up.
const MESSAGE_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    pub ts: SystemTime,
    pub session: u32,
    pub comm: String,
    pub path: String,
    pub credentials: Vec<String>,
}

pub struct Connection {
    pub ts: SystemTime,
    pub session: u32,
    pub comm: String,
    pub dest: String,
    pub ret: i64,
}

pub struct Alert {
    pub ts: SystemTime,
    pub session: u32,
    pub action: Action,
    pub comm: String,
    pub dest: String,
    pub provider: String,
    pub source: String,
}

trait InSession {
    fn session(&self) -> u32;
}

impl InSession for CredRead {
    fn session(&self) -> u32 {
        self.session
    }
}

impl InSession for Connection {
    fn session(&self) -> u32 {
        self.session
    }
}

impl InSession for Alert {
    fn session(&self) -> u32 {
        self.session
    }
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
    /// Show only this session's reads, connections and alerts.
    pub filter: Option<u32>,
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
            filter: None,
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
            // `top` never asks Why.
            Response::End | Response::Live | Response::Refusal { .. } => {}
        }
    }

    /// Credential reads, connections and alerts go to their histories. Pending requests come
    /// from the 1 s poll instead: a replayed request event may be long resolved.
    fn event(&mut self, event: Event) {
        let Event {
            ts,
            session,
            comm,
            body,
            ..
        } = event;
        match body {
            Body::Open(open) if !open.credentials.is_empty() => push(
                &mut self.reads,
                CredRead {
                    path: if open.resolved.is_empty() {
                        open.path
                    } else {
                        open.resolved
                    },
                    ts,
                    session,
                    comm,
                    credentials: open.credentials,
                },
            ),
            Body::Connect(connect) => push(
                &mut self.connections,
                Connection {
                    dest: dest(connect.host.as_deref(), &connect.addr, connect.port),
                    ts,
                    session,
                    comm,
                    ret: connect.ret,
                },
            ),
            Body::Alert(alert) => push(
                &mut self.alerts,
                Alert {
                    dest: dest(alert.host.as_deref(), &alert.addr, Some(alert.port)),
                    source: alert.credential.map(|c| c.source).unwrap_or_default(),
                    ts,
                    session,
                    action: alert.action,
                    comm,
                    provider: alert.provider.unwrap_or_default(),
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
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Command::Quit),
            // Raw mode turns Ctrl-C into a key.
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Some(Command::Quit);
            }
            KeyCode::Tab | KeyCode::Right => self.cycle(1),
            KeyCode::BackTab | KeyCode::Left => self.cycle(PANES.len() - 1),
            KeyCode::Up => self.step(false),
            KeyCode::Down => self.step(true),
            KeyCode::Char('a') => return self.decide(true, now),
            KeyCode::Char('d') => return self.decide(false, now),
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

    fn step(&mut self, down: bool) {
        match self.focus {
            Pane::Sessions => {
                let ids: Vec<u32> = self.sessions().iter().map(|s| s.id).collect();
                self.selected_session = stepped(&ids, self.selected_session, down);
            }
            Pane::Pending => {
                let ids: Vec<u64> = self.pending.iter().map(|p| p.request.id).collect();
                self.selected_pending = stepped(&ids, self.selected_pending, down);
            }
            _ => {}
        }
    }

    fn decide(&mut self, approve: bool, now: Instant) -> Option<Command> {
        let verb = if approve { "approve" } else { "deny" };
        let Some(id) = self.selected_pending else {
            self.say(format!("no pending request to {verb}"), true, now);
            return None;
        };
        self.say(format!("{verb} request {id}…"), false, now);
        Some(if approve {
            Command::Approve(id)
        } else {
            Command::Deny(id)
        })
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

fn push<T>(history: &mut VecDeque<T>, item: T) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(item);
}

fn newest<T: InSession>(history: &VecDeque<T>, filter: Option<u32>) -> impl Iterator<Item = &T> {
    history
        .iter()
        .rev()
        .filter(move |e| filter.is_none_or(|s| e.session() == s))
}

/// The id before or after `current` in `ids`, staying at the ends.
fn stepped<T: Copy + PartialEq>(ids: &[T], current: Option<T>, down: bool) -> Option<T> {
    let at = current.and_then(|c| ids.iter().position(|id| *id == c));
    let next = match (at, down) {
        (None, _) => 0,
        (Some(i), true) => (i + 1).min(ids.len().saturating_sub(1)),
        (Some(i), false) => i.saturating_sub(1),
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
            "ancestry":[{"pid":101,"comm":"bash","argv":["bash"]}]}),
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
        assert_eq!(alerts[0].source, "/home/u/.railway/config.json");

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
        assert_eq!(m.key(key(KeyCode::Char('d')), t0), Some(Command::Deny(9)));
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
