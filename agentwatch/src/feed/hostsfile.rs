//! Infrastructure addresses from /etc/hosts. A name the hosts file maps
//! never reaches DNS, so the kernel's DNS sensor cannot learn it, and user
//! space's resolution covers only the catalog's exact hosts: entries under
//! the catalog's domains are read here. The file is read at start and again
//! whenever its identity, size or modification time changes. It is polled,
//! not watched: inside `ip netns exec` /etc/hosts is a bind mount of
//! /etc/netns/NAME/hosts, whose changes a watch on /etc does not see.

use std::{
    fs::File,
    io::Read as _,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use tracing::warn;

pub const HOSTS_PATH: &str = "/etc/hosts";
/// How often the file is checked for a change.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Bytes of the file read: ad-blocking hosts files run to a few megabytes.
const MAX_BYTES: u64 = 16 << 20;

/// Names and addresses of hosts(5) text: an address, then its names, `#` to
/// the end of the line a comment. Lines whose address does not parse are
/// ignored; names are lower case, without a trailing dot.
pub fn parse(text: &str) -> Vec<(String, IpAddr)> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split_once('#').map_or(line, |(data, _)| data);
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else {
            continue;
        };
        // A link-local address may carry its interface (`fe80::1%eth0`).
        let addr = addr.split_once('%').map_or(addr, |(addr, _)| addr);
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        for name in fields {
            let name = name.strip_suffix('.').unwrap_or(name);
            if !name.is_empty() {
                entries.push((name.to_ascii_lowercase(), addr));
            }
        }
    }
    entries
}

/// What identifies a version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

#[derive(Debug)]
pub struct HostsFile {
    path: PathBuf,
    /// `None` before the first read, `Some(None)` while the file is missing.
    read: Option<Option<Stamp>>,
    pub entries: Vec<(String, IpAddr)>,
}

impl HostsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read: None,
            entries: Vec::new(),
        }
    }

    /// Reads the file if it changed since it was last read (or never was);
    /// returns whether it did. A missing or unreadable file has no entries.
    pub fn refresh(&mut self) -> bool {
        let now = stamp(&self.path);
        if self.read == Some(now) {
            return false;
        }
        self.read = Some(now);
        let mut text = Vec::new();
        if let Ok(file) = File::open(&self.path) {
            let _ = file.take(MAX_BYTES).read_to_end(&mut text);
        }
        if text.len() as u64 == MAX_BYTES {
            warn!(
                "{}: only its first {MAX_BYTES} bytes are read",
                self.path.display()
            );
        }
        self.entries = parse(&String::from_utf8_lossy(&text));
        true
    }

    /// Whether the file maps `name` (lower case) to `addr`.
    pub fn gives(&self, name: &str, addr: IpAddr) -> bool {
        self.entries.iter().any(|(n, a)| n == name && *a == addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_comments_several_names_ipv6_and_skips_bad_lines() {
        let text = "# a comment\n\
                    127.0.0.1\tlocalhost\n\
                    10.0.0.7  Backboard.Railway.App. api.example  # trailing comment\n\
                    fe80::1%eth0 router.lan\n\
                    2001:db8::5 v6.example\n\
                    not-an-address bad.example\n\
                    10.0.0.8\n\
                    \n   \t\n\
                    #10.0.0.9 commented.example\n";
        assert_eq!(
            parse(text),
            vec![
                ("localhost".to_string(), ip("127.0.0.1")),
                ("backboard.railway.app".to_string(), ip("10.0.0.7")),
                ("api.example".to_string(), ip("10.0.0.7")),
                ("router.lan".to_string(), ip("fe80::1")),
                ("v6.example".to_string(), ip("2001:db8::5")),
            ]
        );
        // Not text at all: nothing, and no panic.
        assert!(parse(&String::from_utf8_lossy(&[0xff, 0xfe, 0, 10, 1])).is_empty());
    }

    #[test]
    fn reads_again_only_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let mut hosts = HostsFile::new(&path);
        assert!(hosts.refresh(), "the first read, of a missing file");
        assert!(hosts.entries.is_empty());
        assert!(!hosts.refresh());
        std::fs::write(&path, "10.0.0.7 a.example\n").unwrap();
        assert!(hosts.refresh());
        assert!(hosts.gives("a.example", ip("10.0.0.7")));
        assert!(!hosts.refresh(), "unchanged");
        // Replaced by a rename (as editors do): a new inode.
        let next = dir.path().join("hosts.new");
        std::fs::write(&next, "10.0.0.8 b.example\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(hosts.refresh());
        assert!(!hosts.gives("a.example", ip("10.0.0.7")));
        assert!(hosts.gives("b.example", ip("10.0.0.8")));
    }
}
