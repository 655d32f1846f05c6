//! `agentwatch completions SHELL` and the hidden `agentwatch man DIR`: shell
//! completions and man pages generated from the CLI's own definition, so they
//! cannot drift from it (`cargo xtask dist` packages both).

use std::{io::Write, path::Path};

use anyhow::{Context as _, Result};
use clap_complete::Shell;

/// Writes `shell`'s completion script for `command` to `out`.
pub fn completions(mut command: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_string();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes one man page per command into `dir` (created if missing):
/// `agentwatch.1`, `agentwatch-daemon.1`, `agentwatch-policy-check.1`, ...
pub fn man_pages(command: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}
