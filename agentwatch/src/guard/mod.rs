//! The user-space half of the guard: turns decoded records into the events
//! and alerts users see, keeping the state alerts need (process trees,
//! credential history, host names). Decisions themselves are made in the
//! kernel; nothing here is on the path of a syscall.

pub mod content;
pub mod credentials;
pub mod environ;
pub mod hosts;
pub mod state;
pub mod tables;
pub mod watch;

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use agentwatch_common::{maps::CredKey, names::Action};

use crate::event::{
    Body, CredentialUse, Event,
    decode::{DnsAnswer, RawAlert},
};
use hosts::HostCache;
use state::{CredentialLog, ProcessTable};
use tables::Tables;

pub struct Guard {
    pub tables: Tables,
    pub hosts: HostCache,
    pub procs: ProcessTable,
    pub credentials: CredentialLog,
    /// Known credential files, to name them in alerts.
    pub files: HashMap<CredKey, PathBuf>,
}

impl Guard {
    pub fn new(tables: Tables) -> Self {
        Self {
            tables,
            hosts: HostCache::default(),
            procs: ProcessTable::default(),
            credentials: CredentialLog::default(),
            files: HashMap::new(),
        }
    }

    fn record_use(&mut self, event: &Event, mask: u64, source: String) -> Vec<String> {
        let names = self.tables.class_names(mask);
        self.credentials.record(
            event.session,
            mask,
            CredentialUse {
                class: names.first().cloned().unwrap_or_default(),
                source,
                at: event.ts,
                pid: event.pid,
                comm: event.comm.clone(),
            },
        );
        names
    }

    /// Names what the kernel reported by number and updates the state.
    pub fn event(&mut self, mut event: Event) -> Event {
        match &event.body {
            Body::Open(open) if open.cred_classes != 0 => {
                let (mask, source) = (open.cred_classes, open.resolved.clone());
                let names = self.record_use(&event, mask, source);
                if let Body::Open(open) = &mut event.body {
                    open.credentials = names;
                }
            }
            Body::Exec(exec) if exec.env_classes != 0 => {
                let mask = exec.env_classes;
                let names =
                    self.record_use(&event, mask, format!("environment of {}", exec.filename));
                if let Body::Exec(exec) = &mut event.body {
                    exec.credentials = names;
                }
            }
            _ => {}
        }
        if let Body::Connect(connect) = &mut event.body
            && let Ok(addr) = connect.addr.parse::<IpAddr>()
        {
            connect.host = self.hosts.name_of(addr).map(str::to_string);
        }
        self.procs.observe(&event);
        event
    }

    /// Completes an alert with names, the credential's history and ancestry.
    pub fn alert(&self, mut event: Event, raw: RawAlert) -> Event {
        let domain = self.tables.domains.get(raw.domain as usize);
        let credential = self
            .credentials
            .latest(event.session, raw.held)
            .cloned()
            .or_else(|| {
                // The read's event was lost; the kernel still knows when.
                let class = self.tables.class_names(raw.last_classes & raw.held);
                Some(CredentialUse {
                    class: class.first().cloned().unwrap_or_default(),
                    source: "unknown (its event was lost)".into(),
                    at: raw.last_at,
                    pid: 0,
                    comm: String::new(),
                })
            });
        let ancestry = self.procs.ancestry(event.pid, &event.comm);
        if let Body::Alert(alert) = &mut event.body {
            alert.host = self
                .hosts
                .name_of(raw.ip)
                .map(str::to_string)
                .or_else(|| domain.map(|d| d.name.clone()));
            alert.provider = domain.map(|d| d.provider.clone());
            alert.credentials = self.tables.class_names(raw.held);
            alert.credential = credential;
            alert.ancestry = ancestry;
        }
        event
    }

    pub fn dns(&mut self, answer: &DnsAnswer) {
        if !answer.name.is_empty() {
            self.hosts.learn(&answer.name, &answer.addrs);
        }
    }
}

/// One readable line for an alert, for stderr and logs.
pub fn alert_line(event: &Event, tables: &Tables) -> Option<String> {
    let Body::Alert(alert) = &event.body else {
        return None;
    };
    let verdict = match alert.action {
        Action::Observe => "OBSERVED",
        Action::Alert => "ALERT",
        Action::Block => "BLOCKED",
        Action::Kill => "KILLED",
        Action::Ask => "STOPPED, awaiting approval:",
    };
    let target = match &alert.host {
        Some(host) => format!("{host} ({}:{})", alert.addr, alert.port),
        None => format!("{}:{}", alert.addr, alert.port),
    };
    let provider = alert
        .provider
        .as_deref()
        .map_or("infrastructure", |id| tables.provider_name(id));
    let credential = match &alert.credential {
        Some(used) => {
            let ago = event
                .ts
                .duration_since(used.at)
                .map(|d| format!(", {:.1}s earlier", d.as_secs_f64()))
                .unwrap_or_default();
            let by = if used.pid == 0 {
                String::new()
            } else {
                format!(" by {} (pid {})", used.comm, used.pid)
            };
            format!(
                "{} credential {}{by}{ago}",
                tables.class_label(&used.class),
                used.source
            )
        }
        None => alert.credentials.join(", "),
    };
    let ancestry: Vec<String> = alert
        .ancestry
        .iter()
        .map(|a| {
            if a.argv.is_empty() {
                format!("{} (pid {})", a.comm, a.pid)
            } else {
                format!("`{}` (pid {})", a.argv.join(" "), a.pid)
            }
        })
        .collect();
    Some(format!(
        "agentwatch: {verdict} {} (pid {}) connecting to {provider} API {target}: session {} holds {credential}; via {}",
        event.comm,
        event.pid,
        event.session,
        ancestry.join(" <- ")
    ))
}
