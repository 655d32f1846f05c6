//! The workspace walk: files under a session's working directory whose names
//! the catalog lists (`.env`, `*.tfvars`, `terraform.tfstate`, ...).
//!
//! A session may start anywhere, a home directory with ~100,000 entries
//! included, so the walk never holds the command back for long: it goes
//! breadth first, so the files nearest the root (where projects keep them)
//! are found in the short [`START_BUDGET`] the start waits for; the rest is
//! walked on a thread of its own, within [`MAX_DEPTH`] and [`MAX_ENTRIES`],
//! and each find reaches the kernel's map as soon as it is made.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use glob::Pattern;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::warn;

use super::credentials::{CredentialFile, identity};
use crate::{policy::CredentialClass, scan::workspace::is_skipped_dir_name};

/// How long a session's start waits for its workspace walk.
pub const START_BUDGET: Duration = Duration::from_millis(100);
/// Directory levels below the root that are walked.
pub const MAX_DEPTH: usize = 8;
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

/// One breadth-first walk, resumable: each [`Walk::step`] goes on where
/// the last stopped.
pub struct Walk {
    root: PathBuf,
    names: Names,
    /// Directories still to read, with their depth below the root.
    queue: VecDeque<(PathBuf, usize)>,
    entries: usize,
}

impl Walk {
    pub fn new(names: Names, root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            names,
            queue: VecDeque::from([(root.to_path_buf(), 0)]),
            entries: 0,
        }
    }

    pub fn finished(&self) -> bool {
        self.queue.is_empty() || self.cut_short()
    }

    /// The walk stopped at [`MAX_ENTRIES`] with directories left unread.
    pub fn cut_short(&self) -> bool {
        self.entries >= MAX_ENTRIES && !self.queue.is_empty()
    }

    /// Walks until `budget` has passed or the walk is finished; returns the
    /// credential files found meanwhile.
    pub fn step(&mut self, budget: Duration) -> Vec<CredentialFile> {
        let deadline = Instant::now() + budget;
        let mut found = Vec::new();
        while !self.finished() && Instant::now() < deadline {
            let Some((dir, depth)) = self.queue.pop_front() else {
                break;
            };
            // Unreadable directories (permissions, removed meanwhile) are
            // passed over, as `find` does.
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                self.entries += 1;
                // Not followed through symlinks: a link to / would walk the
                // machine.
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name();
                if kind.is_dir() {
                    if depth < MAX_DEPTH && !is_skipped_dir_name(&name) {
                        self.queue.push_back((entry.path(), depth + 1));
                    }
                } else if kind.is_file()
                    && let Some((class, _)) = self
                        .names
                        .iter()
                        .find(|(_, pattern)| pattern.matches(&name.to_string_lossy()))
                    && let Some(key) = identity(&entry.path())
                {
                    found.push(CredentialFile {
                        class: *class,
                        path: entry.path(),
                        key,
                    });
                }
                if self.entries >= MAX_ENTRIES {
                    break;
                }
            }
        }
        found
    }
}

/// Credential files a background walk found, for the policy generation
/// whose class indices they carry.
pub struct Found {
    pub generation: u64,
    pub files: Vec<CredentialFile>,
}

/// The walks still going on in the background, and what they hand over.
pub struct Walks {
    sender: UnboundedSender<Found>,
    receiver: UnboundedReceiver<Found>,
}

impl Walks {
    pub fn new() -> Self {
        let (sender, receiver) = unbounded_channel();
        Self { sender, receiver }
    }

    /// Walks `root` for at most `budget` now and returns what that found;
    /// an unfinished walk goes on in the background.
    pub fn start(
        &self,
        names: Names,
        root: &Path,
        generation: u64,
        budget: Duration,
    ) -> Vec<CredentialFile> {
        let mut walk = Walk::new(names, root);
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
            "workspace walk of {} stopped after {MAX_ENTRIES} entries: credential files \
             named by the catalog deeper in it are found only when read (by content)",
            walk.root.display()
        );
    }
}

#[cfg(test)]
mod tests;
