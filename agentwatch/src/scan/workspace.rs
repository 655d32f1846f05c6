//! Walking a workspace: the one rule for the directories no walk descends
//! into (shared by `agentwatch scan`, the workspace walk and the content
//! scanner's queue), and the report `agentwatch scan DIR` prints.

use std::{
    ffi::OsStr,
    io::Write,
    path::{Component, Path},
};

use walkdir::WalkDir;

use super::Scanner;

const WALK_MAX_FILES: usize = 100_000;
/// Directories skipped by name: version control and installed
/// dependencies, where nobody keeps their own secrets.
const SKIP_DIRS: &[&str] = &[".git", "node_modules", "__pycache__"];
/// Files that mark a directory as generated, whatever its name: build
/// caches (the Cache Directory Tagging spec, which cargo's `target` follows)
/// and Python virtual environments. A `build/` or `venv/` without one may
/// be the user's own and is walked.
const GENERATED_MARKERS: &[&str] = &["CACHEDIR.TAG", "pyvenv.cfg"];
/// The one file of a `.git` directory that is scanned: remote URLs carry tokens.
const GIT_CONFIG: &str = "config";

/// Whether a walk passes over the directory `dir` named `name`.
pub fn is_skipped_dir(dir: &Path, name: &OsStr) -> bool {
    SKIP_DIRS.iter().any(|skip| name == *skip)
        || GENERATED_MARKERS
            .iter()
            .any(|marker| dir.join(marker).exists())
}

/// Whether a file's absolute path lies in a directory skipped by name
/// (`.git/config` excepted); cheap, for the hot path.
pub fn in_skipped_dir(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return false;
    };
    let git_config = parent.file_name() == Some(OsStr::new(".git"))
        && path.file_name() == Some(OsStr::new(GIT_CONFIG));
    !git_config
        && parent.components().any(|part| match part {
            Component::Normal(name) => SKIP_DIRS.iter().any(|skip| name == *skip),
            _ => false,
        })
}

/// Whether a file lies in a directory a marker says is generated; a few
/// `stat`s, for the scan worker rather than the hot path.
pub fn in_generated_dir(path: &Path) -> bool {
    path.ancestors().skip(1).any(|dir| {
        GENERATED_MARKERS
            .iter()
            .any(|marker| dir.join(marker).exists())
    })
}

/// The `.git/config` of a `.git` directory a walk passes over.
pub fn git_config(dir: &Path, name: &OsStr) -> Option<std::path::PathBuf> {
    (name == ".git").then(|| dir.join(GIT_CONFIG))
}

/// Whether `agentwatch scan`'s walk visits `entry` (never skips the root).
fn walked(entry: &walkdir::DirEntry) -> bool {
    if entry.depth() == 0 {
        return true;
    }
    let in_git = entry.path().parent().and_then(Path::file_name) == Some(OsStr::new(".git"));
    if in_git {
        return entry.file_name() == GIT_CONFIG && entry.file_type().is_file();
    }
    !entry.file_type().is_dir()
        || entry.file_name() == ".git"
        || !is_skipped_dir(entry.path(), entry.file_name())
}

/// `agentwatch scan DIR`: walks DIR (skipping .git but its config, node_modules, __pycache__ and directories marked generated; not following symlinks; bounded to 100_000 files, said when reached), prints one line per finding to `out`: "{relative path}:{line}: {rule} ({provider or "unknown provider"}) {redacted}", then a summary line "{n} credentials in {m} files" (or "no credentials found in {k} files scanned"); returns Ok(true) if anything was found. Unreadable files are reported to stderr and skipped.
pub fn scan_command(dir: &Path, scanner: &Scanner, out: &mut impl Write) -> anyhow::Result<bool> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let walker = WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(walked);
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
        let findings = match scanner.scan_file(entry.path()) {
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
