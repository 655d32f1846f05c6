//! What user space remembers about sessions: their process trees (for the
//! ancestry in alerts) and how each came to hold each credential.

use std::collections::HashMap;

use crate::event::{Ancestor, Body, CredentialUse, Event};

/// Ancestors listed in an alert at most.
const MAX_ANCESTRY: usize = 16;
/// Credential uses remembered per session; the oldest are forgotten first.
const MAX_USES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub ppid: u32,
    pub session: u32,
    pub comm: String,
    pub argv: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: HashMap<u32, Process>,
}

impl ProcessTable {
    /// Adds a process user space started itself (a session's root).
    pub fn insert(&mut self, pid: u32, process: Process) {
        self.procs.insert(pid, process);
    }

    /// Keeps the table in step with the kernel's events.
    pub fn observe(&mut self, event: &Event) {
        match &event.body {
            Body::Fork { child } => {
                let parent = self.procs.get(&event.pid).cloned();
                self.procs.insert(
                    *child,
                    Process {
                        ppid: event.pid,
                        session: event.session,
                        comm: event.comm.clone(),
                        argv: parent.map(|p| p.argv).unwrap_or_default(),
                    },
                );
            }
            Body::Exec(exec) if exec.ret == 0 => {
                let process = self.procs.entry(event.pid).or_insert_with(|| Process {
                    ppid: event.ppid,
                    session: event.session,
                    comm: String::new(),
                    argv: Vec::new(),
                });
                process.comm = event.comm.clone();
                process.argv = exec.argv.clone();
            }
            Body::Exit(_) => {
                self.procs.remove(&event.pid);
            }
            _ => {}
        }
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// `pid` and its known ancestors, nearest first.
    pub fn ancestry(&self, pid: u32, comm: &str) -> Vec<Ancestor> {
        let mut chain = Vec::new();
        let mut current = pid;
        while chain.len() < MAX_ANCESTRY {
            match self.procs.get(&current) {
                Some(process) => {
                    chain.push(Ancestor {
                        pid: current,
                        comm: process.comm.clone(),
                        argv: process.argv.clone(),
                    });
                    if process.ppid == current {
                        break;
                    }
                    current = process.ppid;
                }
                None if chain.is_empty() => {
                    chain.push(Ancestor {
                        pid,
                        comm: comm.to_string(),
                        argv: Vec::new(),
                    });
                    break;
                }
                None => break,
            }
        }
        chain
    }
}

/// Per session, every credential it took, in order.
#[derive(Debug, Default)]
pub struct CredentialLog {
    uses: HashMap<u32, Vec<(u64, CredentialUse)>>,
}

impl CredentialLog {
    /// Records that `session` took the classes in `mask` through `what`.
    pub fn record(&mut self, session: u32, mask: u64, what: CredentialUse) {
        let uses = self.uses.entry(session).or_default();
        if uses.len() == MAX_USES {
            uses.remove(0);
        }
        uses.push((mask, what));
    }

    /// The latest use that gave one of the classes in `mask`.
    pub fn latest(&self, session: u32, mask: u64) -> Option<&CredentialUse> {
        self.uses
            .get(&session)?
            .iter()
            .rev()
            .find(|(classes, _)| classes & mask != 0)
            .map(|(_, what)| what)
    }

    pub fn forget(&mut self, session: u32) {
        self.uses.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::event::{Exec, Exit};

    fn event(pid: u32, ppid: u32, comm: &str, body: Body) -> Event {
        Event {
            ts: SystemTime::now(),
            session: 1,
            pid,
            tid: pid,
            ppid,
            uid: 0,
            comm: comm.into(),
            body,
        }
    }

    fn exec(argv: &[&str]) -> Body {
        Body::Exec(Exec {
            filename: argv[0].into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ret: 0,
            truncated: false,
            env_classes: 0,
            credentials: Vec::new(),
            agent_id: 0,
            agent: None,
            held_command: false,
        })
    }

    #[test]
    fn ancestry_follows_forks_and_execs() {
        let mut table = ProcessTable::default();
        table.observe(&event(10, 1, "sh", exec(&["sh", "-c", "curl x"])));
        table.observe(&event(10, 1, "sh", Body::Fork { child: 11 }));
        table.observe(&event(11, 10, "curl", exec(&["curl", "https://x"])));
        let chain = table.ancestry(11, "curl");
        let pids: Vec<u32> = chain.iter().map(|a| a.pid).collect();
        assert_eq!(pids, [11, 10]);
        assert_eq!(chain[0].argv, ["curl", "https://x"]);
        assert_eq!(chain[1].argv, ["sh", "-c", "curl x"]);
        table.observe(&event(
            11,
            10,
            "curl",
            Body::Exit(Exit {
                code: 0,
                signal: None,
            }),
        ));
        assert!(table.get(11).is_none());
        // An unknown process still names itself.
        assert_eq!(table.ancestry(99, "ghost")[0].comm, "ghost");
    }

    #[test]
    fn latest_credential_use_for_a_class() {
        let mut log = CredentialLog::default();
        let use_of = |source: &str| CredentialUse {
            class: "x".into(),
            source: source.into(),
            at: UNIX_EPOCH,
            pid: 1,
            comm: "cat".into(),
        };
        log.record(1, 0b01, use_of("a"));
        log.record(1, 0b10, use_of("b"));
        log.record(1, 0b01, use_of("c"));
        assert_eq!(log.latest(1, 0b10).unwrap().source, "b");
        assert_eq!(log.latest(1, 0b11).unwrap().source, "c");
        assert!(log.latest(2, 0b11).is_none());
        for i in 0..MAX_USES + 5 {
            log.record(3, 1, use_of(&i.to_string()));
        }
        assert_eq!(log.uses[&3].len(), MAX_USES);
    }
}
