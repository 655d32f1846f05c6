//! agentwatch's own lines on stderr (alerts, what the daemon does). When
//! stderr is the journal, as under systemd, each line starts with its
//! sd-daemon priority (`<4>` warning, `<6>` info), so that
//! `journalctl -p warning -u agentwatch` shows the alerts alone.

use std::{ffi::OsStr, fmt::Display, os::unix::fs::MetadataExt as _, sync::OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Alerts: something a human should look at.
    Warning,
    Info,
}

impl Priority {
    /// The sd-daemon(3) prefix, `<N>` with N the syslog level.
    fn prefix(self) -> &'static str {
        match self {
            Priority::Warning => "<4>",
            Priority::Info => "<6>",
        }
    }
}

pub fn warning(text: impl Display) {
    say(Priority::Warning, text);
}

pub fn info(text: impl Display) {
    say(Priority::Info, text);
}

fn say(priority: Priority, text: impl Display) {
    static TO_JOURNAL: OnceLock<bool> = OnceLock::new();
    let to_journal = *TO_JOURNAL.get_or_init(stderr_is_journal);
    eprint!(
        "{}",
        lines(&text.to_string(), to_journal.then_some(priority))
    );
}

/// Each line of `text` with the prefix of `priority`, if any: the journal
/// reads a prefix per line, so a multi-line message keeps its priority.
fn lines(text: &str, priority: Option<Priority>) -> String {
    let prefix = priority.map_or("", Priority::prefix);
    text.lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect()
}

/// Whether stderr is the journal: systemd names the stream it connects in
/// `JOURNAL_STREAM` (`DEVICE:INODE`), which a process must compare with its
/// own stderr, since the variable is inherited by children whose stderr is
/// something else (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    names_stream(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        stderr.dev(),
        stderr.ino(),
    )
}

fn names_stream(journal_stream: Option<&OsStr>, dev: u64, ino: u64) -> bool {
    journal_stream
        .and_then(OsStr::to_str)
        .and_then(|value| value.split_once(':'))
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_itself() {
        assert!(names_stream(Some(OsStr::new("8:12345")), 8, 12345));
        assert!(!names_stream(Some(OsStr::new("8:12345")), 8, 54321));
        assert!(!names_stream(Some(OsStr::new("garbage")), 8, 12345));
        assert!(!names_stream(None, 8, 12345));
    }

    #[test]
    fn every_line_carries_the_priority() {
        assert_eq!(
            lines("reload failed:\nline 1", Some(Priority::Warning)),
            "<4>reload failed:\n<4>line 1\n"
        );
        assert_eq!(lines("watching", Some(Priority::Info)), "<6>watching\n");
        assert_eq!(lines("watching", None), "watching\n");
    }
}
