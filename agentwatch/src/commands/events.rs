//! `agentwatch events`: the daemon's events as JSON lines. With `--since`
//! (or `--log`) the history comes from the event log, its compressed
//! backups first, so it reaches back past restarts and rotations; without,
//! from the daemon's recent events. Then, unless `--no-follow`, live events
//! from the daemon.

use std::{
    collections::VecDeque,
    io::{self, BufRead as _, Write},
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    commands::daemon::shared::FEED,
    control::{
        client::{self, Subscription, print_events, write_line},
        protocol::{DEFAULT_SOCKET, Request, Response},
    },
    sinks::event_log,
};

/// `agentwatch events`' options, as the command line gives them.
#[derive(clap::Args)]
pub struct EventsOptions {
    /// Only this session's events.
    #[arg(long, value_name = "ID")]
    pub session: Option<u32>,
    /// Events from TIME on, read from the event log: an RFC 3339 time
    /// (`2026-12-02T14:00:00Z`, `2026-12-02T15:00:00+01:00`) or how long ago
    /// (`10m`, `2h`, `1d`).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<SystemTime>,
    /// Read the history from this event log [default: the daemon's
    /// default `--log`].
    #[arg(long = "log", value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Stop after the history instead of following live events (from the
    /// log, with --since or --log, no daemon need be running).
    #[arg(long)]
    pub no_follow: bool,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

pub async fn events_command(options: EventsOptions, out: &mut (impl Write + Send)) -> Result<i32> {
    let follow = !options.no_follow;
    if options.since.is_none() && options.log.is_none() {
        return client::events_command(&options.socket, follow, options.session, out).await;
    }
    let log = options
        .log
        .unwrap_or_else(|| PathBuf::from(event_log::DEFAULT_PATH));
    let filter = Filter {
        session: options.session,
        since: options.since,
    };
    if !follow {
        return match print_history(&log, &filter, out, None) {
            Err(error) if is_broken_pipe(&error) => Ok(0),
            done => done.map(|()| 0),
        };
    }
    // Subscribed before the history is read: an event written meanwhile is
    // in both, and printed once; none is in neither.
    let mut subscription = Subscription::open(
        &options.socket,
        &Request::Events {
            follow: true,
            session: options.session,
            replay: false,
        },
    )
    .await
    .context("following live events (--no-follow reads the log alone)")?;
    match subscription.next().await? {
        Some(Response::Live) => {}
        Some(Response::Error { message }) => return Ok(client::refused(&message)),
        other => bail!("unexpected answer from the daemon: {other:?}"),
    }
    let mut overlap = Overlap::default();
    match print_history(&log, &filter, out, Some(&mut overlap)) {
        Err(error) if is_broken_pipe(&error) => return Ok(0),
        done => done?,
    }
    print_events(subscription, out, |line| overlap.repeats(line)).await
}

/// `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(time.into());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-02T14:00:00Z) nor a time ago \
             (10m, 2h, 1d)"
        )
    })?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("{text} ago is before the epoch"))
}

/// Which events are printed.
struct Filter {
    session: Option<u32>,
    since: Option<SystemTime>,
}

/// What the filter reads of a line, whatever its kind.
#[derive(Deserialize)]
struct Stamp {
    #[serde(deserialize_with = "crate::event::from_rfc3339")]
    ts: SystemTime,
    session: u32,
}

impl Filter {
    fn keeps(&self, stamp: &Stamp) -> bool {
        self.session.is_none_or(|id| stamp.session == id)
            && self.since.is_none_or(|since| stamp.ts >= since)
    }
}

/// Prints the events of the log at `log` that `filter` keeps, oldest file
/// first, each line as written; the last ones also go to `overlap`. The
/// rest of a file that cannot be decompressed, or a line that is not an
/// event, is reported and skipped: the rest of the record still counts.
fn print_history(
    log: &Path,
    filter: &Filter,
    out: &mut impl Write,
    mut overlap: Option<&mut Overlap>,
) -> Result<()> {
    let files = event_log::open_files(log)
        .with_context(|| format!("reading the event log {}", log.display()))?;
    if files.is_empty() {
        bail!(
            "no event log at {} (the daemon writes it; --log FILE reads another)",
            log.display()
        );
    }
    for (name, file) in files {
        let mut unreadable = 0;
        let lines = event_log::reader(&name, file).lines();
        for line in lines {
            let line = match line {
                Ok(line) => line,
                Err(error) => {
                    eprintln!("agentwatch: {}: {error}; skipping the rest", name.display());
                    break;
                }
            };
            match serde_json::from_str::<Stamp>(&line) {
                Ok(stamp) if filter.keeps(&stamp) => {
                    write_line(out, &line)?;
                    if let Some(overlap) = overlap.as_deref_mut() {
                        overlap.push(line);
                    }
                }
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            eprintln!(
                "agentwatch: {}: skipped {unreadable} lines that are not events",
                name.display()
            );
        }
    }
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// The last lines of the history, which the first live events repeat: those
/// published between the subscription and the end of the reading are both
/// in the log and in the feed. No more than the feed holds are kept.
#[derive(Default)]
struct Overlap {
    tail: VecDeque<String>,
    /// Whether a live event has been seen.
    live: bool,
}

impl Overlap {
    fn push(&mut self, line: String) {
        if self.tail.len() == FEED {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Whether the live event `line` was printed from the log: the first
    /// one is looked for among the tail, the next ones must follow it there.
    fn repeats(&mut self, line: &str) -> bool {
        let found = if self.live {
            self.tail.front().is_some_and(|first| first == line)
        } else {
            self.live = true;
            match self.tail.iter().position(|printed| printed == line) {
                Some(at) => {
                    self.tail.drain(..at);
                    true
                }
                None => false,
            }
        };
        if found {
            self.tail.pop_front();
        } else {
            self.tail.clear();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn since_takes_rfc_3339_with_any_offset_or_a_time_ago() {
        let utc = parse_since("2026-12-02T14:00:00Z").unwrap();
        assert_eq!(parse_since("2026-12-02T15:00:00+01:00").unwrap(), utc);
        assert_eq!(
            parse_since("2026-12-02T14:00:00.5Z").unwrap(),
            utc + Duration::from_millis(500)
        );
        for (text, ago) in [("10m", 600), ("2h", 7200), ("1d", 86_400), ("90s", 90)] {
            let since = parse_since(text).unwrap();
            let elapsed = SystemTime::now().duration_since(since).unwrap();
            assert!(
                elapsed >= Duration::from_secs(ago) && elapsed < Duration::from_secs(ago + 60),
                "{text}: {elapsed:?}"
            );
        }
    }

    #[test]
    fn since_says_what_it_takes() {
        for bad in ["yesterday", "2026-12-02", "10 parsecs", ""] {
            let error = parse_since(bad).unwrap_err();
            assert!(
                error.contains("RFC 3339") && error.contains("10m"),
                "{error}"
            );
        }
    }

    fn fork(session: u32, ts: &str, pid: u32) -> String {
        format!(
            r#"{{"ts":"{ts}","session":{session},"pid":{pid},"tid":{pid},"ppid":1,"uid":0,"comm":"sh","kind":"fork","child":2}}"#
        )
    }

    #[test]
    fn history_spans_the_backups_oldest_first_filtered_by_session_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let gzip = |n: u32, lines: &[String]| {
            let file = std::fs::File::create(event_log::backup_path(&log, n)).unwrap();
            let mut gzip = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            for line in lines {
                writeln!(gzip, "{line}").unwrap();
            }
            gzip.finish().unwrap();
        };
        gzip(
            2,
            &[
                fork(1, "2026-12-02T09:00:00Z", 10),
                fork(1, "2026-12-02T10:00:00Z", 11),
            ],
        );
        gzip(
            1,
            &[
                fork(2, "2026-12-02T10:30:00Z", 12),
                fork(1, "2026-12-02T11:00:00Z", 13),
            ],
        );
        std::fs::write(
            &log,
            format!("{}\nnot an event\n", fork(1, "2026-12-02T12:00:00Z", 14)),
        )
        .unwrap();
        let filter = Filter {
            session: Some(1),
            since: Some(parse_since("2026-12-02T10:00:00Z").unwrap()),
        };
        let mut out = Vec::new();
        let mut overlap = Overlap::default();
        print_history(&log, &filter, &mut out, Some(&mut overlap)).unwrap();
        let pids: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).unwrap()["pid"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(pids, [11, 13, 14]);
        assert_eq!(overlap.tail.len(), 3);
    }

    #[test]
    fn a_missing_log_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("events.jsonl");
        let filter = Filter {
            session: None,
            since: None,
        };
        let error = print_history(&log, &filter, &mut Vec::new(), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "no event log at {} (the daemon writes it; --log FILE reads another)",
                log.display()
            )
        );
    }

    #[test]
    fn live_events_already_read_from_the_log_are_skipped_once() {
        let mut overlap = Overlap::default();
        for line in ["a", "b", "c", "d"] {
            overlap.push(line.into());
        }
        // c and d were written to the log after the subscription.
        assert!(overlap.repeats("c"));
        assert!(overlap.repeats("d"));
        assert!(!overlap.repeats("e"));
        // Once past the overlap, nothing is skipped, even a repeated line.
        assert!(!overlap.repeats("a"));

        let mut overlap = Overlap::default();
        overlap.push("a".into());
        assert!(!overlap.repeats("z"), "nothing published meanwhile");
        assert!(!overlap.repeats("a"));
    }
}
