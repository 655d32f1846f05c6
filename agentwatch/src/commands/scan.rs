//! `agentwatch scan PATH...`: the credentials an agent could find in files
//! and directories by content, as a report for people or CI.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{
    OWN_FAILURE,
    engine::credential_env,
    policy::Policy,
    scan::{
        Scanner,
        baseline::{self, Baseline},
        report::Format,
        workspace::{DEFAULT_MAX_FILES, scan_paths},
    },
};

/// Exit status of a complete scan that found something (the baseline
/// aside); a complete scan of nothing new exits 0.
const FINDINGS: u8 = 1;
/// A scan cut short never passes: it exits as agentwatch's own failures do.
const INCOMPLETE: u8 = OWN_FAILURE;

#[derive(clap::Args)]
pub struct ScanOptions {
    /// Files (scanned whatever the skip rules say) and directories (walked,
    /// less their .agentwatchignore).
    #[arg(value_name = "PATH", default_value = ".")]
    paths: Vec<PathBuf>,
    /// Policy file whose credential variables are also recognised.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// How the report is written.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report to FILE instead of stdout (a summary goes to stderr).
    #[arg(long, value_name = "FILE")]
    report_path: Option<PathBuf>,
    /// Leave out the findings whose fingerprints FILE lists (see --write-baseline).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write every finding's fingerprint to FILE, accepting them: the scan
    /// then exits 0 unless it is incomplete.
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Scan at most N files; more is an incomplete scan (exit 2).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FILES)]
    max_files: usize,
}

/// Writes the report; returns the exit status.
pub fn scan_command(options: ScanOptions) -> anyhow::Result<u8> {
    let policy = match &options.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    // Read before the scan: a baseline that is not there fails at once.
    let known = options
        .baseline
        .as_deref()
        .map(Baseline::read)
        .transpose()?;
    let scanner = Scanner::new(&credential_env(&policy));
    let mut report = scan_paths(&options.paths, &scanner, options.max_files)?;
    let accepted = match &options.write_baseline {
        Some(path) => {
            let written = baseline::write(path, &report)?;
            eprintln!(
                "agentwatch scan: wrote {written} fingerprints to {}",
                path.display()
            );
            true
        }
        None => false,
    };
    if let Some(known) = &known {
        report.suppress(known);
    }
    match &options.report_path {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("writing {}", path.display()))?;
            report.write(options.format, &mut file)?;
            eprintln!(
                "agentwatch scan: {}; report in {}",
                report.summary(),
                path.display()
            );
        }
        None => report.write(options.format, &mut std::io::stdout().lock())?,
    }
    if !report.complete() {
        for reason in &report.incomplete {
            eprintln!("agentwatch scan: {reason}");
        }
        eprintln!(
            "agentwatch scan: incomplete scan: the report covers only the {} files scanned",
            report.files_scanned
        );
        return Ok(INCOMPLETE);
    }
    Ok(if report.findings.is_empty() || accepted {
        0
    } else {
        FINDINGS
    })
}
