//! Recognising agent processes by the policy's matchers: compiled into the
//! kernel's exec-time tables (executable names and directories, environment
//! markers), and
//! applied in user space to argv (interpreters held at exec) and to the
//! processes already running when the daemon starts.

use std::{collections::HashMap, path::PathBuf};

use agentwatch_common::{
    event::agent::HELD,
    hash::{directory_pair_hash, executable_hash, fnv1a},
};
use anyhow::Result;

use crate::{
    engine::Engine,
    policy::{AgentMatcher, EnvMarker},
    sys::proc::{self, ProcError},
};

/// Executables node-, python- or bun-based agents run as: with argv
/// matchers in the policy, these are held at exec until argv is matched.
pub const INTERPRETERS: &[&str] = &["node", "nodejs", "bun", "deno", "python", "python3"];

/// The policy's agent matchers; agent id = index + 1 (0 means none).
#[derive(Debug, Clone, Default)]
pub struct Agents {
    matchers: Vec<AgentMatcher>,
}

/// What a running process looks like to the matchers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessView {
    /// `comm`: the executable's name, cut to 15 bytes.
    pub comm: String,
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub environ: Vec<String>,
    /// The executable's path (`/proc/PID/exe`), when it could be read.
    pub exe: Option<PathBuf>,
}

impl Agents {
    pub fn new(matchers: Vec<AgentMatcher>) -> Self {
        Self { matchers }
    }

    fn matcher(&self, agent: u32) -> Option<&AgentMatcher> {
        let index = (agent & !HELD) as usize;
        self.matchers.get(index.checked_sub(1)?)
    }

    pub fn name(&self, agent: u32) -> String {
        self.matcher(agent).map_or_else(
            || "unknown agent".to_string(),
            |matcher| matcher.name.clone(),
        )
    }

    /// The matcher's policy id (`claude-code`).
    pub fn id(&self, agent: u32) -> &str {
        self.matcher(agent)
            .map_or("unknown", |matcher| matcher.id.as_str())
    }

    /// Fills the kernel's exec-time tables.
    pub fn load_into(&self, engine: &mut Engine) -> Result<()> {
        let mut holds = false;
        for (id, matcher) in self.ids() {
            for executable in &matcher.executables {
                engine.add_agent_executable(executable_hash(executable), id)?;
            }
            for marker in &matcher.env {
                engine.add_agent_marker(marker_hash(marker), id)?;
            }
            // None only for a name longer than the kernel reads, which the
            // policy refuses.
            let hashes = matcher
                .directories
                .iter()
                .filter_map(|dirs| directory_pair_hash(&dirs.grandparent, &dirs.parent));
            for hash in hashes {
                engine.add_agent_directory(hash, id)?;
            }
            holds |= !matcher.argv.is_empty();
        }
        if holds {
            for interpreter in INTERPRETERS {
                engine.add_agent_executable(executable_hash(interpreter), HELD)?;
            }
        }
        Ok(())
    }

    fn ids(&self) -> impl Iterator<Item = (u32, &AgentMatcher)> {
        self.matchers
            .iter()
            .enumerate()
            .map(|(index, matcher)| (index as u32 + 1, matcher))
    }

    /// The agent an interpreter's argv names (the kernel held it at exec).
    pub fn match_argv(&self, argv: &[String]) -> Option<u32> {
        self.ids()
            .find(|(_, matcher)| argv_matches(matcher, argv))
            .map(|(id, _)| id)
    }

    /// The agent a running process is, by the same rules the kernel and
    /// [`Agents::match_argv`] apply at exec.
    pub fn match_process(&self, process: &ProcessView) -> Option<u32> {
        self.ids()
            .find(|(_, matcher)| {
                matcher
                    .executables
                    .iter()
                    .any(|name| comm_of(name) == process.comm)
                    || argv_matches(matcher, &process.argv)
                    || matcher
                        .env
                        .iter()
                        .any(|marker| env_matches(marker, &process.environ))
                    || process.exe.as_deref().is_some_and(|exe| {
                        matcher.directories.iter().any(|dirs| dirs.contains(exe))
                    })
            })
            .map(|(id, _)| id)
    }
}

/// What `comm` holds for an executable name.
/// `name` cut to the 15 bytes the kernel keeps of a command name.
pub(super) fn comm_of(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn argv_matches(matcher: &AgentMatcher, argv: &[String]) -> bool {
    matcher
        .argv
        .iter()
        .any(|pattern| argv.iter().any(|arg| arg.contains(pattern.as_str())))
}

fn env_matches(marker: &EnvMarker, environ: &[String]) -> bool {
    environ.iter().any(|entry| match marker {
        EnvMarker::Present(name) => entry
            .split_once('=')
            .is_some_and(|(key, value)| key == name && !value.is_empty()),
        EnvMarker::Equals(name, value) => entry.split_once('=') == Some((name, value)),
    })
}

/// The hash the exec program computes for an environment entry: the name
/// for "present with a value", the whole entry for `NAME=value`.
fn marker_hash(marker: &EnvMarker) -> u64 {
    match marker {
        EnvMarker::Present(name) => fnv1a(name.as_bytes()),
        EnvMarker::Equals(name, value) => fnv1a(format!("{name}={value}").as_bytes()),
    }
}

/// A running process as the matchers see it.
pub fn read_process(pid: u32) -> Result<ProcessView, ProcError> {
    // A kernel thread or a zombie has no argv or environment to read: it is
    // matched on its comm alone.
    Ok(ProcessView {
        comm: proc::comm(pid)?,
        argv: proc::cmdline(pid).unwrap_or_default(),
        environ: proc::environ(pid).unwrap_or_default(),
        exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
    })
}

/// `root` and all its descendants, from a parent map.
pub fn descendants(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        if let Some(kids) = children.get(&found[next]) {
            found.extend(kids);
        }
        next += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Agents {
        let policy = crate::policy::Policy::builtin();
        Agents::new(policy.agents)
    }

    fn view(comm: &str, argv: &[&str], environ: &[&str]) -> ProcessView {
        ProcessView {
            comm: comm.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            environ: environ.iter().map(|s| s.to_string()).collect(),
            exe: None,
        }
    }

    #[test]
    fn agents_are_recognised_by_name_argv_and_environment() {
        let agents = agents();
        let claude = agents
            .match_process(&view("claude", &["claude"], &[]))
            .unwrap();
        assert_eq!(agents.name(claude), "Claude Code");
        let node = view(
            "node",
            &[
                "node",
                "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js",
            ],
            &[],
        );
        assert_eq!(agents.match_process(&node), Some(claude));
        assert_eq!(agents.match_argv(&node.argv), Some(claude));
        let marked = view("bash", &["bash"], &["HOME=/root", "CLAUDECODE=1"]);
        assert_eq!(agents.match_process(&marked), Some(claude));
        // A native install's binary, named by its version.
        let native = ProcessView {
            exe: Some("/home/u/.local/share/claude/versions/2.1.197".into()),
            ..view("2.1.197", &["claude"], &[])
        };
        assert_eq!(agents.match_process(&native), Some(claude));
        let elsewhere = ProcessView {
            exe: Some("/home/u/versions/2.1.197".into()),
            ..view("2.1.197", &["2.1.197"], &[])
        };
        assert_eq!(agents.match_process(&elsewhere), None);
    }

    #[test]
    fn ordinary_processes_are_not_agents() {
        let agents = agents();
        for process in [
            view("bash", &["bash"], &["HOME=/root", "CLAUDECODE=0"]),
            view("node", &["node", "server.js"], &[]),
            view("python3", &["python3", "-m", "http.server"], &[]),
        ] {
            assert_eq!(agents.match_process(&process), None, "{process:?}");
        }
    }

    #[test]
    fn long_executable_names_compare_as_comm_holds_them() {
        assert_eq!(comm_of("language_server_linux_x64"), "language_server");
        assert_eq!(comm_of("aider"), "aider");
    }

    #[test]
    fn marker_hashes_match_the_kernels_entry_hashes() {
        use agentwatch_common::env::{ENTRY_CAP, hash_entry};
        let mut entry = [0u8; ENTRY_CAP];
        entry[..12].copy_from_slice(b"CLAUDECODE=1");
        let hashes = hash_entry(&entry);
        assert_eq!(
            marker_hash(&EnvMarker::Equals("CLAUDECODE".into(), "1".into())),
            hashes.whole
        );
        assert_eq!(
            marker_hash(&EnvMarker::Present("CLAUDECODE".into())),
            hashes.name
        );
    }

    #[test]
    fn descendants_of_a_tree() {
        let parents = HashMap::from([(2, 1), (3, 2), (4, 2), (5, 1), (6, 3)]);
        let mut tree = descendants(2, &parents);
        tree.sort();
        assert_eq!(tree, [2, 3, 4, 6]);
    }
}
