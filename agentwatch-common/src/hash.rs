//! Hashes the kernel and user space must compute identically: names are
//! matched in the kernel by hash, never by string comparison.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Start value of an incremental FNV-1a hash.
pub const fn fnv_start() -> u64 {
    FNV_OFFSET
}

/// Adds one byte to an FNV-1a hash.
#[inline(always)]
pub const fn fnv_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// FNV-1a of a byte string (environment variable names and entries).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        hash = fnv_step(hash, bytes[i]);
        i += 1;
    }
    hash
}

/// Bytes of a task's `comm`: the executable's name, cut to 15 bytes.
pub const COMM_LEN: usize = 16;

/// Hash of a `comm` up to its NUL, as the exec program computes it.
#[inline(always)]
pub fn comm_hash(comm: &[u8; COMM_LEN]) -> u64 {
    let mut hash = fnv_start();
    let mut i = 0;
    while i < COMM_LEN && comm[i] != 0 {
        hash = fnv_step(hash, comm[i]);
        i += 1;
    }
    hash
}

/// Hash of an executable name as the kernel sees it in `comm`.
pub fn executable_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    fnv1a(&bytes[..bytes.len().min(COMM_LEN - 1)])
}

/// Bytes of a directory name the kernel reads for agent matching; a longer
/// name matches no `directories` entry (the policy refuses longer ones).
pub const DIR_NAME_CAP: usize = 32;

/// Adds a directory name of `len` bytes (at most [`DIR_NAME_CAP`]), read
/// eight bytes at a time by `word(offset)` (little-endian): each word
/// masked to the name's bytes, then the length. The exec program reads
/// dentry names this way, with no buffer on its stack and no loop whose
/// bound the verifier must follow.
#[inline(always)]
pub fn dir_name_step(mut hash: u64, len: usize, word: impl Fn(usize) -> u64) -> u64 {
    let mut offset = 0;
    while offset < DIR_NAME_CAP {
        let left = len.saturating_sub(offset);
        let mask = if left >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * left)) - 1
        };
        hash = (hash ^ (word(offset) & mask)).wrapping_mul(FNV_PRIME);
        offset += 8;
    }
    (hash ^ len as u64).wrapping_mul(FNV_PRIME)
}

/// Hash of an executable's two innermost directories, `grandparent/parent`
/// (`claude/versions` for `~/.local/share/claude/versions/2.1.197`); None
/// when a name is longer than the kernel reads.
pub fn directory_pair_hash(grandparent: &str, parent: &str) -> Option<u64> {
    let mut hash = fnv_start();
    for name in [grandparent, parent] {
        let bytes = name.as_bytes();
        if bytes.len() > DIR_NAME_CAP {
            return None;
        }
        hash = dir_name_step(hash, bytes.len(), |offset| {
            let mut word = [0u8; 8];
            for (slot, byte) in word.iter_mut().zip(bytes.iter().skip(offset)) {
                *slot = *byte;
            }
            u64::from_le_bytes(word)
        });
    }
    Some(hash)
}

/// ASCII lower case: DNS names compare case-insensitively.
#[inline(always)]
pub const fn lower(byte: u8) -> u8 {
    if byte.is_ascii_uppercase() {
        byte | 0x20
    } else {
        byte
    }
}

/// Hash of one DNS label, case-insensitively.
pub const fn label_hash(label: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < label.len() {
        hash = fnv_step(hash, lower(label[i]));
        i += 1;
    }
    hash
}

/// Hash of the empty suffix (the root).
pub const SUFFIX_SEED: u64 = 0x5bd1_e995_0000_0001;

/// Extends a suffix hash by one label to its left: the hash of
/// `label.suffix` from the hash of `suffix` and the label's hash.
#[inline(always)]
pub const fn suffix_step(suffix: u64, label: u64) -> u64 {
    (suffix.rotate_left(17) ^ label).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Hash of a whole domain name (`api.railway.app`, case-insensitive, one
/// trailing dot ignored), equal to the suffix hash the kernel computes for
/// the same labels of a DNS question.
pub fn domain_hash(name: &str) -> u64 {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut hash = SUFFIX_SEED;
    for label in name.rsplit('.') {
        hash = suffix_step(hash, label_hash(label.as_bytes()));
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_hash_by_their_bytes_whatever_follows_them() {
        let hash = directory_pair_hash("claude", "versions").unwrap();
        // The kernel reads whole words: bytes past a name's end do not count.
        let padded = |name: &'static [u8]| {
            move |offset: usize| {
                let mut word = [0xffu8; 8];
                for (i, byte) in word.iter_mut().enumerate() {
                    if let Some(b) = name.get(offset + i) {
                        *byte = *b;
                    }
                }
                u64::from_le_bytes(word)
            }
        };
        let read = dir_name_step(
            dir_name_step(fnv_start(), 6, padded(b"claude")),
            8,
            padded(b"versions"),
        );
        assert_eq!(read, hash);
        // Names of 8, 9 and 32 bytes cross the word reads; each differs.
        let long = "a".repeat(DIR_NAME_CAP);
        let names = ["claude", "versions", "versionsx", "claud", long.as_str()];
        let mut seen = std::collections::HashSet::new();
        for grandparent in names {
            for parent in names {
                assert!(seen.insert(directory_pair_hash(grandparent, parent).unwrap()));
            }
        }
        assert_eq!(
            directory_pair_hash("x", &"a".repeat(DIR_NAME_CAP + 1)),
            None
        );
    }

    #[test]
    fn executable_names_hash_as_comm_holds_them() {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"claude");
        assert_eq!(comm_hash(&comm), executable_hash("claude"));
        // comm keeps 15 bytes of a longer name.
        let long = "language_server_linux_x64";
        let mut comm = [0u8; COMM_LEN];
        comm[..15].copy_from_slice(&long.as_bytes()[..15]);
        assert_eq!(comm_hash(&comm), executable_hash(long));
    }

    #[test]
    fn domain_hash_ignores_case_and_trailing_dot() {
        assert_eq!(
            domain_hash("Backboard.Railway.APP."),
            domain_hash("backboard.railway.app")
        );
        assert_ne!(domain_hash("railway.app"), domain_hash("app.railway"));
        assert_ne!(
            domain_hash("railway.app"),
            domain_hash("backboard.railway.app")
        );
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }
}
