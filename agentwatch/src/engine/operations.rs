//! Judging what a stopped call does. The kernel stopped the writer of a
//! tainted session's TLS request before encryption, or a cataloged command
//! before its first instruction; here the request or argv is classified
//! against the policy's operation catalog and the process is resumed,
//! refused or left for the session's action (kill, ask). Until this runs the
//! process stays stopped, so nothing here races the call.

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use agentwatch_common::names::{NameSource, OperationClass, OperationKind, TlsProbeState};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::warn;

use super::Core;
use crate::{
    decode::TlsWrite,
    event::{Alert, Body, Event, Exec, OperationCall, OperationDecision, OperationSeen},
    kernel::probes::Probes,
    operation::{Catalog, HTTP2_PREFACE, Http2Connection, Operation, Request, parse_pipelined},
    policy::{Action, Policy},
};

/// Request heads awaiting their body, and HTTP/2 connections followed,
/// each kept at most this many (the oldest goes first): a client that
/// writes a head and never its body leaves one.
const HEADS_CAP: usize = 1024;
/// Bytes of a body kept across writes.
const BODY_CAP: usize = 64 << 10;

/// What is known of each connection between writes, by (pid, `SSL *`):
/// HTTP/1 requests whose head was written apart from their body, and the
/// HTTP/2 connections seen from their preface on.
#[derive(Default)]
pub struct RequestHeads {
    heads: Bounded<Request>,
    http2: Bounded<Http2Connection>,
}

/// A map by (pid, `SSL *`) of at most HEADS_CAP entries, the oldest
/// dropped first.
struct Bounded<V> {
    entries: HashMap<(u32, u64), (u64, V)>,
    next: u64,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            next: 0,
        }
    }
}

impl<V> Bounded<V> {
    fn insert(&mut self, key: (u32, u64), value: V) {
        if self.entries.len() >= HEADS_CAP
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(key, _)| *key)
        {
            self.entries.remove(&oldest);
        }
        self.next += 1;
        self.entries.insert(key, (self.next, value));
    }

    fn remove(&mut self, key: &(u32, u64)) -> Option<V> {
        self.entries.remove(key).map(|(_, value)| value)
    }

    fn get_mut(&mut self, key: &(u32, u64)) -> Option<&mut V> {
        self.entries.get_mut(key).map(|(_, value)| value)
    }
}

impl RequestHeads {
    /// What `write` shows: requests to judge, or nothing yet (a head whose
    /// body is still to come goes, and the body is judged with it; frames
    /// that carry no request).
    fn requests(&mut self, write: &TlsWrite) -> Seen {
        let key = (write.pid, write.ssl);
        // Bytes of the write beyond what the kernel's bound let it copy.
        let unseen = (write.len as usize).saturating_sub(write.data.len());
        let cut = (unseen > 0).then_some(unseen);
        if let Some(frames) = write.data.strip_prefix(HTTP2_PREFACE) {
            let mut connection = Http2Connection::new();
            let seen = http2_requests(&mut connection, frames, cut);
            self.http2.insert(key, connection);
            return seen;
        }
        if let Some(connection) = self.http2.get_mut(&key) {
            return http2_requests(connection, &write.data, cut);
        }
        let mut requests = match parse_pipelined(&write.data) {
            Ok(requests) => {
                self.heads.remove(&key);
                requests
            }
            Err(_) => {
                let Some(mut request) = self.heads.remove(&key) else {
                    // An HTTP/2 request on a connection whose start went by
                    // unseen (before the session held a credential): its
                    // headers cannot be read.
                    if Http2Connection::looks_like_a_request(&write.data) {
                        return Seen::Requests(vec![Request::unreadable(None)]);
                    }
                    return Seen::Nothing;
                };
                let room = BODY_CAP.saturating_sub(request.body.len());
                let taken = body_missing(&request)
                    .unwrap_or(usize::MAX)
                    .min(room)
                    .min(write.data.len());
                request.body.extend_from_slice(&write.data[..taken]);
                request.body_complete = body_complete(&request);
                let after = &write.data[taken..];
                let mut requests = vec![request];
                // What follows the body: the next requests, pipelined.
                if requests[0].body_complete && !after.is_empty() {
                    let host = requests[0].host.clone();
                    requests.extend(
                        parse_pipelined(after).unwrap_or_else(|_| vec![Request::unreadable(host)]),
                    );
                }
                requests
            }
        };
        // A body cut by the kernel's bound is judged with what it shows.
        if let Some(last) = requests.last()
            && !last.body_complete
            && cut.is_none()
            && last.body.len() < BODY_CAP
        {
            let last = requests.pop().expect("a last request");
            self.heads.insert(key, last);
        }
        // Past the bound, more than the last request's body may follow: a
        // request pipelined after it, which cannot be read.
        if let Some(last) = requests.last()
            && cut.is_some_and(|unseen| unseen > body_missing(last).unwrap_or(0))
        {
            let host = last.host.clone();
            requests.push(Request::unreadable(host));
        }
        if requests.is_empty() {
            return Seen::Nothing;
        }
        Seen::Requests(requests)
    }
}

/// The requests the next write on an HTTP/2 connection completes. Frames
/// that cannot be read leave the connection's later requests unreadable:
/// one request whose operation cannot be seen stands for them.
fn http2_requests(connection: &mut Http2Connection, frames: &[u8], cut: Option<usize>) -> Seen {
    match connection.requests(frames, cut) {
        Ok(requests) if requests.is_empty() => Seen::Nothing,
        Ok(requests) => Seen::Requests(requests),
        Err(error) => {
            warn!("an HTTP/2 connection's writes cannot be read: {error}");
            Seen::Requests(vec![connection.unreadable()])
        }
    }
}

enum Seen {
    Requests(Vec<Request>),
    Nothing,
}

/// Whether the body holds all its `Content-Length` says.
fn body_complete(request: &Request) -> bool {
    body_missing(request) == Some(0)
}

/// Bytes of the body its `Content-Length` says are still to come.
fn body_missing(request: &Request) -> Option<usize> {
    request
        .header("content-length")
        .and_then(|len| len.trim().parse::<usize>().ok())
        .map(|len| len.saturating_sub(request.body.len()))
}

/// What the policy does with an operation of `class` in a session acting
/// with `session_action`: reads pass, destructive calls get the session's
/// action, the rest what the policy chose.
pub fn decide(class: OperationClass, session_action: Action, policy: &Policy) -> OperationDecision {
    match class {
        OperationClass::Reads => OperationDecision::Pass,
        OperationClass::Changes => OperationDecision::Action(policy.changes),
        OperationClass::Unknown => OperationDecision::Action(policy.unknown_operation),
        OperationClass::Destructive => OperationDecision::Action(session_action),
    }
}

/// Which processes need `SSL_write` (or Go `crypto/tls`) probes.
pub enum TlsProcessChange {
    /// The kernel stopped a session's process at its first use of OpenSSL.
    Started(u32),
    /// A session's process started a new program (at this path, when it
    /// was given whole), which may be a Go one.
    Executed(u32, Option<PathBuf>),
    /// A session's process exited.
    Exited(u32),
}

impl Core {
    /// Attaches a started process's `SSL_write` probes (or says it cannot
    /// be probed, so the kernel judges its calls by host) and resumes it;
    /// detaches an exited one's.
    pub(super) fn apply_tls_change(&mut self, probes: &mut Probes, change: TlsProcessChange) {
        match change {
            TlsProcessChange::Started(pid) => {
                let probed = self
                    .probe_go(probes, pid, None)
                    .and_then(|_| probes.probe_tls_process(pid));
                self.judged_at_writes(pid, probed);
                resume(pid);
            }
            // A Go program: until now its calls were judged by host; from
            // now on by what they do.
            TlsProcessChange::Executed(pid, program) => {
                let probed = match self.probe_go(probes, pid, program.as_deref()) {
                    Ok(false) => return,
                    Ok(true) => probes.probe_tls_process(pid),
                    Err(error) => Err(error),
                };
                // Unprobed, it stays as the kernel has it: judged by host.
                match probed {
                    Ok(()) => self.set_tls_state(pid, TlsProbeState::Probed),
                    Err(error) => self.unprobed(pid, &error),
                }
            }
            TlsProcessChange::Exited(pid) => {
                self.go_tls.remove(&pid);
                probes.forget_tls_process(pid);
            }
        }
    }

    /// Attaches the Go write probe if process `pid` runs a Go program
    /// (learning `program`, the path it exec'd, for its later runs);
    /// whether it does.
    fn probe_go(
        &mut self,
        probes: &mut Probes,
        pid: u32,
        program: Option<&Path>,
    ) -> anyhow::Result<bool> {
        let go = probes.probe_go_process(pid, program);
        if matches!(go, Ok(true)) {
            self.go_tls.insert(pid);
        } else {
            self.go_tls.remove(&pid);
        }
        go
    }

    /// Tells the kernel whether process `pid`'s TLS requests are judged at
    /// its writes from now on, or (its probes failed) by host.
    fn judged_at_writes(&mut self, pid: u32, probed: anyhow::Result<()>) {
        let state = match probed {
            Ok(()) => TlsProbeState::Probed,
            Err(error) => {
                self.unprobed(pid, &error);
                TlsProbeState::Unprobed
            }
        };
        self.set_tls_state(pid, state);
    }

    /// Says, and counts, that process `pid`'s probes could not be attached.
    fn unprobed(&mut self, pid: u32, error: &anyhow::Error) {
        warn!("pid {pid}'s TLS requests are judged by host: {error:#}");
        self.tls_unprobed += 1;
    }

    fn set_tls_state(&mut self, pid: u32, state: TlsProbeState) {
        // Left `Pending` if this fails, which the kernel also judges by host.
        if let Err(error) = self.maps.set_tls_state(pid, state) {
            warn!("{error:#}");
        }
    }

    /// A tainted session's TLS write, or one the scan fence stopped; its
    /// writer is stopped. A fenced write waits for its session's scans and
    /// is then judged with what they found. Every request it completes is
    /// judged, and the write gets the strictest decision.
    pub(super) fn tls_write(&mut self, mut write: TlsWrite, out: &mut Vec<Event>) {
        if write.held == 0 {
            let Some(ready) = self.fence.wait(write) else {
                return;
            };
            write = TlsWrite {
                held: self.maps.credentials_held(ready.session),
                ..ready
            };
            if write.held == 0 {
                // The scans found nothing to misuse: the write is read only
                // for its connection's state (HTTP/2's header table).
                let _ = self.heads.requests(&write);
                resume(write.pid);
                return;
            }
        }
        let Seen::Requests(requests) = self.heads.requests(&write) else {
            // Not a request (TLS records of another protocol), a head whose
            // body follows, or frames that carry no request: nothing names
            // an operation yet.
            resume(write.pid);
            return;
        };
        let session_action = self.session_action(write.session);
        let judged: Vec<(OperationCall, u64)> = requests
            .into_iter()
            .filter_map(|request| self.judge_request(&write, request, session_action))
            .collect();
        let strictest = judged
            .iter()
            .map(|(call, _)| call.decision)
            .max_by_key(|decision| decision.strictness())
            .unwrap_or(OperationDecision::Pass);
        match strictest {
            OperationDecision::Pass
            | OperationDecision::Action(Action::Observe | Action::Alert) => resume(write.pid),
            // A Go program's goroutine may make the socket write on another
            // thread than the one refused: it dies instead.
            OperationDecision::Action(Action::Block) if self.go_tls.contains(&write.pid) => {
                let _ = kill(Pid::from_raw(write.pid as i32), Signal::SIGKILL);
            }
            OperationDecision::Action(Action::Block) => {
                if let Err(error) = self.maps.refuse_writer(write.pid, write.tid) {
                    // Cannot refuse at the socket: the writer dies instead.
                    warn!("{error:#}");
                    let _ = kill(Pid::from_raw(write.pid as i32), Signal::SIGKILL);
                }
                resume(write.pid);
            }
            // The responder kills the session, or asks with the writer stopped.
            OperationDecision::Action(Action::Kill | Action::Ask) => {}
        }
        let ppid = self.enrich.procs.get(write.pid).map_or(0, |p| p.ppid);
        for (call, held) in judged {
            let event = Event {
                ts: write.ts,
                session: write.session,
                pid: write.pid,
                tid: write.tid,
                ppid,
                uid: write.uid,
                comm: write.comm.clone(),
                body: Body::Operation(call),
            };
            self.report(event, held, out);
        }
    }

    /// What one request of a tainted session does, and what the policy
    /// decides of it; None for a request to a host none of the session's
    /// credentials count against. Also the classes that counted.
    fn judge_request(
        &self,
        write: &TlsWrite,
        request: Request,
        session_action: Action,
    ) -> Option<(OperationCall, u64)> {
        let (operation, held) = match request.host.as_deref() {
            Some(host) => {
                let domain = self
                    .enrich
                    .tables
                    .lookup(host)
                    .filter(|d| write.held & d.host.classes & !d.host.allowed != 0)?;
                let operation = if request.method.is_empty() {
                    unreadable(&request)
                } else {
                    Catalog::new(&self.policy).classify_request(&domain.provider, &request)
                };
                (operation, write.held & domain.host.classes)
            }
            // A request that does not say where it goes (an HTTP/2 header
            // block that could not be read): it may be an infrastructure
            // call, and what it does cannot be judged.
            None => (unreadable(&request), write.held),
        };
        let decision = decide(operation.class, session_action, &self.policy);
        Some((
            OperationCall {
                seen: OperationSeen::Tls,
                operation,
                decision,
                host: request.host,
            },
            held,
        ))
    }

    /// A cataloged command the kernel stopped at exec.
    /// `event` is its exec event, which goes out first.
    pub(super) fn held_command(&mut self, event: Event, out: &mut Vec<Event>) {
        let Body::Exec(exec) = &event.body else {
            out.push(event);
            return;
        };
        let catalog = Catalog::new(&self.policy);
        let Some(operation) = catalog.classify_command(command_line(exec)) else {
            resume(event.pid);
            out.push(event);
            return;
        };
        let decision = decide(
            operation.class,
            self.session_action(event.session),
            &self.policy,
        );
        let provider_class = operation
            .provider
            .as_ref()
            .and_then(|p| self.policy.class_of_provider(&p.id))
            .map_or(0, |class| 1u64 << class);
        // A tool whose requests cannot be read (the provider CLIs) is
        // granted its provider's credential; an HTTP client's requests are
        // judged again as they are written.
        let grant = if operation.kind == OperationKind::Command {
            provider_class
        } else {
            0
        };
        match decision {
            OperationDecision::Pass
            | OperationDecision::Action(Action::Observe | Action::Alert) => {
                // It may call its own provider with the credential it reads.
                if grant != 0
                    && let Err(error) = self.maps.grant_command(event.pid, grant)
                {
                    warn!("{error:#}");
                }
                resume(event.pid);
            }
            OperationDecision::Action(Action::Block) => {
                refuse_command(event.pid, &operation);
            }
            OperationDecision::Action(Action::Kill | Action::Ask) => {}
        }
        let call = OperationCall {
            seen: OperationSeen::Exec,
            operation,
            decision,
            host: None,
        };
        let judged = Event {
            body: Body::Operation(call),
            ..event.clone()
        };
        out.push(event);
        self.report(judged, provider_class, out);
    }

    fn session_action(&self, session: u32) -> Action {
        self.maps
            .session(session)
            .and_then(|state| Action::try_from(state.action).ok())
            .unwrap_or(self.policy.action)
    }

    /// An operation event for every judged call, and an alert for those an
    /// action was taken on (observe records only); `held` are the classes
    /// that counted.
    fn report(&mut self, event: Event, held: u64, out: &mut Vec<Event>) {
        let Body::Operation(call) = &event.body else {
            return;
        };
        let alert = match call.decision {
            OperationDecision::Action(action) if action != Action::Observe => {
                Some(self.operation_alert(&event, call, action, held))
            }
            _ => None,
        };
        out.push(event);
        out.extend(alert);
    }

    fn operation_alert(
        &self,
        base: &Event,
        call: &OperationCall,
        action: Action,
        held: u64,
    ) -> Event {
        let alert = Alert {
            action,
            host: call.host.clone(),
            learned: (call.seen == OperationSeen::Tls).then_some(NameSource::Host),
            addr: String::new(),
            port: 0,
            provider: call.operation.provider.as_ref().map(|p| p.id.clone()),
            credential: self.enrich.credentials.latest(base.session, held).cloned(),
            credentials: self.enrich.tables.class_names(held),
            ancestry: self.enrich.procs.ancestry(base.pid, &base.comm),
            operation: Some(call.operation.clone()),
            seen: Some(call.seen),
        };
        Event {
            ts: SystemTime::now(),
            body: Body::Alert(alert),
            ..base.clone()
        }
    }
}

/// A request whose host or headers cannot be read: what it does is unknown.
fn unreadable(request: &Request) -> Operation {
    let name = if request.method.is_empty() {
        "HTTP/2 request (headers not readable)".to_string()
    } else {
        format!("{} {} (host not visible)", request.method, request.path())
    };
    Operation {
        kind: OperationKind::Http,
        name,
        class: OperationClass::Unknown,
        provider: None,
    }
}

/// The command line as the tool sees it: a script run through its
/// interpreter (`/bin/sh ./terraform destroy`) from the script's own path on.
fn command_line(exec: &Exec) -> &[String] {
    let script = Path::new(&exec.filename).file_name();
    let start = exec
        .argv
        .iter()
        .position(|arg| *arg == exec.filename || Path::new(arg).file_name() == script)
        .unwrap_or(0);
    &exec.argv[start..]
}

fn resume(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
}

/// A refused command never runs: it is told why on its own stderr, then
/// killed while still stopped before its first instruction.
fn refuse_command(pid: u32, operation: &Operation) {
    let message = format!(
        "agentwatch: refused {}: this session may not run it; a human must approve it \
         (`agentwatch why` explains)\n",
        operation.with_class()
    );
    let stderr = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/proc/{pid}/fd/2"));
    if let Ok(mut stderr) = stderr {
        let _ = stderr.write_all(message.as_bytes());
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::frame;

    fn write(ssl: u64, data: &[u8]) -> TlsWrite {
        TlsWrite {
            ts: SystemTime::UNIX_EPOCH,
            session: 1,
            pid: 7,
            tid: 7,
            uid: 0,
            comm: "python3".into(),
            ssl,
            held: 1,
            len: data.len() as u32,
            data: data.to_vec(),
        }
    }

    #[test]
    fn reads_pass_destructive_calls_get_the_sessions_action_and_the_rest_the_policys() {
        let policy = Policy::builtin();
        let decide = |class| decide(class, Action::Kill, &policy);
        assert_eq!(decide(OperationClass::Reads), OperationDecision::Pass);
        assert_eq!(
            decide(OperationClass::Destructive),
            OperationDecision::Action(Action::Kill)
        );
        assert_eq!(
            decide(OperationClass::Changes),
            OperationDecision::Action(policy.changes)
        );
        assert_eq!(
            decide(OperationClass::Unknown),
            OperationDecision::Action(policy.unknown_operation)
        );
    }

    /// The one request `seen` holds.
    fn one(seen: Seen) -> Request {
        match seen {
            Seen::Requests(mut requests) if requests.len() == 1 => requests.remove(0),
            Seen::Requests(requests) => panic!("{} requests", requests.len()),
            Seen::Nothing => panic!("no request"),
        }
    }

    #[test]
    fn a_head_written_apart_from_its_body_is_judged_with_the_body() {
        let mut heads = RequestHeads::default();
        let head = b"POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\n\
            Content-Type: application/json\r\nContent-Length: 43\r\n\r\n";
        assert!(matches!(heads.requests(&write(1, head)), Seen::Nothing));
        // Another connection's writes do not complete it.
        assert!(matches!(heads.requests(&write(2, b"{}")), Seen::Nothing));
        let body = br#"{"query":"mutation { volumeDelete(x: 1) }"}"#;
        assert_eq!(body.len(), 43);
        let request = one(heads.requests(&write(1, body)));
        assert!(request.body_complete);
        assert_eq!(request.host.as_deref(), Some("backboard.railway.app"));
        assert!(matches!(heads.requests(&write(1, b"more")), Seen::Nothing));
    }

    #[test]
    fn every_request_pipelined_in_one_write_is_judged() {
        let mut heads = RequestHeads::default();
        let body = br#"{"query":"mutation { volumeDelete(x: 1) }"}"#;
        let mut pipelined =
            b"GET /graphql/v2?query=me HTTP/1.1\r\nHost: backboard.railway.app\r\n\r\n\
            POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\n\
            Content-Type: application/json\r\nContent-Length: 43\r\n\r\n"
                .to_vec();
        pipelined.extend_from_slice(body);
        pipelined.extend_from_slice(b"\r\n");
        let Seen::Requests(requests) = heads.requests(&write(1, &pipelined)) else {
            panic!("no requests");
        };
        let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(methods, ["GET", "POST"]);
        assert_eq!(requests[1].body, body);
        // After a body completed in a later write, what follows is read too.
        let head = b"POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\n\
            Content-Length: 43\r\n\r\n";
        assert!(matches!(heads.requests(&write(2, head)), Seen::Nothing));
        let mut rest = body.to_vec();
        rest.extend_from_slice(b"\x00 not a request");
        let Seen::Requests(requests) = heads.requests(&write(2, &rest)) else {
            panic!("no requests");
        };
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(
            requests[1].method.is_empty(),
            "unreadable: {:?}",
            requests[1]
        );
        assert_eq!(requests[1].host.as_deref(), Some("backboard.railway.app"));
    }

    #[test]
    fn a_write_that_is_no_request_shows_nothing() {
        let mut heads = RequestHeads::default();
        assert!(matches!(
            heads.requests(&write(1, b"\x16\x03\x01 binary")),
            Seen::Nothing
        ));
    }

    /// A POST on `stream` to backboard.railway.app, as nghttp2 encodes it:
    /// the first of a connection names its `:authority` and adds it to the
    /// dynamic table; the later ones refer to that entry (index 62). Its
    /// HEADERS (END_HEADERS) and, when `body` is given, its DATA (END_STREAM).
    fn http2_post(first: bool, stream: u32, path: &str, body: Option<&str>) -> Vec<u8> {
        // :method POST, :scheme https (static entries 3 and 7).
        let mut block = vec![0x83, 0x87];
        if first {
            let host = b"backboard.railway.app";
            block.extend([0x41, host.len() as u8]);
            block.extend(host);
        } else {
            block.push(0x80 | 62);
        }
        // :path, a literal not indexed (static name 4).
        block.extend([0x04, path.len() as u8]);
        block.extend(path.as_bytes());
        let mut out = frame(0x1, 0x4, stream, &block);
        if let Some(body) = body {
            out.extend(frame(0x0, 0x1, stream, body.as_bytes()));
        }
        out
    }

    const QUERY: &str = r#"{"query":"query { me { id } }"}"#;
    const DELETION: &str = r#"{"query":"mutation { volumeDelete(volumeId: \"v\") }"}"#;

    #[test]
    fn every_request_on_an_http2_connection_is_read_through_its_hpack_state() {
        let mut heads = RequestHeads::default();
        let mut first = HTTP2_PREFACE.to_vec();
        first.extend(frame(0x4, 0, 0, &[]));
        first.extend(http2_post(true, 1, "/graphql/v2", Some(QUERY)));
        let query = one(heads.requests(&write(1, &first)));
        assert_eq!(query.body, QUERY.as_bytes());
        // The second names its host by the dynamic table's index alone.
        let second = http2_post(false, 3, "/graphql/v2", Some(DELETION));
        let deletion = one(heads.requests(&write(1, &second)));
        assert_eq!(deletion.host.as_deref(), Some("backboard.railway.app"));
        assert_eq!(deletion.method, "POST");
        assert_eq!(deletion.body, DELETION.as_bytes());
        // A head, then its body in the next write: judged with the body.
        assert!(matches!(
            heads.requests(&write(1, &http2_post(false, 5, "/graphql/v2", None))),
            Seen::Nothing
        ));
        let body = one(heads.requests(&write(1, &frame(0x0, 0x1, 5, DELETION.as_bytes()))));
        assert_eq!(body.body, DELETION.as_bytes());
        assert!(body.body_complete);
        // A frame split across writes is read whole.
        let split = http2_post(false, 7, "/graphql/v2", Some(QUERY));
        assert!(matches!(
            heads.requests(&write(1, &split[..5])),
            Seen::Nothing
        ));
        assert_eq!(
            one(heads.requests(&write(1, &split[5..]))).body,
            QUERY.as_bytes()
        );
    }

    #[test]
    fn an_http2_request_whose_headers_cannot_be_read_is_no_pass() {
        let mut first = HTTP2_PREFACE.to_vec();
        first.extend(http2_post(true, 1, "/graphql/v2", Some(QUERY)));
        let second = http2_post(false, 3, "/graphql/v2", Some(DELETION));

        // Its connection started before the session held a credential, so
        // its preface was never seen.
        let mut heads = RequestHeads::default();
        let unseen = one(heads.requests(&write(1, &second)));
        assert!(unseen.method.is_empty() && unseen.host.is_none());

        // A write cut by the kernel's bound: what followed is unknown, and
        // later header blocks are not guessed at.
        let mut heads = RequestHeads::default();
        let mut cut = write(1, &first);
        cut.len += 100;
        let Seen::Requests(requests) = heads.requests(&cut) else {
            panic!("no requests");
        };
        // The query, and whatever the unseen 100 bytes held.
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests[1].method.is_empty());
        let after = one(heads.requests(&write(1, &second)));
        assert!(after.method.is_empty(), "{after:?}");
        assert_eq!(after.host.as_deref(), Some("backboard.railway.app"));
    }

    #[test]
    fn what_the_kernels_bound_hid_after_a_whole_request_is_no_pass() {
        // A query padded to end where the copy ends, the mutation after it.
        let mut heads = RequestHeads::default();
        let query = b"GET /graphql/v2?query=me HTTP/1.1\r\nHost: backboard.railway.app\r\n\r\n";
        let mut hidden = write(1, query);
        hidden.len += 200;
        let Seen::Requests(requests) = heads.requests(&hidden) else {
            panic!("no requests");
        };
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert!(requests[1].method.is_empty());
        assert_eq!(requests[1].host.as_deref(), Some("backboard.railway.app"));

        // A body that runs past the bound, and nothing after it: judged as
        // the cut body it is, alone.
        let head = b"POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\n\
            Content-Length: 300\r\n\r\n{\"query\":\"";
        let mut long = write(2, head);
        long.len += 300 - 10;
        assert_eq!(one(heads.requests(&long)).method, "POST");
        long.len += 1;
        let Seen::Requests(requests) = heads.requests(&long) else {
            panic!("no requests");
        };
        assert_eq!(
            requests.len(),
            2,
            "one byte more than the body: {requests:?}"
        );

        // HTTP/2: frames past the one the cut fell in.
        let mut frames = HTTP2_PREFACE.to_vec();
        frames.extend(http2_post(true, 1, "/graphql/v2", Some(QUERY)));
        let mut h2 = write(3, &frames);
        h2.len += 9;
        let Seen::Requests(requests) = heads.requests(&h2) else {
            panic!("no requests");
        };
        assert_eq!(requests.len(), 2, "{requests:?}");
    }

    #[test]
    fn a_script_is_judged_from_its_own_path_on() {
        let exec = |filename: &str, argv: &[&str]| Exec {
            filename: filename.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            ret: 0,
            truncated: false,
            env_classes: 0,
            credentials: Vec::new(),
            agent_id: 0,
            agent: None,
            held_command: true,
        };
        let script = exec(
            "/w/bin/terraform",
            &["/bin/sh", "/w/bin/terraform", "destroy"],
        );
        assert_eq!(command_line(&script), ["/w/bin/terraform", "destroy"]);
        let binary = exec("/usr/bin/terraform", &["terraform", "plan"]);
        assert_eq!(command_line(&binary), ["terraform", "plan"]);
    }
}
