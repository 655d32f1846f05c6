//! Reading kernel structs through the offsets user space computed from BTF.

use agentwatch_common::offsets::KernelOffsets;
use aya_ebpf::helpers::{bpf_get_current_task, generated::bpf_probe_read_kernel};

/// Filled in by user space before load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_mm: 0,
    task_files: 0,
    task_fs: 0,
    task_exit_code: 0,
    task_signal: 0,
    signal_live: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_path: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    super_block_s_magic: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    fs_root: 0,
    fs_pwd: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_len: 0,
    qstr_name: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    bprm_filename: 0,
    bprm_file: 0,
    io_kiocb_cmd: 0,
    io_open_file_slot: 0,
    valid: 0,
};

/// One field of [`OFFSETS`], read so the compiler cannot fold the zeros above.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&$crate::kernel::OFFSETS.$field) } as u64
    };
}
pub(crate) use off;

/// Reads a `T` at `base + offset` in kernel memory; zero when the read fails.
#[inline(always)]
pub fn read<T: Copy + Default>(base: u64, offset: u64) -> T {
    let mut value = T::default();
    let ret = unsafe {
        bpf_probe_read_kernel(
            (&mut value as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            (base + offset) as *const _,
        )
    };
    if ret != 0 {
        return T::default();
    }
    value
}

#[inline(always)]
pub fn read_ptr(base: u64, offset: u64) -> u64 {
    if base == 0 {
        return 0;
    }
    read::<u64>(base, offset)
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Thread-group id of the current task's parent.
#[inline(always)]
pub fn current_ppid() -> u32 {
    let parent = read_ptr(current_task(), off!(task_real_parent));
    if parent == 0 {
        return 0;
    }
    read::<u32>(parent, off!(task_tgid))
}

/// `struct file *` behind descriptor `fd` of the current task, or 0.
#[inline(always)]
pub fn fd_file(fd: u64) -> u64 {
    let files = read_ptr(current_task(), off!(task_files));
    let fdt = read_ptr(files, off!(files_fdt));
    if fdt == 0 {
        return 0;
    }
    let max_fds = read::<u32>(fdt, off!(fdtable_max_fds)) as u64;
    if fd >= max_fds {
        return 0;
    }
    let table = read_ptr(fdt, off!(fdtable_fd));
    read_ptr(table, fd * 8)
}

/// Who an open file is: (kernel `dev_t`, inode number), and the
/// `struct super_block *` of its filesystem (0 when unknown).
pub struct FileIdentity {
    pub dev: u32,
    pub ino: u64,
    pub sb: u64,
}

#[inline(always)]
pub fn file_identity(file: u64) -> FileIdentity {
    let inode = read_ptr(file, off!(file_f_inode));
    if inode == 0 {
        return FileIdentity {
            dev: 0,
            ino: 0,
            sb: 0,
        };
    }
    let ino = read::<u64>(inode, off!(inode_i_ino));
    let sb = read_ptr(inode, off!(inode_i_sb));
    let dev = if sb == 0 {
        0
    } else {
        read::<u32>(sb, off!(super_block_s_dev))
    };
    FileIdentity { dev, ino, sb }
}
