//! The workspace walk: every file under a session's working directory is
//! scanned by content before the session's first read of it, so a secret
//! already there is a credential file in the kernel's map from the start.
//! A file the catalog names (`.env`, `*.tfvars`, `terraform.tfstate`, ...)
//! takes its class from the catalog, but only when its content holds a
//! secret too: a `.env` of `PORT=3000` is no credential.
//!
//! A session may start anywhere, a home directory with ~100,000 entries
//! included, so the walk never holds the command back for long: it goes
//! breadth first, so the files nearest the root (where projects keep them)
//! are scanned in the short [`START_BUDGET`] the start waits for; the rest
//! is walked on a thread of its own, within [`MAX_ENTRIES`], and each find
//! reaches the kernel's map as soon as it is made.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use agentwatch_common::maps::CredKey;
use glob::Pattern;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::warn;

use super::credentials::identity;
use crate::{
    policy::CredentialClass,
    scan::{
        Finding, Scanner,
        workspace::{git_config, is_skipped_dir},
    },
};

/// How long a session's start waits for its workspace walk.
pub const START_BUDGET: Duration = Duration::from_millis(100);
/// Entries (files and directories) a walk examines before it stops.
pub const MAX_ENTRIES: usize = 50_000;
/// How long the background walk works between handing over what it found.
const SLICE: Duration = Duration::from_millis(20);

/// The catalog's workspace file names, with the class each names.
pub type Names = Arc<Vec<(usize, Pattern)>>;

pub fn names(classes: &[CredentialClass]) -> Names {
    Arc::new(
        classes
            .iter()
            .enumerate()
            .flat_map(|(class, entry)| {
                entry
                    .workspace_names
                    .iter()
                    .filter_map(move |name| Pattern::new(name).ok().map(|p| (class, p)))
            })
            .collect(),
    )
}

/// A workspace file whose content holds a secret.
#[derive(Debug)]
pub struct Find {
    pub path: PathBuf,
    pub key: CredKey,
    /// The class the catalog gives its name, if it names it.
    pub named: Option<usize>,
    pub findings: Vec<Finding>,
}

/// One breadth-first walk, resumable: each [`Walk::step`] goes on where
/// the last stopped.
pub struct Walk {
    root: PathBuf,
    names: Names,
    scanner: Arc<Scanner>,
    /// Directories still to read.
    dirs: VecDeque<PathBuf>,
    /// Files of the directories read, still to scan.
    files: VecDeque<PathBuf>,
    entries: usize,
}

impl Walk {
    pub fn new(names: Names, scanner: Arc<Scanner>, root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            names,
            scanner,
            dirs: VecDeque::from([root.to_path_buf()]),
            files: VecDeque::new(),
            entries: 0,
        }
    }

    pub fn finished(&self) -> bool {
        self.files.is_empty() && (self.dirs.is_empty() || self.cut_short())
    }

    /// The walk stopped at [`MAX_ENTRIES`] with directories left unread.
    pub fn cut_short(&self) -> bool {
        self.entries >= MAX_ENTRIES && !self.dirs.is_empty()
    }

    /// Walks until `budget` has passed or the walk is finished; returns the
    /// files found to hold secrets meanwhile.
    pub fn step(&mut self, budget: Duration) -> Vec<Find> {
        let deadline = Instant::now() + budget;
        let mut found = Vec::new();
        while !self.finished() && Instant::now() < deadline {
            match self.files.pop_front() {
                Some(file) => found.extend(self.scan(file)),
                None => self.read_next_dir(),
            }
        }
        found
    }

    fn read_next_dir(&mut self) {
        let Some(dir) = self.dirs.pop_front() else {
            return;
        };
        // Unreadable directories (permissions, removed meanwhile) are
        // passed over, as `find` does.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            self.entries += 1;
            // Not followed through symlinks: a link to / would walk the
            // machine.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let (path, name) = (entry.path(), entry.file_name());
            if kind.is_dir() {
                if let Some(config) = git_config(&path, &name) {
                    self.files.push_back(config);
                } else if !is_skipped_dir(&path, &name) {
                    self.dirs.push_back(path);
                }
            } else if kind.is_file() {
                self.files.push_back(path);
            }
            if self.entries >= MAX_ENTRIES {
                break;
            }
        }
    }

    fn scan(&self, path: PathBuf) -> Option<Find> {
        // Gone or unreadable meanwhile: it is scanned again when read.
        let findings = self.scanner.scan_file(&path).ok()?;
        if findings.is_empty() {
            return None;
        }
        let name = path.file_name()?.to_string_lossy();
        let named = self
            .names
            .iter()
            .find(|(_, pattern)| pattern.matches(&name))
            .map(|(class, _)| *class);
        Some(Find {
            key: identity(&path)?,
            path,
            named,
            findings,
        })
    }
}

/// Files a background walk found to hold secrets, for the policy
/// generation whose class indices they carry.
pub struct Found {
    pub generation: u64,
    pub files: Vec<Find>,
}

/// The walks still going on in the background, and what they hand over.
pub struct Walks {
    scanner: Arc<Scanner>,
    sender: UnboundedSender<Found>,
    receiver: UnboundedReceiver<Found>,
}

impl Walks {
    pub fn new(scanner: Arc<Scanner>) -> Self {
        let (sender, receiver) = unbounded_channel();
        Self {
            scanner,
            sender,
            receiver,
        }
    }

    /// Walks `root` for at most `budget` now and returns what that found;
    /// an unfinished walk goes on in the background.
    pub fn start(&self, names: Names, root: &Path, generation: u64, budget: Duration) -> Vec<Find> {
        let mut walk = Walk::new(names, self.scanner.clone(), root);
        let found = walk.step(budget);
        if walk.finished() {
            report_cut_short(&walk);
        } else {
            let sender = self.sender.clone();
            std::thread::spawn(move || {
                while !walk.finished() {
                    let files = walk.step(SLICE);
                    if !files.is_empty() && sender.send(Found { generation, files }).is_err() {
                        return;
                    }
                }
                report_cut_short(&walk);
            });
        }
        found
    }

    /// What a background walk found next (pending while none has news).
    pub async fn next(&mut self) -> Found {
        match self.receiver.recv().await {
            Some(found) => found,
            // `self.sender` keeps the channel open.
            None => std::future::pending().await,
        }
    }
}

fn report_cut_short(walk: &Walk) {
    if walk.cut_short() {
        warn!(
            "workspace walk of {} stopped after {MAX_ENTRIES} entries: secrets in files \
             beyond them are found only when read (by content, after the read)",
            walk.root.display()
        );
    }
}

#[cfg(test)]
mod tests;
