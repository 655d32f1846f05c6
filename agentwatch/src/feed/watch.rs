//! Noticing credential files that appear after start-up (a login during the
//! session, a new SSO cache file): the directories their patterns point into
//! are watched, and any change there means expanding the patterns again.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};

pub struct DirWatcher {
    events: EventStream<Vec<u8>>,
    watched: BTreeSet<PathBuf>,
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE);

impl DirWatcher {
    pub fn new() -> Result<Self> {
        let inotify = Inotify::init().context("inotify_init")?;
        Ok(Self {
            events: inotify
                .into_event_stream(vec![0; 4096])
                .context("inotify event stream")?,
            watched: BTreeSet::new(),
        })
    }

    /// Watches every directory of `dirs` not watched yet; a directory that
    /// cannot be watched (gone meanwhile) is skipped until the next call.
    /// Returns whether any watch was added.
    pub fn watch(&mut self, dirs: &BTreeSet<PathBuf>) -> bool {
        let mut added = false;
        for dir in dirs.difference(&self.watched.clone()) {
            if self.events.watches().add(dir, MASK).is_ok() {
                self.watched.insert(dir.clone());
                added = true;
            }
        }
        added
    }

    /// Waits for a change in a watched directory.
    pub async fn changed(&mut self) {
        if self.events.next().await.is_none() {
            // The stream ended (inotify closed): never report a change again.
            std::future::pending::<()>().await;
        }
    }
}
