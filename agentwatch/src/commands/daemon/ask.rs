//! Ask mode: an alert of a session under `ask` stops it and opens a request;
//! a human's answer (or the timeout) resumes or kills it. Which requests are
//! open and when they expire is `requests::Requests`; this is where they
//! meet the kernel, the socket and the event stream.

use std::time::{Instant, SystemTime};

use agentwatch_common::names::Verdict;
use tracing::{info, warn};

use super::{
    Daemon,
    requests::{Pending, Retry},
    shared::Decision,
};
use crate::{
    control::protocol::PendingRequest,
    event::{Alert, Body, Event, OperationSeen, RequestChange},
    operation::Operation,
    policy::Action,
    sys::proc,
};

impl Daemon {
    pub(super) fn on_alert(&mut self, event: &Event, alert: &Alert) {
        let session = event.session;
        self.responder
            .on_alert(&mut self.engine, session, alert.action);
        let asked = self
            .sessions
            .get(&session)
            .is_some_and(|s| s.stopped_for.is_some());
        if alert.action == Action::Ask && !asked {
            self.open_request(event, alert);
        }
    }

    fn open_request(&mut self, event: &Event, alert: &Alert) {
        let session = event.session;
        let retry = match &alert.operation {
            // A TLS request (host named) resumes as it is; an approved
            // command runs with what its session holds, its own requests
            // not judged again.
            Some(_) => Retry::Operation {
                process: event.pid,
                classes: if alert.seen == Some(OperationSeen::Tls) {
                    0
                } else {
                    self.engine.credentials_held(session)
                },
            },
            None => match alert.addr.parse() {
                Ok(addr) => Retry::Connect(addr),
                Err(_) => return,
            },
        };
        let id = self.requests.open(Pending {
            session,
            retry,
            deadline: Instant::now() + self.ask_timeout,
        });
        let what = alert.operation.as_ref().map(|op| op.to_string());
        let host = alert.host.clone().unwrap_or_else(|| alert.addr.clone());
        let credential = alert
            .credential
            .as_ref()
            .map(|used| format!("{}: {}", used.class, used.source))
            .unwrap_or_else(|| alert.credentials.join(", "));
        let agent = self
            .sessions
            .get(&session)
            .map_or_else(|| "watched session".to_string(), |s| s.agent.clone());
        let request = PendingRequest {
            id,
            session,
            agent: agent.clone(),
            pid: event.pid,
            comm: event.comm.clone(),
            credential: credential.clone(),
            host: host.clone(),
            addr: alert.addr.clone(),
            port: alert.port,
            since: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            expires_in_secs: self.ask_timeout.as_secs(),
            operation: alert.operation.as_ref().map(Operation::with_class),
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.stopped_for = Some(id);
        }
        self.handler
            .shared
            .lock()
            .expect("shared state")
            .pending
            .insert(id, request);
        self.publish(Event {
            body: Body::Request(RequestChange {
                id,
                host: host.clone(),
                port: alert.port,
                verdict: None,
            }),
            ..event.clone()
        });
        let wants = match &what {
            Some(operation) if alert.seen == Some(OperationSeen::Tls) => {
                format!("{operation} on {host}")
            }
            Some(operation) => format!("to run {operation}"),
            None => format!("to call {host}"),
        };
        self.notify(
            event.uid,
            format!(
                "{agent} wants {wants} holding {credential}. `agentwatch approve {id}` or `agentwatch deny {id}` (denied in {}s)",
                self.ask_timeout.as_secs()
            ),
        );
    }

    /// A human's answer from the control socket.
    pub(super) fn decide(&mut self, decision: Decision) {
        // The socket checked a snapshot; the kernel's map is exact, and a
        // process joins its session before it runs a single instruction.
        if proc::ancestry(decision.peer.pid)
            .into_iter()
            .any(|pid| self.engine.is_tracked(pid))
        {
            let _ = decision.reply.send(Err(format!(
                "refused: pid {} is inside a watched session, and a watched session cannot approve or deny requests",
                decision.peer.pid
            )));
            return;
        }
        let answer = self.resolve(
            decision.id,
            if decision.approve {
                Verdict::Approve
            } else {
                Verdict::Deny
            },
        );
        info!(
            "request {}: {} by uid {} (pid {})",
            decision.id,
            if decision.approve {
                "approved"
            } else {
                "denied"
            },
            decision.peer.uid,
            decision.peer.pid
        );
        let _ = decision.reply.send(answer);
    }

    pub(super) fn resolve(&mut self, id: u64, verdict: Verdict) -> Result<String, String> {
        let pending = self
            .requests
            .close(id)
            .ok_or_else(|| format!("no pending request {id}"))?;
        let request = self
            .handler
            .shared
            .lock()
            .expect("shared state")
            .pending
            .remove(&id);
        self.metrics
            .lock()
            .expect("metrics")
            .count_resolved(verdict);
        let session = pending.session;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.stopped_for = None;
        }
        let message = if verdict == Verdict::Approve {
            if let Err(error) = self
                .responder
                .resume(&mut self.engine, session, pending.retry)
            {
                warn!("approving request {id}: {error:#}");
            }
            match pending.retry {
                Retry::Connect(addr) => format!(
                    "request {id} approved: session {session} resumed; its next call to {addr} goes through once"
                ),
                Retry::Operation { .. } => format!(
                    "request {id} approved: session {session} resumed; the stopped call goes through unchanged"
                ),
            }
        } else {
            self.responder.kill(&mut self.engine, session);
            format!("request {id} denied: session {session} killed")
        };
        if let Some(request) = request {
            self.publish(Event {
                ts: SystemTime::now(),
                session,
                pid: request.pid,
                tid: request.pid,
                ppid: 0,
                uid: 0,
                comm: request.comm,
                body: Body::Request(RequestChange {
                    id,
                    host: request.host,
                    port: request.port,
                    verdict: Some(verdict),
                }),
            });
        }
        Ok(message)
    }
}
