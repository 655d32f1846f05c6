//! What the kernel knew about each session, saved in the state directory
//! every second: a restarted daemon adopts running agents again and gives
//! them back the credentials they held, so a restart does not launder a
//! credential read before it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{
    policy::Action,
    sys::{proc::start_time, state},
};

/// A session as saved: its root process (with its start time, so a reused
/// pid is not mistaken for it) and the credential classes it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSession {
    pub root: u32,
    pub started: u64,
    pub credentials: Vec<String>,
    /// A session `agentwatch run` opened: adopted again by its root alone,
    /// which no agent matcher may recognise, with its name and action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<SavedRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedRun {
    pub agent: String,
    pub action: Action,
}

pub struct SavedSessions {
    path: PathBuf,
    last: Vec<SavedSession>,
}

impl SavedSessions {
    pub fn in_dir(state: &Path) -> Self {
        Self {
            path: state.join("sessions.json"),
            last: Vec::new(),
        }
    }

    /// What an earlier daemon saved, by root pid, keeping only sessions
    /// whose root is still the same process.
    pub fn load(&self) -> BTreeMap<u32, SavedSession> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return BTreeMap::new();
        };
        let saved: Vec<SavedSession> = serde_json::from_str(&text).unwrap_or_default();
        saved
            .into_iter()
            .filter(|session| start_time(session.root).is_ok_and(|t| t == session.started))
            .map(|session| (session.root, session))
            .collect()
    }

    /// Writes the sessions out when they changed.
    pub fn save(&mut self, sessions: Vec<SavedSession>) {
        if sessions == self.last {
            return;
        }
        let written = serde_json::to_vec(&sessions)
            .map_err(std::io::Error::other)
            .and_then(|bytes| state::write(&self.path, &bytes));
        match written {
            Ok(()) => self.last = sessions,
            Err(error) => warn!("saving sessions to {}: {error}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_whose_root_is_still_running_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let mut saved = SavedSessions::in_dir(dir.path());
        saved.save(vec![
            SavedSession {
                root: me,
                started: start_time(me).unwrap(),
                credentials: vec!["aws".into()],
                run: Some(SavedRun {
                    agent: "`sh` under agentwatch run".into(),
                    action: Action::Kill,
                }),
            },
            // The same pid with another start time is another process.
            SavedSession {
                root: 1,
                started: u64::MAX,
                credentials: vec!["railway".into()],
                run: None,
            },
        ]);
        let loaded = SavedSessions::in_dir(dir.path()).load();
        assert_eq!(loaded.keys().copied().collect::<Vec<_>>(), [me]);
        assert_eq!(loaded[&me].credentials, ["aws"]);
        assert_eq!(loaded[&me].run.as_ref().unwrap().action, Action::Kill);
    }
}
