//! The pseudo-filesystems the programs need: tracefs (syscall tracepoints are
//! found through it) and the cgroup v2 hierarchy (the network hooks attach to
//! its root). A fresh machine, or a shell inside `ip netns exec`, may have
//! neither; they are found from /proc/self/mountinfo and mounted when absent.

use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::sys::proc;

pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where a private cgroup v2 mount goes when the system has none (as Cilium
/// uses /run/cilium/cgroupv2).
pub const PRIVATE_CGROUP2: &str = "/run/agentwatch/cgroup2";

/// One line of /proc/self/mountinfo, the fields agentwatch uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Path inside the filesystem that is mounted (`/` for a whole hierarchy).
    pub root: String,
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses mountinfo (proc(5)); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let fs_type = after.split(' ').next()?;
            Some(MountEntry {
                root: unescape(fields.get(3)?),
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts() -> Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&proc::mountinfo()?))
}

/// The mount point of the cgroup v2 hierarchy's root, if mounted.
pub fn find_cgroup2() -> Result<Option<PathBuf>> {
    Ok(mounts()?
        .into_iter()
        .find(|entry| entry.fs_type == "cgroup2" && entry.root == "/")
        .map(|entry| entry.mount_point))
}

pub fn find_tracefs() -> Result<Option<PathBuf>> {
    Ok(mounts()?
        .into_iter()
        .find(|entry| entry.fs_type == "tracefs")
        .map(|entry| entry.mount_point))
}

fn mount(fs_type: &str, target: &Path) -> Result<()> {
    let source = CString::new(fs_type)?;
    let target_c = CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            source.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        bail!(
            "mount -t {fs_type} {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The cgroup v2 root, mounted privately when the system has none.
pub fn ensure_cgroup2() -> Result<PathBuf> {
    if let Some(path) = find_cgroup2()? {
        return Ok(path);
    }
    let target = Path::new(PRIVATE_CGROUP2);
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    mount("cgroup2", target).context(
        "no cgroup v2 hierarchy is mounted and mounting one failed; \
         agentwatch needs a kernel with cgroup v2 (CONFIG_CGROUP_BPF)",
    )?;
    Ok(target.to_path_buf())
}

/// tracefs, mounted at /sys/kernel/tracing when absent.
pub fn ensure_tracefs() -> Result<PathBuf> {
    if let Some(path) = find_tracefs()? {
        return Ok(path);
    }
    let target = Path::new(TRACEFS);
    mount("tracefs", target).context(
        "tracefs is not mounted and mounting it failed; syscall tracepoints cannot be attached",
    )?;
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 41 0:38 /user.slice /mnt/delegated rw shared:5 - cgroup2 cgroup2 rw
50 23 0:12 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
51 27 0:40 / /mnt/with\\040space rw - ext4 /dev/vdb rw
";

    #[test]
    fn finds_the_cgroup2_root_not_a_bind_of_a_subtree() {
        let entries = parse_mountinfo(SAMPLE);
        let roots: Vec<_> = entries
            .iter()
            .filter(|entry| entry.fs_type == "cgroup2" && entry.root == "/")
            .collect();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn optional_fields_and_escapes() {
        let entries = parse_mountinfo(SAMPLE);
        assert_eq!(entries[4].root, "/user.slice");
        assert_eq!(entries[6].mount_point, Path::new("/mnt/with space"));
        assert!(parse_mountinfo("garbage\n\n1 2 3\n").is_empty());
    }
}
