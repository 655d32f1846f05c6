//! Making a path absolute without touching the filesystem.

/// Joins `path` to `base` (when relative) and resolves `.`, `..` and repeated
/// slashes lexically, as the kernel would if no component were a symlink.
/// `..` above the root stays at the root.
pub fn resolve(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let joined = if path.starts_with('/') {
        [path, ""]
    } else {
        [base, path]
    };
    for component in joined.iter().flat_map(|part| part.split('/')) {
        match component {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let mut resolved = String::with_capacity(base.len() + path.len() + 1);
    for part in &parts {
        resolved.push('/');
        resolved.push_str(part);
    }
    if resolved.is_empty() {
        resolved.push('/');
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn relative_to_base() {
        assert_eq!(resolve("/etc", "./hostname"), "/etc/hostname");
        assert_eq!(resolve("/etc", "hostname"), "/etc/hostname");
        assert_eq!(resolve("/home/a/src", "../.env"), "/home/a/.env");
        assert_eq!(resolve("/", "etc//passwd"), "/etc/passwd");
    }

    #[test]
    fn absolute_paths_ignore_base() {
        assert_eq!(resolve("/tmp", "/etc/./hostname"), "/etc/hostname");
        assert_eq!(resolve("/tmp", "/../../etc"), "/etc");
        assert_eq!(resolve("/tmp", "/"), "/");
        assert_eq!(resolve("/tmp", "/a/b/.."), "/a");
    }

    #[test]
    fn empty_and_degenerate() {
        assert_eq!(resolve("/", ""), "/");
        assert_eq!(resolve("/x", ".."), "/");
        assert_eq!(resolve("/x", "../../.."), "/");
    }
}
