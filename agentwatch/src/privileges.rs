//! Who agentwatch runs as, and who the watched command should run as.

use std::{ffi::CString, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use nix::unistd::{Gid, Uid, User, getgrouplist};

use crate::sys::proc;

/// Capabilities needed to load, attach and mount: (bit, name).
const REQUIRED_CAPS: &[(u32, &str)] = &[
    (21, "CAP_SYS_ADMIN"),
    (39, "CAP_BPF"),
    (38, "CAP_PERFMON"),
    (12, "CAP_NET_ADMIN"),
];

/// Names of the required capabilities this process lacks.
pub fn missing_capabilities() -> Result<Vec<&'static str>> {
    let caps = proc::effective_capabilities()?;
    Ok(REQUIRED_CAPS
        .iter()
        .filter(|(bit, _)| caps & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect())
}

pub fn require_privileges(what: &str) -> Result<()> {
    let missing = missing_capabilities()?;
    if !missing.is_empty() {
        bail!(
            "{what} needs root: loading kernel programs requires {}; run it with sudo",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The account a watched command runs as.
#[derive(Debug, Clone)]
pub struct Account {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub name: String,
    pub home: PathBuf,
}

impl Account {
    /// The user who invoked agentwatch through sudo, if it did.
    pub fn invoking_user() -> Result<Option<Self>> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let Some(uid) = std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok()) else {
            return Ok(None);
        };
        let uid = Uid::from_raw(uid);
        if uid.is_root() {
            return Ok(None);
        }
        let user = User::from_uid(uid)
            .context("looking up the sudo user")?
            .with_context(|| format!("SUDO_UID {uid} has no passwd entry"))?;
        let name = CString::new(user.name.as_str())?;
        let groups = getgrouplist(&name, user.gid).context("listing the sudo user's groups")?;
        Ok(Some(Self {
            uid,
            gid: user.gid,
            groups,
            name: user.name,
            home: user.dir,
        }))
    }
}
