//! The user database, through the C library: every NSS source counts
//! (LDAP, systemd-homed, ...), not only /etc/passwd.

use std::{
    ffi::{CStr, OsStr},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
};

/// One account: its uid and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub uid: u32,
    pub home: PathBuf,
}

/// Every account the user database lists.
pub fn all() -> Vec<UserEntry> {
    let mut users = Vec::new();
    // SAFETY: each entry getpwent returns is copied out before the next
    // call reuses its buffer, and nothing else in agentwatch walks the
    // database with getpwent (lookups by name use the reentrant calls).
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let dir = (*entry).pw_dir;
            if dir.is_null() {
                continue;
            }
            users.push(UserEntry {
                uid: (*entry).pw_uid,
                home: PathBuf::from(OsStr::from_bytes(CStr::from_ptr(dir).to_bytes())),
            });
        }
        libc::endpwent();
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_listed() {
        assert!(all().iter().any(|user| user.uid == 0));
    }
}
