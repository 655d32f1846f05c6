//! Kernel struct field offsets, computed by user space from the running
//! kernel's BTF (/sys/kernel/btf/vmlinux) and handed to the programs as a
//! read-only global, because aya's eBPF side has no CO-RE relocations.

/// Name of the global in the object (`EbpfLoader::override_global`).
pub const GLOBAL: &str = "OFFSETS";

/// Byte offsets of the fields the programs read with `bpf_probe_read_kernel`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_mm: u32,
    pub task_files: u32,
    pub task_fs: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_path: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    pub super_block_s_magic: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    pub qstr_len: u32,
    pub qstr_name: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the embedded `struct vfsmount` inside `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub bprm_filename: u32,
    pub bprm_file: u32,
    /// `struct io_open` inside `struct io_kiocb`, and its `file_slot`
    /// (zero when the kernel has no io_uring: its programs are not attached).
    pub io_kiocb_cmd: u32,
    pub io_open_file_slot: u32,
    /// Non-zero once user space filled this in; programs do nothing until then.
    pub valid: u32,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}

/// Converts a kernel `dev_t` (`MAJOR << 20 | MINOR`) to the encoding `stat(2)`
/// returns in `st_dev` (glibc's `makedev`).
pub const fn user_dev(kernel_dev: u32) -> u64 {
    let major = (kernel_dev >> 20) as u64;
    let minor = (kernel_dev & 0xfffff) as u64;
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Converts an `st_dev` from `stat(2)` to the kernel's internal `dev_t`.
pub const fn kernel_dev(user_dev: u64) -> u32 {
    let major = ((user_dev >> 8) & 0xfff) | ((user_dev >> 32) & 0xffff_f000);
    let minor = (user_dev & 0xff) | ((user_dev >> 12) & 0xffff_ff00);
    ((major << 20) | (minor & 0xfffff)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_encodings_round_trip() {
        // 254:0 is /dev/vda here; 0:45 an anonymous (tmpfs) device; 259:65537 a large minor.
        for (major, minor) in [(254u32, 0u32), (0, 45), (8, 17), (259, 65537)] {
            let kdev = (major << 20) | minor;
            let udev = user_dev(kdev);
            assert_eq!(kernel_dev(udev), kdev, "{major}:{minor}");
        }
        assert_eq!(user_dev((8 << 20) | 17), (8 << 8) | 17);
    }
}
