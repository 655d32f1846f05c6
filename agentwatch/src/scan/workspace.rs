//! Walking a workspace: the one rule for the directories no walk descends
//! into (shared by `agentwatch scan`, the workspace walk and the content
//! scanner's queue), and what `agentwatch scan` scans.

use std::{
    ffi::OsStr,
    path::{Component, Path, PathBuf},
};

use anyhow::Context as _;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use walkdir::WalkDir;

use super::{Scanner, report::Report};

/// How many files `agentwatch scan` scans at most unless told otherwise.
pub const DEFAULT_MAX_FILES: usize = 100_000;
/// Paths (gitignore globs) a directory's scan leaves out, in that directory.
pub const IGNORE_FILE: &str = ".agentwatchignore";
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

/// What `agentwatch scan` scans: its file arguments, and the files below
/// its directory arguments that a walk visits and their `.agentwatchignore`
/// does not exclude, at most `max_files` in all.
pub fn scan_paths(
    paths: &[PathBuf],
    scanner: &Scanner,
    max_files: usize,
) -> anyhow::Result<Report> {
    let mut walk = Walk {
        scanner,
        max_files,
        visited: 0,
        report: Report::default(),
    };
    'paths: for root in paths {
        let metadata =
            std::fs::metadata(root).with_context(|| format!("scanning {}", root.display()))?;
        if metadata.is_file() {
            // Named on the command line: scanned whatever the skip rules say.
            if !walk.scan(root, shown(root, None)) {
                break 'paths;
            }
            continue;
        }
        anyhow::ensure!(
            metadata.is_dir(),
            "{} is neither a file nor a directory",
            root.display()
        );
        let ignored = ignore_file(root)?;
        let walker = WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| {
                walked(entry)
                    && !ignored
                        .matched(entry.path(), entry.file_type().is_dir())
                        .is_ignore()
            });
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    walk.report.incomplete.push(format!("{error}: not scanned"));
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
            if !walk.scan(entry.path(), shown(root, Some(relative))) {
                break 'paths;
            }
        }
    }
    Ok(walk.report)
}

struct Walk<'a> {
    scanner: &'a Scanner,
    max_files: usize,
    /// Files scanned or found unreadable.
    visited: usize,
    report: Report,
}

impl Walk<'_> {
    /// Scans the file at `path`, reported as `shown`; false, scanning
    /// nothing, once `max_files` are behind.
    fn scan(&mut self, path: &Path, shown: PathBuf) -> bool {
        if self.visited == self.max_files {
            self.report.incomplete.push(format!(
                "stopped at --max-files {}: the rest of the files were not scanned",
                self.max_files
            ));
            return false;
        }
        self.visited += 1;
        match self.scanner.scan_file(path) {
            Ok(findings) => {
                self.report.files_scanned += 1;
                self.report.add(&shown.to_string_lossy(), findings);
            }
            Err(error) => self
                .report
                .incomplete
                .push(format!("{}: {error}: not scanned", shown.display())),
        }
        true
    }
}

/// A file as reached from its argument, without a leading `./`: `scan .`
/// reports `src/x`, `scan src` reports `src/x` too.
fn shown(root: &Path, relative: Option<&Path>) -> PathBuf {
    let path = relative.map_or_else(|| root.to_path_buf(), |relative| root.join(relative));
    match path.strip_prefix(".") {
        Ok(rest) if !rest.as_os_str().is_empty() => rest.to_path_buf(),
        _ => path,
    }
}

/// The gitignore-style globs of `dir/.agentwatchignore`, relative to `dir`
/// (none when there is no such file).
fn ignore_file(dir: &Path) -> anyhow::Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(dir);
    let file = dir.join(IGNORE_FILE);
    if file.exists()
        && let Some(error) = builder.add(&file)
    {
        anyhow::bail!("{}: {error}", file.display());
    }
    builder
        .build()
        .with_context(|| format!("reading {}", file.display()))
}
