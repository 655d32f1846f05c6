//! Credential files by identity: the catalog's path patterns expanded, for a
//! home directory (and by `workspace` for a workspace), into the (device, inode) pairs the kernel
//! matches opens against — so symlinks, hardlinks, relative paths,
//! `/proc/self/fd/N` and bind mounts all match.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use agentwatch_common::{maps::CredKey, offsets::kernel_dev};
use glob::{MatchOptions, Pattern};

use crate::policy::CredentialClass;

/// A credential file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    pub class: usize,
    pub path: PathBuf,
    pub key: CredKey,
}

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// `~/x` → `home/x`; other patterns unchanged.
pub fn expand_home(pattern: &str, home: &Path) -> PathBuf {
    match pattern.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None => PathBuf::from(pattern),
    }
}

/// The identity of the regular file at `path` (following symlinks).
pub(super) fn identity(path: &Path) -> Option<CredKey> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| CredKey {
        dev: kernel_dev(meta.dev()),
        _pad: 0,
        ino: meta.ino(),
    })
}

/// A class's `exclude_files` patterns for `home`.
fn excluded(entry: &CredentialClass, home: &Path) -> Vec<Pattern> {
    entry
        .exclude_files
        .iter()
        .filter_map(|pattern| Pattern::new(&expand_home(pattern, home).to_string_lossy()).ok())
        .collect()
}

/// The catalog's path patterns compiled for the homes, to know a file by
/// its path before an expansion has found it (one created and read at once).
#[derive(Debug, Default)]
pub struct CatalogPaths {
    /// (class, pattern, the class's exclusions for that home).
    patterns: Vec<(usize, Pattern, Vec<Pattern>)>,
}

impl CatalogPaths {
    pub fn new(classes: &[CredentialClass], homes: &[PathBuf]) -> Self {
        let mut patterns = Vec::new();
        for home in homes {
            for (class, entry) in classes.iter().enumerate() {
                let excluded = excluded(entry, home);
                for pattern in &entry.files {
                    if let Ok(pattern) = Pattern::new(&expand_home(pattern, home).to_string_lossy())
                    {
                        patterns.push((class, pattern, excluded.clone()));
                    }
                }
            }
        }
        Self { patterns }
    }

    /// The class whose `files` name `path`, if one does.
    pub fn class_of(&self, path: &Path) -> Option<usize> {
        self.patterns
            .iter()
            .find(|(_, pattern, excluded)| {
                pattern.matches_path_with(path, MATCH)
                    && !excluded.iter().any(|ex| ex.matches_path_with(path, MATCH))
            })
            .map(|(class, _, _)| *class)
    }
}

/// Every existing regular file the classes' `files` patterns name under `home`.
pub fn expand(classes: &[CredentialClass], home: &Path) -> Vec<CredentialFile> {
    let mut found = Vec::new();
    for (class, entry) in classes.iter().enumerate() {
        let excluded = excluded(entry, home);
        for pattern in &entry.files {
            let full = expand_home(pattern, home);
            let Ok(paths) = glob::glob_with(&full.to_string_lossy(), MATCH) else {
                continue;
            };
            for path in paths.filter_map(Result::ok) {
                if excluded.iter().any(|ex| ex.matches_path_with(&path, MATCH)) {
                    continue;
                }
                if let Some(key) = identity(&path) {
                    found.push(CredentialFile { class, path, key });
                }
            }
        }
    }
    found
}

/// Directories to watch so that credential files appearing later are found:
/// for each pattern, its nearest existing ancestor directory.
pub fn watch_dirs(classes: &[CredentialClass], home: &Path) -> BTreeSet<PathBuf> {
    classes
        .iter()
        .flat_map(|entry| &entry.files)
        .filter_map(|pattern| {
            let full = expand_home(pattern, home);
            // The part before the first glob character names a directory.
            let literal: PathBuf = full
                .components()
                .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
                .collect();
            literal
                .ancestors()
                .find(|dir| dir.is_dir())
                .map(Path::to_path_buf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn class(files: &[&str], exclude: &[&str], names: &[&str]) -> CredentialClass {
        CredentialClass {
            id: "test".into(),
            name: "test".into(),
            providers: None,
            files: files.iter().map(|s| s.to_string()).collect(),
            exclude_files: exclude.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            workspace_names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs_excludes_and_identity() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        for name in ["id_ed25519", "id_ed25519.pub", "id_rsa", "known_hosts"] {
            std::fs::write(ssh.join(name), "x").unwrap();
        }
        let classes = [class(&["~/.ssh/id_*"], &["~/.ssh/*.pub"], &[])];
        let mut names: Vec<String> = expand(&classes, home.path())
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["id_ed25519", "id_rsa"]);
        let meta = std::fs::metadata(ssh.join("id_rsa")).unwrap();
        let found = expand(&classes, home.path());
        let rsa = found.iter().find(|f| f.path.ends_with("id_rsa")).unwrap();
        assert_eq!(rsa.key.ino, meta.ino());
        assert_eq!(rsa.key.dev, kernel_dev(meta.dev()));
    }

    #[test]
    fn a_catalog_file_is_known_by_its_path_before_it_exists() {
        let home = PathBuf::from("/home/u");
        let classes = [
            class(&["~/.ssh/id_*"], &["~/.ssh/*.pub"], &[]),
            class(&["~/.railway/config.json"], &[], &[]),
        ];
        let paths = CatalogPaths::new(&classes, std::slice::from_ref(&home));
        assert_eq!(
            paths.class_of(Path::new("/home/u/.railway/config.json")),
            Some(1)
        );
        assert_eq!(paths.class_of(Path::new("/home/u/.ssh/id_rsa")), Some(0));
        for other in [
            "/home/u/.ssh/id_rsa.pub",
            "/home/v/.railway/config.json",
            "/home/u/.railway/x/config.json",
        ] {
            assert_eq!(paths.class_of(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn missing_files_and_directories_are_not_errors() {
        let home = tempfile::tempdir().unwrap();
        let classes = [class(
            &["~/.railway/config.json", "/nonexistent/*"],
            &[],
            &[],
        )];
        assert!(expand(&classes, home.path()).is_empty());
        // Watch the nearest existing ancestor, so ~/.railway appearing is seen.
        let dirs = watch_dirs(&classes, home.path());
        assert!(dirs.contains(home.path()), "{dirs:?}");
        assert!(dirs.contains(Path::new("/")));
    }

    #[test]
    fn a_symlinked_credential_has_the_targets_identity() {
        let home = tempfile::tempdir().unwrap();
        let real = home.path().join("real.json");
        std::fs::write(&real, "{}").unwrap();
        symlink(&real, home.path().join("link.json")).unwrap();
        let found = expand(&[class(&["~/link.json"], &[], &[])], home.path());
        assert_eq!(found[0].key.ino, std::fs::metadata(&real).unwrap().ino());
    }
}
