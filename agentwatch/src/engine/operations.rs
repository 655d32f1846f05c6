//! Judging what a stopped call does. The kernel stopped the writer of a
//! tainted session's TLS request before encryption, or a cataloged command
//! before its first instruction; here the request or argv is classified
//! against the policy's operation catalog and the process is resumed,
//! refused or left for the session's action (kill, ask). Until this runs the
//! process stays stopped, so nothing here races the call.

use std::{collections::HashMap, io::Write as _, path::Path, time::SystemTime};

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
    operation::{Catalog, Operation, Request, parse_request},
    policy::{Action, Policy},
};

/// Request heads awaiting their body, kept at most this many (the oldest
/// goes first): a client that writes a head and never its body leaves one.
const HEADS_CAP: usize = 1024;
/// Bytes of a body kept across writes.
const BODY_CAP: usize = 64 << 10;

/// Requests whose head was written apart from their body, by (pid, `SSL *`).
#[derive(Default)]
pub struct RequestHeads {
    heads: HashMap<(u32, u64), (u64, Request)>,
    next: u64,
}

impl RequestHeads {
    /// What `write` shows: a request to judge, one whose body is still to
    /// come (the head alone does nothing: it goes, and the body is judged
    /// with it), or nothing.
    fn request(&mut self, write: &TlsWrite) -> Seen {
        let key = (write.pid, write.ssl);
        let cut = write.data.len() < write.len as usize;
        let request = match parse_request(&write.data) {
            Ok(request) => {
                self.heads.remove(&key);
                request
            }
            Err(_) => {
                let Some((_, mut request)) = self.heads.remove(&key) else {
                    return Seen::Nothing;
                };
                let room = BODY_CAP.saturating_sub(request.body.len());
                request
                    .body
                    .extend_from_slice(&write.data[..write.data.len().min(room)]);
                request.body_complete = body_complete(&request);
                request
            }
        };
        // A body cut by the kernel's bound is judged with what it shows.
        if !request.body_complete && !cut && request.body.len() < BODY_CAP {
            self.remember(key, request);
            return Seen::Awaiting;
        }
        Seen::Request(request)
    }

    fn remember(&mut self, key: (u32, u64), request: Request) {
        if self.heads.len() >= HEADS_CAP
            && let Some(oldest) = self
                .heads
                .iter()
                .min_by_key(|(_, (order, _))| *order)
                .map(|(key, _)| *key)
        {
            self.heads.remove(&oldest);
        }
        self.next += 1;
        self.heads.insert(key, (self.next, request));
    }
}

enum Seen {
    Request(Request),
    Awaiting,
    Nothing,
}

/// Whether the body holds all its `Content-Length` says.
fn body_complete(request: &Request) -> bool {
    request
        .header("content-length")
        .and_then(|len| len.trim().parse::<usize>().ok())
        .is_some_and(|len| request.body.len() >= len)
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

/// Which processes need `SSL_write` probes.
pub enum TlsProcessChange {
    /// The kernel stopped a session's process at its first use of OpenSSL.
    Started(u32),
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
                let state = match probes.probe_tls_process(pid) {
                    Ok(()) => TlsProbeState::Probed,
                    Err(error) => {
                        warn!("pid {pid}'s TLS requests are judged by host: {error:#}");
                        self.tls_unprobed += 1;
                        TlsProbeState::Unprobed
                    }
                };
                // Left `Pending` if this fails, which the kernel also judges
                // by host.
                if let Err(error) = self.maps.set_tls_state(pid, state) {
                    warn!("{error:#}");
                }
                resume(pid);
            }
            TlsProcessChange::Exited(pid) => probes.forget_tls_process(pid),
        }
    }

    /// A tainted session's TLS request; its writer is stopped.
    pub(super) fn tls_write(&mut self, write: TlsWrite, out: &mut Vec<Event>) {
        let Seen::Request(request) = self.heads.request(&write) else {
            // Not a request (TLS records of another protocol, an HTTP/2
            // frame after the first request), or a head whose body follows:
            // nothing names an operation yet.
            resume(write.pid);
            return;
        };
        let (operation, held) = match request.host.as_deref() {
            Some(host) => {
                let domain = self.enrich.tables.lookup(host);
                let Some(domain) =
                    domain.filter(|d| write.held & d.host.classes & !d.host.allowed != 0)
                else {
                    resume(write.pid);
                    return;
                };
                let catalog = Catalog::new(&self.policy);
                let operation = catalog.classify_request(&domain.provider, &request);
                (operation, write.held & domain.host.classes)
            }
            // A request that does not say where it goes (an HTTP/2 header
            // block referring to an earlier request's): it may be an
            // infrastructure call, and what it does cannot be judged.
            None => (unseen_host(&request), write.held),
        };
        let decision = decide(
            operation.class,
            self.session_action(write.session),
            &self.policy,
        );
        match decision {
            OperationDecision::Pass
            | OperationDecision::Action(Action::Observe | Action::Alert) => resume(write.pid),
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
        let call = OperationCall {
            seen: OperationSeen::Tls,
            operation,
            decision,
            host: request.host,
        };
        let event = Event {
            ts: write.ts,
            session: write.session,
            pid: write.pid,
            tid: write.tid,
            ppid: self.enrich.procs.get(write.pid).map_or(0, |p| p.ppid),
            uid: write.uid,
            comm: write.comm,
            body: Body::Operation(call),
        };
        self.report(event, held, out);
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

fn unseen_host(request: &Request) -> Operation {
    Operation {
        kind: OperationKind::Http,
        name: format!("{} {} (host not visible)", request.method, request.path()),
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

    #[test]
    fn a_head_written_apart_from_its_body_is_judged_with_the_body() {
        let mut heads = RequestHeads::default();
        let head = b"POST /graphql/v2 HTTP/1.1\r\nHost: backboard.railway.app\r\n\
            Content-Type: application/json\r\nContent-Length: 43\r\n\r\n";
        assert!(matches!(heads.request(&write(1, head)), Seen::Awaiting));
        // Another connection's writes do not complete it.
        assert!(matches!(heads.request(&write(2, b"{}")), Seen::Nothing));
        let body = br#"{"query":"mutation { volumeDelete(x: 1) }"}"#;
        assert_eq!(body.len(), 43);
        let Seen::Request(request) = heads.request(&write(1, body)) else {
            panic!("the body completes the request");
        };
        assert!(request.body_complete);
        assert_eq!(request.host.as_deref(), Some("backboard.railway.app"));
        assert!(matches!(heads.request(&write(1, b"more")), Seen::Nothing));
    }

    #[test]
    fn a_write_that_is_no_request_shows_nothing() {
        let mut heads = RequestHeads::default();
        assert!(matches!(
            heads.request(&write(1, b"\x16\x03\x01 binary")),
            Seen::Nothing
        ));
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
