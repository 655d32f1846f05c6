//! Records to events: names what the kernel reported by number and
//! completes alerts, keeping the state they need (process trees, credential
//! history, host names). Decisions themselves are made in the kernel;
//! nothing here is on the path of a syscall.

pub mod hosts;
pub mod state;

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use agentwatch_common::{maps::CredKey, names::NameSource, offsets::kernel_dev};

use crate::{
    decode::{DnsAnswer, RawAlert},
    event::{Body, CredentialUse, Event},
    feed::tables::Tables,
};
use hosts::HostCache;
use state::{CredentialLog, ProcessTable};

pub struct Enricher {
    pub tables: Tables,
    pub hosts: HostCache,
    pub procs: ProcessTable,
    pub credentials: CredentialLog,
    /// Known credential files, to name them in alerts.
    pub files: HashMap<CredKey, PathBuf>,
}

impl Enricher {
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
        // A file opened by handle whose descriptor is gone by now: a known
        // credential file is named by its identity.
        if let Body::Open(open) = &mut event.body
            && open.resolved.is_empty()
            && open.ino != 0
        {
            let key = CredKey {
                dev: kernel_dev(open.dev),
                _pad: 0,
                ino: open.ino,
            };
            if let Some(path) = self.files.get(&key) {
                open.resolved = path.display().to_string();
            }
        }
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
            let known = self.hosts.name_of(addr);
            connect.host = known.map(|(name, _)| name.to_string());
            connect.learned = known.map(|(_, learned)| learned);
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
        self.name_writer(&mut event);
        let ancestry = self.procs.ancestry(event.pid, &event.comm);
        if let Body::Alert(alert) = &mut event.body {
            // An address may be shared with names that are not
            // infrastructure: DNS's name for it counts only if it is.
            alert.host = raw
                .name
                .or_else(|| {
                    self.hosts
                        .infrastructure_name_of(raw.ip)
                        .map(str::to_string)
                })
                .or_else(|| domain.map(|d| d.name.clone()));
            alert.provider = domain.map(|d| d.provider.clone());
            alert.credentials = self.tables.class_names(raw.held);
            alert.credential = credential;
            alert.ancestry = ancestry;
        }
        event
    }

    /// Completes what a socket's first write named with its provider.
    pub fn named(&self, mut event: Event, domain: Option<u32>) -> Event {
        self.name_writer(&mut event);
        if let Body::Name(named) = &mut event.body {
            named.provider = domain
                .and_then(|index| self.tables.domains.get(index as usize))
                .map(|d| d.provider.clone());
        }
        event
    }

    /// The sk_msg program cannot read the writer's comm or parent on every
    /// kernel: they come from what user space knows of the process.
    fn name_writer(&self, event: &mut Event) {
        if event.comm.is_empty()
            && let Some(known) = self.procs.get(event.pid)
        {
            event.comm = known.comm.clone();
            event.ppid = known.ppid;
        }
    }

    pub fn dns(&mut self, answer: &DnsAnswer) {
        if !answer.name.is_empty() {
            self.hosts.learn(
                &answer.name,
                &answer.addrs,
                NameSource::Dns,
                answer.domain.is_some(),
            );
        }
    }
}
