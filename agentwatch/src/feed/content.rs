//! Credentials in files nobody listed: files a session reads are scanned
//! for secrets by content, off the hot path, on a bounded queue. A hit
//! taints the session and makes the file a credential file in the kernel.

use std::{
    collections::{HashMap, HashSet},
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
    /// A read the kernel counted for the session's scan fence (not an
    /// inherited descriptor's file): paid once the scan's findings are in.
    pub owed: bool,
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
    /// Reads of the same file, by any session, while it was being scanned:
    /// what the scan found counts for them too.
    pub joined: Vec<ScanJob>,
}

/// What [`ContentScans::submit`] did with a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued: its result comes from [`ContentScans::next`].
    Queued,
    /// The file is being scanned already: the read comes back in that
    /// scan's result (`joined`).
    Joined,
    /// Not scanned: scanned before (what it held is in the kernel's maps),
    /// or the queue is full (counted as dropped).
    Skipped,
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
    /// Files being scanned, with the reads that joined each.
    in_flight: HashMap<CredKey, Vec<ScanJob>>,
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
                    joined: Vec::new(),
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
            in_flight: HashMap::new(),
            pending: 0,
            stats: ScanStats::default(),
        }
    }

    /// Queues a file for scanning unless it is being scanned or was
    /// scanned already.
    pub fn submit(&mut self, job: ScanJob) -> Submitted {
        if let Some(joined) = self.in_flight.get_mut(&job.key) {
            joined.push(job);
            return Submitted::Joined;
        }
        if self.seen.len() >= SEEN {
            self.seen.clear();
        }
        if !self.seen.insert(job.key) {
            return Submitted::Skipped;
        }
        let key = job.key;
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.pending += 1;
                self.in_flight.insert(key, Vec::new());
                Submitted::Queued
            }
            Err(_) => {
                self.stats.dropped += 1;
                Submitted::Skipped
            }
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
            Some(mut result) => {
                self.pending -= 1;
                result.joined = self.in_flight.remove(&result.job.key).unwrap_or_default();
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

    fn job(session: u32, path: &Path) -> ScanJob {
        ScanJob {
            session,
            owed: true,
            path: path.display().to_string(),
            key: CredKey {
                dev: 1,
                _pad: 0,
                ino: 7,
            },
            pid: session,
            uid: 0,
            comm: "cat".into(),
            at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn a_read_of_a_file_being_scanned_gets_that_scans_findings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        // Built at run time so this source does not look like it holds a secret.
        let token = format!(
            "{}-{}-4{}-a{}-{}",
            "6f1c2e9d", "3b7a", "d21", "9c4", "0e8b5f7a2c61"
        );
        std::fs::write(&path, format!("RAILWAY_TOKEN={token}\n")).unwrap();
        let env = [("RAILWAY_TOKEN".to_string(), "railway".to_string())];
        let mut scans = ContentScans::start(Arc::new(Scanner::new(&env)));
        assert_eq!(scans.submit(job(1, &path)), Submitted::Queued);
        assert_eq!(scans.submit(job(2, &path)), Submitted::Joined);
        let result = scans.next().await;
        assert_eq!(result.job.session, 1);
        assert_eq!(result.findings.len(), 1, "{:?}", result.findings);
        let joined: Vec<u32> = result.joined.iter().map(|job| job.session).collect();
        assert_eq!(joined, [2]);
        // Scanned: what it held is the kernel's to know from now on.
        assert_eq!(scans.submit(job(3, &path)), Submitted::Skipped);
        assert_eq!(scans.pending(), 0);
    }

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
