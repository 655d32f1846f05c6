//! `agentwatch scan DIR`: the credentials an agent could find in DIR by content.

use std::path::Path;

use crate::{engine::credential_env, policy::Policy, scan::Scanner};

/// Reports the findings on stdout; returns whether there were any.
pub fn scan_command(dir: &Path, policy: Option<&Path>) -> anyhow::Result<bool> {
    let policy = match policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let scanner = Scanner::new(&credential_env(&policy));
    crate::scan::workspace::scan_command(dir, &scanner, &mut std::io::stdout().lock())
}
