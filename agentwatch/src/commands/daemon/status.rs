//! Once a second: the status the control socket serves, the metrics, and
//! the sessions saved for a restarted daemon.

use std::{collections::BTreeMap, time::Instant};

use agentwatch_common::names::FoundBy;

use super::{
    Daemon,
    saved::{SavedRun, SavedSession},
};
use crate::control::protocol::{ProcessInfo, SessionInfo, Status};
use crate::sys::proc::start_time;

impl Daemon {
    pub(super) fn refresh_status(&mut self, members: &BTreeMap<u32, Vec<u32>>) {
        let losses = self.engine.losses().ok();
        let engine = &self.engine;
        let fill = engine.map_fill();
        let mut sessions = Vec::new();
        for (id, session) in &self.sessions {
            let held = engine.credentials_held(*id);
            let processes = members
                .get(id)
                .into_iter()
                .flatten()
                .map(|pid| {
                    let known = engine.process(*pid);
                    ProcessInfo {
                        pid: *pid,
                        ppid: known.map_or(0, |p| p.ppid),
                        comm: known.map(|p| p.comm.clone()).unwrap_or_default(),
                        argv: known.map(|p| p.argv.clone()).unwrap_or_default(),
                    }
                })
                .collect();
            sessions.push(SessionInfo {
                id: *id,
                agent: session.agent.clone(),
                root_pid: *id,
                started: humantime::format_rfc3339_seconds(session.started).to_string(),
                action: session.action,
                stopped: session.stopped_for.is_some(),
                credentials: engine.tables().class_names(held),
                processes,
            });
        }
        let tracked: usize = members.values().map(Vec::len).sum();
        let lost = losses.map_or(0, |l| l.kernel.lost_total());
        {
            let mut metrics = self.metrics.lock().expect("metrics");
            metrics.sessions_active.set(self.sessions.len() as i64);
            metrics.tracked_processes.set(tracked as i64);
            metrics.pending_requests.set(self.requests.len() as i64);
            if let Some(losses) = losses {
                metrics.update_losses(losses);
            }
            metrics.update_fill(&fill);
            metrics.update_log_failures(self.log.failures());
        }
        self.saved.save(
            sessions
                .iter()
                .zip(self.sessions.values())
                .filter_map(|(info, session)| {
                    Some(SavedSession {
                        root: info.root_pid,
                        started: start_time(info.root_pid).ok()?,
                        credentials: info.credentials.clone(),
                        run: (session.found_by == FoundBy::Run).then(|| SavedRun {
                            agent: session.agent.clone(),
                            action: session.action,
                        }),
                    })
                })
                .collect(),
        );
        let mut shared = self.handler.shared.lock().expect("shared state");
        shared.watched = members.values().flatten().copied().collect();
        for request in shared.pending.values_mut() {
            if let Some(left) = self.requests.expires_in(request.id, Instant::now()) {
                request.expires_in_secs = left.as_secs();
            }
        }
        shared.status = Status {
            mode: self.action,
            sessions,
            tracked_processes: tracked as u64,
            events_lost: lost,
            alerts: self.alerts,
        };
    }
}
