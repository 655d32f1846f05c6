//! Credentials in files nobody listed: files a session reads are scanned
//! for secrets by content, off the hot path, on a bounded queue. A hit
//! taints the session and makes the file a credential file in the kernel.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use agentwatch_common::maps::CredKey;
use tokio::sync::mpsc;

use crate::scan::{
    Finding, Scanner,
    workspace::{in_generated_dir, in_skipped_dir},
};

/// Files waiting to be scanned; beyond this, reads are counted as unscanned.
const QUEUE: usize = 512;
/// Files remembered as scanned, so a file read a thousand times is read once.
const SEEN: usize = 100_000;
/// Where no one keeps a secret they found: system files (dependencies and
/// VCS are the workspace walks' skipped directories). `/dev/shm`, `/run`
/// and the other writable tmpfs are scanned: a copy of a secret goes there,
/// and their devices and sockets are not regular files, which is all a
/// scan reads.
const SKIPPED_PREFIXES: &[&str] = &[
    "/proc/",
    "/sys/",
    "/usr/",
    "/lib",
    "/bin/",
    "/sbin/",
    "/etc/ld.so",
    "/snap/",
    "/var/lib/",
    "/var/cache/",
    "/nix/store/",
];

/// A file a session read, with what the alert will need to say about it.
#[derive(Debug, Clone)]
pub struct ScanJob {
    pub session: u32,
    pub path: String,
    pub key: CredKey,
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    pub at: SystemTime,
}

#[derive(Debug)]
pub struct ScanResult {
    pub job: ScanJob,
    /// Empty when the file could not be read (counted as failed).
    pub findings: Vec<Finding>,
    failed: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub scanned: u64,
    pub hits: u64,
    /// Reads not scanned because the queue was full.
    pub dropped: u64,
    pub failed: u64,
}

pub struct ContentScans {
    jobs: mpsc::Sender<ScanJob>,
    results: mpsc::Receiver<ScanResult>,
    seen: HashSet<CredKey>,
    /// Submitted and not yet handed out by [`ContentScans::next`].
    pending: usize,
    stats: ScanStats,
}

/// Whether a path is worth scanning at all.
pub fn worth_scanning(path: &str) -> bool {
    path.starts_with('/')
        && !SKIPPED_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        && !in_skipped_dir(Path::new(path))
}

impl ContentScans {
    /// Starts the worker; it scans one file at a time on the blocking pool.
    pub fn start(scanner: Arc<Scanner>) -> Self {
        let (jobs, mut queue) = mpsc::channel::<ScanJob>(QUEUE);
        let (done, results) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let scanner = scanner.clone();
                let path = PathBuf::from(&job.path);
                let scanned = tokio::task::spawn_blocking(move || {
                    if in_generated_dir(&path) {
                        return Ok(Vec::new());
                    }
                    scanner.scan_file(&path)
                })
                .await;
                // Gone or unreadable meanwhile: nothing to find.
                let (findings, failed) = match scanned {
                    Ok(Ok(findings)) => (findings, false),
                    _ => (Vec::new(), true),
                };
                let result = ScanResult {
                    job,
                    findings,
                    failed,
                };
                if done.send(result).await.is_err() {
                    break;
                }
            }
        });
        Self {
            jobs,
            results,
            seen: HashSet::new(),
            pending: 0,
            stats: ScanStats::default(),
        }
    }

    /// Queues a file for scanning unless it was scanned already.
    pub fn submit(&mut self, job: ScanJob) {
        if self.seen.len() >= SEEN {
            self.seen.clear();
        }
        if !self.seen.insert(job.key) {
            return;
        }
        match self.jobs.try_send(job) {
            Ok(()) => self.pending += 1,
            Err(_) => self.stats.dropped += 1,
        }
    }

    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Scans submitted and not finished yet.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The next finished scan.
    pub async fn next(&mut self) -> ScanResult {
        match self.results.recv().await {
            Some(result) => {
                self.pending -= 1;
                if result.failed {
                    self.stats.failed += 1;
                } else {
                    self.stats.scanned += 1;
                }
                if !result.findings.is_empty() {
                    self.stats.hits += 1;
                }
                result
            }
            // The worker is gone: nothing will ever finish again.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_files_and_dependencies_are_not_scanned() {
        for path in [
            "/usr/lib/x.so",
            "/proc/1/environ",
            "/w/node_modules/a/index.js",
            "/w/.git/objects/ab/cdef",
            "rel",
        ] {
            assert!(!worth_scanning(path), "{path}");
        }
        for path in [
            "/home/u/notes.txt",
            "/srv/app/.env.local",
            "/tmp/x/deploy.md",
            "/w/target.env",
            "/w/.git/config",
            "/dev/shm/copy",
            "/run/user/1000/token",
            // Generated only when a marker file says so (checked by the worker).
            "/w/venv/lib/notes.txt",
        ] {
            assert!(worth_scanning(path), "{path}");
        }
    }
}
