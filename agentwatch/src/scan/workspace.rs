//! Walking a workspace: the one list of directories no walk descends into
//! (shared by `agentwatch scan`, the credential-name walk and the content
//! scanner's queue), and the report `agentwatch scan DIR` prints.

use std::{io::Write, path::Path};

use walkdir::WalkDir;

use super::{MAX_SCAN_BYTES, Scanner};

const WALK_MAX_FILES: usize = 100_000;
const WALK_MAX_DEPTH: usize = 16;
/// Directories no walk of a workspace descends into: version control,
/// dependencies and build output, where nobody keeps their own secrets.
const WALK_SKIP_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    "target",
    ".venv",
    "venv",
    "__pycache__",
];

/// Whether a file's absolute path lies in one of those directories.
pub fn in_skipped_dir(path: &str) -> bool {
    let dirs = path.rsplit_once('/').map_or("", |(dirs, _)| dirs);
    dirs.split('/').any(|part| WALK_SKIP_DIRS.contains(&part))
}

/// Whether a workspace walk should skip `entry` (never the walk's root).
pub fn skipped_dir(entry: &walkdir::DirEntry) -> bool {
    entry.depth() > 0 && entry.file_type().is_dir() && is_skipped_dir_name(entry.file_name())
}

/// Whether a directory of this name is skipped by every workspace walk.
pub fn is_skipped_dir_name(name: &std::ffi::OsStr) -> bool {
    WALK_SKIP_DIRS.iter().any(|skip| name == *skip)
}

/// `agentwatch scan DIR`: walks DIR (skipping .git, node_modules, target, .venv, venv, __pycache__; not following symlinks; bounded to 100_000 files, depth 16), prints one line per finding to `out`: "{relative path}:{line}: {rule} ({provider or "unknown provider"}) {redacted}", then a summary line "{n} credentials in {m} files" (or "no credentials found in {k} files scanned"); returns Ok(true) if anything was found. Unreadable files are reported to stderr and skipped.
pub fn scan_command(dir: &Path, scanner: &Scanner, out: &mut impl Write) -> anyhow::Result<bool> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let walker = WalkDir::new(dir)
        .follow_links(false)
        .max_depth(WALK_MAX_DEPTH)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| !skipped_dir(entry));
    let (mut visited, mut scanned, mut files_with_findings, mut total) = (0, 0, 0, 0);
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) => {
                eprintln!("agentwatch scan: skipping: {err}");
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        if visited == WALK_MAX_FILES {
            eprintln!("agentwatch scan: stopped after {WALK_MAX_FILES} files");
            break;
        }
        visited += 1;
        let findings = match scanner.scan_file(entry.path(), MAX_SCAN_BYTES) {
            Ok(findings) => findings,
            Err(err) => {
                eprintln!("agentwatch scan: {}: {err}", entry.path().display());
                continue;
            }
        };
        scanned += 1;
        if findings.is_empty() {
            continue;
        }
        files_with_findings += 1;
        total += findings.len();
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        for finding in &findings {
            writeln!(
                out,
                "{}:{}: {} ({}) {}",
                relative.display(),
                finding.line,
                finding.rule,
                finding.provider.as_deref().unwrap_or("unknown provider"),
                finding.redacted
            )?;
        }
    }
    if total == 0 {
        writeln!(out, "no credentials found in {scanned} files scanned")?;
    } else {
        writeln!(out, "{total} credentials in {files_with_findings} files")?;
    }
    Ok(total > 0)
}
