//! Validators of the names and patterns a policy file holds; each returns
//! the normalised value or the message its diagnostic shows.

use super::*;

/// A host as seen on the wire, in the form the policy stores names.
pub(super) fn normalize_lookup(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Whether `suffix` is `host` or a parent domain of it.
pub(super) fn covers(suffix: &str, host: &str) -> bool {
    host.strip_suffix(suffix)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

pub(super) fn hostname(raw: &str) -> Result<String, String> {
    let host = normalize_lookup(raw);
    if host.is_empty() {
        return Err("empty hostname".into());
    }
    if host.len() > 253 {
        return Err(format!("hostname {raw:?} is longer than 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "invalid hostname {raw:?}: every label must have 1 to 63 characters"
            ));
        }
        let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if !label.bytes().all(valid) {
            return Err(format!(
                "invalid hostname {raw:?}: only letters, digits, '-', '_' and '.' are allowed"
            ));
        }
    }
    Ok(host)
}

pub(super) fn host_pattern(raw: &str) -> Result<HostPattern, String> {
    match raw.strip_prefix("*.").or_else(|| raw.strip_prefix('.')) {
        Some(suffix) => hostname(suffix).map(HostPattern::Suffix),
        None => hostname(raw).map(HostPattern::Exact),
    }
}

pub(super) fn glob(raw: &str) -> Result<(), String> {
    glob::Pattern::new(raw)
        .map(drop)
        .map_err(|e| format!("invalid glob pattern {raw:?}: {e}"))
}

/// Relative patterns would depend on the watched process's working directory.
pub(super) fn file_pattern(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty file pattern".into());
    }
    if !raw.starts_with("~/") && !raw.starts_with('/') {
        return Err(format!(
            "file pattern {raw:?} must start with \"~/\" or \"/\""
        ));
    }
    glob(raw)?;
    Ok(raw.to_string())
}

/// Workspace names are matched against a file's name alone.
pub(super) fn name_pattern(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty file name pattern".into());
    }
    if raw.contains('/') {
        return Err(format!(
            "workspace name {raw:?} must be a file name, without '/'"
        ));
    }
    glob(raw)?;
    Ok(raw.to_string())
}

pub(super) fn env_name(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty environment variable name".into());
    }
    if raw.contains('=') || raw.contains('\0') {
        return Err(format!(
            "environment variable name {raw:?} must not contain '=' or NUL"
        ));
    }
    Ok(raw.to_string())
}

pub(super) fn env_marker(raw: &str) -> Result<EnvMarker, String> {
    if raw.is_empty() {
        return Err("empty environment marker".into());
    }
    match raw.split_once('=') {
        Some(("", _)) => Err(format!(
            "environment marker {raw:?} has an empty variable name"
        )),
        Some((name, value)) => Ok(EnvMarker::Equals(name.to_string(), value.to_string())),
        None => Ok(EnvMarker::Present(raw.to_string())),
    }
}

pub(super) fn executable(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.contains('/') {
        return Err(format!(
            "executable {raw:?} must be a non-empty file name, without '/'"
        ));
    }
    Ok(raw.to_string())
}

/// `grandparent/parent`, each a directory name the kernel reads whole.
pub(super) fn directory_pair(raw: &str) -> Result<DirectoryPair, String> {
    let named = |name: &str| {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= agentwatch_common::hash::DIR_NAME_CAP
    };
    match raw.split_once('/') {
        Some((grandparent, parent))
            if named(grandparent) && named(parent) && !parent.contains('/') =>
        {
            Ok(DirectoryPair {
                grandparent: grandparent.to_string(),
                parent: parent.to_string(),
            })
        }
        _ => Err(format!(
            "directories entry {raw:?} must be two directory names, \"grandparent/parent\", \
             each of 1 to {} bytes",
            agentwatch_common::hash::DIR_NAME_CAP
        )),
    }
}

pub(super) fn argv_substring(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty argv substring (it would match every process)".into());
    }
    Ok(raw.to_string())
}

/// Ids appear in alerts and reports; this also keeps "*" (= every provider) out.
pub(super) fn id(raw: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if raw.is_empty() || !raw.chars().all(valid) {
        return Err(format!(
            "invalid id {raw:?}: use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(raw.to_string())
}

/// A path glob (a GraphQL endpoint): `*` stays within a segment.
pub(super) fn path_glob(raw: &str) -> Result<glob::Pattern, String> {
    if !raw.starts_with('/') {
        return Err(format!("path {raw:?} must start with '/'"));
    }
    glob::Pattern::new(raw).map_err(|e| format!("invalid path pattern {raw:?}: {e}"))
}

/// A command-line flag, e.g. `-n`, `--region`.
pub(super) fn flag(raw: &str) -> Result<String, String> {
    if !raw.starts_with('-') || raw.trim_start_matches('-').is_empty() || raw.contains([' ', '=']) {
        return Err(format!(
            "flag {raw:?} must start with '-' and hold a name without spaces or '='"
        ));
    }
    Ok(raw.to_string())
}
