//! Sessions stopped for a human, remembered on disk: if the daemon dies
//! without answering (a crash, SIGKILL), the next one denies them at start
//! rather than leaving them stopped forever with no one to resume them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::warn;

use crate::sys::{proc::is_stopped, state};

pub struct StoppedSessions {
    path: PathBuf,
    /// Session → the pids stopped with it.
    sessions: BTreeMap<u32, Vec<u32>>,
}

impl StoppedSessions {
    /// Kept in the daemon's state directory, which outlives the daemon.
    pub fn in_dir(state: &Path) -> Self {
        Self {
            path: state.join("stopped-sessions.json"),
            sessions: BTreeMap::new(),
        }
    }

    /// Kills what an earlier daemon left stopped; returns how many processes.
    pub fn deny_leftovers(&self) -> usize {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return 0;
        };
        let left: BTreeMap<u32, Vec<u32>> = serde_json::from_str(&text).unwrap_or_default();
        let mut killed = 0;
        for pid in left.into_values().flatten() {
            // Only processes still stopped: a pid reused since is running.
            if matches!(is_stopped(pid), Ok(true))
                && kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
            {
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&self.path);
        killed
    }

    pub fn insert(&mut self, session: u32, pids: Vec<u32>) {
        self.sessions.insert(session, pids);
        self.save();
    }

    pub fn remove(&mut self, session: u32) {
        if self.sessions.remove(&session).is_some() {
            self.save();
        }
    }

    fn save(&self) {
        let written = serde_json::to_vec(&self.sessions)
            .map_err(std::io::Error::other)
            .and_then(|bytes| state::write(&self.path, &bytes));
        if let Err(error) = written {
            warn!(
                "remembering stopped sessions in {}: {error}",
                self.path.display()
            );
        }
    }
}
