//! The daemon's durable record: every event as a JSON line in
//! `/var/log/agentwatch/events.jsonl`, so the timeline outlives the daemon
//! and does not rest on the agent's own account. A thread of its own writes
//! it, so a slow disk never holds up the event loop; alerts are written at
//! once, the rest within [`FLUSH_INTERVAL`].
//!
//! Past `--log-max-size` the file is compressed to `events.jsonl.1.gz`,
//! older backups move up by one (`.2.gz`, ...) and `--log-backups` of them
//! are kept: the names log shippers (Vector, Fluent Bit, Promtail) tail.
//! A write that fails is counted, never fatal; the file is tried again a
//! second later.

use std::{
    ffi::OsString,
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::Instant,
};

use flate2::{Compression, bufread::MultiGzDecoder, write::GzEncoder};

use crate::{
    event::Event,
    sinks::{
        journal,
        json_lines::{FLUSH_INTERVAL, is_urgent, to_line},
    },
    sys::state,
};

pub const DEFAULT_PATH: &str = "/var/log/agentwatch/events.jsonl";
/// 64 MiB: about an agent-day of events, compressed to a few MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_BACKUPS: u32 = 8;
/// Events waiting for the writer; beyond that (a disk that stalls) they are
/// dropped and counted, rather than held in memory without bound.
const QUEUE: usize = 65_536;

/// The daemon's options for its event log, as the command line gives them.
#[derive(clap::Args, Debug, Clone)]
pub struct LogOptions {
    /// Where every event is appended as a JSON line (mode 0600, its
    /// directory created 0700 if missing).
    #[arg(long = "log", value_name = "FILE", default_value = DEFAULT_PATH)]
    pub path: PathBuf,
    /// Size in bytes past which the log is compressed to FILE.1.gz and
    /// started anew.
    #[arg(long = "log-max-size", value_name = "BYTES", default_value_t = DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_bytes: u64,
    /// Compressed backups kept, FILE.1.gz (newest) to FILE.N.gz.
    #[arg(long = "log-backups", value_name = "N", default_value_t = DEFAULT_BACKUPS)]
    pub backups: u32,
}

/// Events the log lost since the daemon started, by why.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogFailures {
    /// The file could not be opened, written, flushed or rotated.
    pub write_failed: u64,
    /// The writer fell [`QUEUE`] events behind.
    pub queue_full: u64,
}

#[derive(Default)]
struct Counters {
    write_failed: AtomicU64,
    queue_full: AtomicU64,
}

pub struct EventLog {
    /// None once closed.
    queue: Option<SyncSender<Arc<Event>>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl EventLog {
    /// Opens the log (saying on stderr if it cannot, and trying again as
    /// events come) and starts its writer.
    pub fn start(options: LogOptions) -> io::Result<Self> {
        let counters = Arc::new(Counters::default());
        let mut file = RotatingFile::new(options, counters.clone());
        if let Err(error) = file.open() {
            file.failed(&error, 0);
        }
        let (queue, events) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || file.run(&events))?;
        Ok(Self {
            queue: Some(queue),
            writer: Some(writer),
            counters,
        })
    }

    pub fn write(&self, event: Arc<Event>) {
        if let Some(queue) = &self.queue
            && let Err(TrySendError::Full(_)) = queue.try_send(event)
        {
            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn failures(&self) -> LogFailures {
        LogFailures {
            write_failed: self.counters.write_failed.load(Ordering::Relaxed),
            queue_full: self.counters.queue_full.load(Ordering::Relaxed),
        }
    }

    /// Writes out what is queued and closes the file.
    pub fn close(&mut self) {
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Backup `n` of the log at `path` (1 is the newest): `events.jsonl.1.gz`.
pub fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}.gz"));
    PathBuf::from(name)
}

/// The files of the log at `path`, oldest first: its backups, highest
/// number first, then the file itself (each if present). Backups are found
/// by name, so a reader needs not know how many the daemon keeps.
pub fn files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut backups: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let n = entry
                .file_name()
                .to_str()?
                .strip_prefix(&*name)?
                .strip_prefix('.')?
                .strip_suffix(".gz")?
                .parse()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    backups.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = backups.into_iter().map(|(_, file)| file).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

/// Times [`open_files`] lists the files again before it gives up on a log
/// that rotates faster than it can be opened.
const OPEN_ATTEMPTS: usize = 100;

/// The files of the log at `path` as [`files`] lists them, opened as one
/// set: a rotation while they are opened renames every backup, so the
/// listing is taken again until each name still leads to the file opened.
/// Once open, a file reads to its end whatever is renamed.
pub fn open_files(path: &Path) -> io::Result<Vec<(PathBuf, File)>> {
    for _ in 0..OPEN_ATTEMPTS {
        let names = files(path)?;
        let opened: io::Result<Vec<(PathBuf, File)>> = names
            .into_iter()
            .map(|name| File::open(&name).map(|file| (name, file)))
            .collect();
        match opened {
            Ok(opened) if still_named(path, &opened)? => return Ok(opened),
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Err(io::Error::other(format!(
        "{} rotated during each of {OPEN_ATTEMPTS} attempts to open it",
        path.display()
    )))
}

/// Whether the log's files are still the `opened` ones, under the same names.
fn still_named(path: &Path, opened: &[(PathBuf, File)]) -> io::Result<bool> {
    let names = files(path)?;
    if names.len() != opened.len() {
        return Ok(false);
    }
    for (name, (opened_name, file)) in names.iter().zip(opened) {
        let now = match std::fs::metadata(name) {
            Ok(now) => now,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let then = file.metadata()?;
        if name != opened_name || (now.dev(), now.ino()) != (then.dev(), then.ino()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The lines of `file`, opened at `name`, decompressed if it is a backup.
pub fn reader(name: &Path, file: File) -> Box<dyn BufRead> {
    let input = BufReader::new(file);
    if name.extension().is_some_and(|ext| ext == "gz") {
        Box::new(BufReader::new(MultiGzDecoder::new(input)))
    } else {
        Box::new(input)
    }
}

/// The log file as the writer thread holds it.
struct RotatingFile {
    options: LogOptions,
    /// None until opened, and after a failure.
    out: Option<BufWriter<File>>,
    /// Bytes in the file, buffered ones included.
    size: u64,
    /// Lines buffered since the last flush: lost if it fails.
    buffered: u64,
    /// Since when writing fails; the file is tried again a second later.
    failing_since: Option<Instant>,
    counters: Arc<Counters>,
}

impl RotatingFile {
    fn new(options: LogOptions, counters: Arc<Counters>) -> Self {
        Self {
            options,
            out: None,
            size: 0,
            buffered: 0,
            failing_since: None,
            counters,
        }
    }

    fn run(mut self, events: &Receiver<Arc<Event>>) {
        let mut flushed = Instant::now();
        loop {
            match events.recv_timeout(FLUSH_INTERVAL.saturating_sub(flushed.elapsed())) {
                Ok(event) => self.write(&event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
            }
            if flushed.elapsed() >= FLUSH_INTERVAL {
                self.flush();
                flushed = Instant::now();
            }
        }
    }

    fn write(&mut self, event: &Event) {
        let line = to_line(event);
        if let Some(since) = self.failing_since
            && since.elapsed() < FLUSH_INTERVAL
        {
            self.counters.write_failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(error) = self.append(&line, is_urgent(event)) {
            self.failed(&error, self.buffered + 1);
        }
    }

    fn append(&mut self, line: &[u8], urgent: bool) -> io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.options.max_bytes {
            self.rotate()?;
        }
        self.open()?.write_all(line)?;
        self.size += len;
        self.buffered += 1;
        if urgent {
            self.open()?.flush()?;
            self.buffered = 0;
        }
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            match out.flush() {
                Ok(()) => self.buffered = 0,
                Err(error) => self.failed(&error, self.buffered),
            }
        }
    }

    /// The open file, opened (and its directory created) if need be.
    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.out.is_none() {
            let path = &self.options.path;
            if let Some(dir) = path.parent() {
                state::create_dir(dir)?;
            }
            let file = File::options()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            self.size = file.metadata()?.len();
            self.out = Some(BufWriter::new(file));
            if self.failing_since.take().is_some() {
                journal::info(format!(
                    "agentwatch: event log {}: writing again",
                    path.display()
                ));
            }
        }
        Ok(self.out.as_mut().expect("opened"))
    }

    /// Counts `lost` events, drops what is buffered and closes the file, to
    /// be opened again at a write a second from now. Says so once per failure.
    fn failed(&mut self, error: &io::Error, lost: u64) {
        self.counters
            .write_failed
            .fetch_add(lost, Ordering::Relaxed);
        if let Some(out) = self.out.take() {
            // Not written again by the drop: it failed once already.
            let _ = out.into_parts();
        }
        self.buffered = 0;
        if self.failing_since.is_none() {
            journal::warning(format!(
                "agentwatch: event log {}: {error}; events are dropped (counted in \
                 agentwatch_event_log_failures_total) until it can be written again",
                self.options.path.display()
            ));
        }
        self.failing_since = Some(Instant::now());
    }

    /// Compresses the file to backup 1, after moving the older backups up
    /// one (the oldest past `backups` removed), and starts it anew. The
    /// backup is complete before anything moves, so a failure (a full disk)
    /// loses nothing.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.take() {
            out.into_inner().map_err(io::IntoInnerError::into_error)?;
            self.buffered = 0;
        }
        let path = self.options.path.clone();
        let backups = self.options.backups;
        if backups > 0 {
            let mut partial = backup_path(&path, 1).into_os_string();
            partial.push(".tmp");
            let partial = PathBuf::from(partial);
            if let Err(error) = compress(&path, &partial) {
                let _ = std::fs::remove_file(&partial);
                return Err(error);
            }
            remove_if_present(&backup_path(&path, backups))?;
            for n in (1..backups).rev() {
                let older = backup_path(&path, n);
                if older.exists() {
                    std::fs::rename(&older, backup_path(&path, n + 1))?;
                }
            }
            std::fs::rename(&partial, backup_path(&path, 1))?;
        }
        std::fs::remove_file(&path)?;
        self.size = 0;
        Ok(())
    }
}

/// Writes `from` gzip-compressed to `to` (mode 0600), on disk when it returns.
fn compress(from: &Path, to: &Path) -> io::Result<()> {
    let output = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(to)?;
    // The fast level: the writer waits for it, and JSON lines still shrink
    // about tenfold.
    let mut gzip = GzEncoder::new(BufWriter::new(output), Compression::fast());
    io::copy(&mut File::open(from)?, &mut gzip)?;
    let output = gzip
        .finish()?
        .into_inner()
        .map_err(io::IntoInnerError::into_error)?;
    output.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read as _, os::unix::fs::PermissionsExt as _};

    use super::*;

    fn event(n: u32) -> Event {
        crate::control::fake::event(n, 7)
    }

    fn line(n: u32) -> String {
        serde_json::to_string(&event(n)).unwrap() + "\n"
    }

    fn rotating(dir: &Path, max_bytes: u64, backups: u32) -> RotatingFile {
        let options = LogOptions {
            path: dir.join("log/events.jsonl"),
            max_bytes,
            backups,
        };
        RotatingFile::new(options, Arc::new(Counters::default()))
    }

    /// Every line of every file of the log, oldest first.
    fn history(path: &Path) -> String {
        let mut text = String::new();
        for (name, file) in open_files(path).unwrap() {
            reader(&name, file).read_to_string(&mut text).unwrap();
        }
        text
    }

    #[test]
    fn rotates_by_size_into_a_bounded_number_of_gzip_backups_read_back_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        // Two lines a file.
        let mut file = rotating(dir.path(), 2 * line(0).len() as u64, 3);
        for n in 0..9 {
            file.write(&event(n));
        }
        file.flush();
        let path = file.options.path.clone();
        let names: Vec<String> = files(&path)
            .unwrap()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "events.jsonl.3.gz",
                "events.jsonl.2.gz",
                "events.jsonl.1.gz",
                "events.jsonl"
            ]
        );
        // Real gzip, as log shippers and zcat read it.
        let mut magic = [0u8; 2];
        File::open(backup_path(&path, 1))
            .unwrap()
            .read_exact(&mut magic)
            .unwrap();
        assert_eq!(magic, [0x1f, 0x8b]);
        // Lines 0 and 1 went with the oldest backup, past the bound.
        assert_eq!(history(&path), (2..9).map(line).collect::<String>());
        assert_eq!(file.counters.write_failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_log_and_its_directory_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = rotating(dir.path(), 1, 1);
        file.write(&event(0));
        file.write(&event(1));
        file.flush();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let path = file.options.path.clone();
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&backup_path(&path, 1)), 0o600);
    }

    #[test]
    fn a_file_that_cannot_be_written_is_counted_and_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = rotating(dir.path(), DEFAULT_MAX_BYTES, 1);
        // A file where the log's directory should be.
        std::fs::write(dir.path().join("log"), "").unwrap();
        file.write(&event(0));
        file.write(&event(1));
        assert_eq!(file.counters.write_failed.load(Ordering::Relaxed), 2);
        std::fs::remove_file(dir.path().join("log")).unwrap();
        // Not before a second has passed.
        file.failing_since = Some(Instant::now() - FLUSH_INTERVAL);
        file.write(&event(2));
        file.flush();
        assert_eq!(history(&file.options.path), line(2));
    }

    #[test]
    fn an_alert_is_on_disk_at_once_and_the_rest_by_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = rotating(dir.path(), DEFAULT_MAX_BYTES, 1);
        file.write(&event(0));
        let path = file.options.path.clone();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let alert: Event = serde_json::from_str(
            r#"{"ts":"2026-11-25T11:50:22.000001Z","session":1,"pid":11186,"tid":11186,"ppid":11183,"uid":0,"comm":"curl","kind":"alert","action":"block","addr":"127.0.0.2","port":443,"credentials":[],"ancestry":[]}"#,
        )
        .unwrap();
        file.write(&alert);
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().count(), 2, "{written}");
    }

    #[test]
    fn other_files_beside_the_log_are_not_its_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        for name in [
            "events.jsonl.1.gz.tmp",
            "events.jsonl.old.gz",
            "events.jsonl.10.gz",
            "events.jsonl.2.gz",
            "other.jsonl.1.gz",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(
            files(&path).unwrap(),
            [backup_path(&path, 10), backup_path(&path, 2)]
        );
    }
}
