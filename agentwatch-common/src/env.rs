//! Hashing one environment entry (`NAME=VALUE`) the way the exec program does,
//! so that user space can fill the kernel's tables with matching keys.

use crate::hash::{fnv_start, fnv_step};

/// Bytes of an entry the kernel reads at a time (longer values are skipped).
pub const ENTRY_CAP: usize = 256;
/// Longest name hashed; longer names never match.
pub const NAME_MAX: usize = 64;
/// Longest `NAME=VALUE` whose whole-entry hash is computed (for markers such
/// as `CLAUDECODE=1`).
pub const WHOLE_MAX: usize = 128;

/// Hashes of an entry: `name` of `NAME` when the value is non-empty (0
/// otherwise), `whole` of `NAME=VALUE` when it fits in `WHOLE_MAX` (0
/// otherwise). `entry` holds the entry's bytes up to its NUL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryHashes {
    pub name: u64,
    pub whole: u64,
}

#[inline(always)]
pub fn hash_entry(entry: &[u8; ENTRY_CAP]) -> EntryHashes {
    let mut hash = fnv_start();
    let mut name = 0;
    let mut whole = 0;
    let mut i = 0;
    while i < WHOLE_MAX {
        let byte = entry[i];
        if byte == 0 {
            whole = hash;
            break;
        }
        if byte == b'=' && name == 0 && i > 0 && i <= NAME_MAX {
            // Present with a value: the next byte is not the terminator.
            if entry[(i + 1) & (ENTRY_CAP - 1)] != 0 {
                name = hash;
            }
        }
        hash = fnv_step(hash, byte);
        i += 1;
    }
    EntryHashes { name, whole }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::fnv1a;

    fn entry(text: &str) -> [u8; ENTRY_CAP] {
        let mut buf = [0u8; ENTRY_CAP];
        buf[..text.len()].copy_from_slice(text.as_bytes());
        buf
    }

    #[test]
    fn name_and_whole_entry() {
        let hashes = hash_entry(&entry("RAILWAY_TOKEN=abc"));
        assert_eq!(hashes.name, fnv1a(b"RAILWAY_TOKEN"));
        assert_eq!(hashes.whole, fnv1a(b"RAILWAY_TOKEN=abc"));
        assert_eq!(
            hash_entry(&entry("CLAUDECODE=1")).whole,
            fnv1a(b"CLAUDECODE=1")
        );
    }

    #[test]
    fn empty_values_and_odd_entries_do_not_count_as_present() {
        assert_eq!(hash_entry(&entry("RAILWAY_TOKEN=")).name, 0);
        assert_eq!(hash_entry(&entry("=value")).name, 0);
        assert_eq!(hash_entry(&entry("NOEQUALS")).name, 0);
        // A value containing '=' still hashes the name before the first '='.
        assert_eq!(hash_entry(&entry("A=b=c")).name, fnv1a(b"A"));
    }

    #[test]
    fn long_entries() {
        let long_value = format!("AWS_SECRET_ACCESS_KEY={}", "x".repeat(200));
        let hashes = hash_entry(&entry(&long_value));
        assert_eq!(hashes.name, fnv1a(b"AWS_SECRET_ACCESS_KEY"));
        assert_eq!(hashes.whole, 0, "too long for a whole-entry marker");
        let long_name = format!("{}=1", "N".repeat(NAME_MAX + 1));
        assert_eq!(hash_entry(&entry(&long_name)).name, 0);
    }
}
