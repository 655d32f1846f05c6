//! Struct field offsets of the running kernel, read from its BTF.

use std::{collections::HashMap, path::Path};

use agentwatch_common::offsets::KernelOffsets;
use anyhow::{Context as _, Result, anyhow, bail};
use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let source = start
            .checked_add(buffer.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| {
                btfparse::Error::new(btfparse::ErrorKind::EOF, "read past the end of the BTF")
            })?;
        buffer.copy_from_slice(source);
        Ok(())
    }
}

/// The kernel's type information, indexed by struct name.
pub struct KernelBtf {
    types: TypeInformation,
    structs: HashMap<String, u32>,
}

impl KernelBtf {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {}: agentwatch needs a kernel built with CONFIG_DEBUG_INFO_BTF",
                path.display()
            )
        })?;
        let types = TypeInformation::new(&Bytes(bytes))
            .map_err(|error| anyhow!("cannot parse {}: {error:?}", path.display()))?;
        // Index structs only: a name may also belong to a function or a typedef.
        let structs = types
            .get()
            .iter()
            .filter(|(_, variant)| matches!(variant, TypeVariant::Struct(_)))
            .filter_map(|(tid, _)| types.name_of(*tid).map(|name| (name, *tid)))
            .collect();
        Ok(Self { types, structs })
    }

    /// Byte offset of `path` (dotted members, anonymous ones looked through)
    /// inside `struct name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u32> {
        let tid = *self
            .structs
            .get(name)
            .ok_or_else(|| anyhow!("struct {name} is not in the kernel's BTF"))?;
        match self.types.offset_of(tid, path) {
            Ok((_, Offset::ByteOffset(offset))) => Ok(offset),
            Ok((_, Offset::BitOffsetAndSize(..))) => bail!("{name}.{path} is a bit field"),
            Err(error) => bail!("{name}.{path}: {error:?}"),
        }
    }

    pub fn kernel_offsets(&self) -> Result<KernelOffsets> {
        let o = |name: &str, path: &str| self.offset(name, path);
        Ok(KernelOffsets {
            task_pid: o("task_struct", "pid")?,
            task_tgid: o("task_struct", "tgid")?,
            task_real_parent: o("task_struct", "real_parent")?,
            task_mm: o("task_struct", "mm")?,
            task_files: o("task_struct", "files")?,
            task_fs: o("task_struct", "fs")?,
            task_exit_code: o("task_struct", "exit_code")?,
            task_signal: o("task_struct", "signal")?,
            signal_live: o("signal_struct", "live")?,
            mm_arg_start: o("mm_struct", "arg_start")?,
            mm_arg_end: o("mm_struct", "arg_end")?,
            files_fdt: o("files_struct", "fdt")?,
            fdtable_max_fds: o("fdtable", "max_fds")?,
            fdtable_fd: o("fdtable", "fd")?,
            file_f_path: o("file", "f_path")?,
            file_f_inode: o("file", "f_inode")?,
            inode_i_ino: o("inode", "i_ino")?,
            inode_i_sb: o("inode", "i_sb")?,
            super_block_s_dev: o("super_block", "s_dev")?,
            super_block_s_magic: o("super_block", "s_magic")?,
            mm_env_start: o("mm_struct", "env_start")?,
            mm_env_end: o("mm_struct", "env_end")?,
            fs_root: o("fs_struct", "root")?,
            fs_pwd: o("fs_struct", "pwd")?,
            path_mnt: o("path", "mnt")?,
            path_dentry: o("path", "dentry")?,
            dentry_d_parent: o("dentry", "d_parent")?,
            dentry_d_name: o("dentry", "d_name")?,
            qstr_len: o("qstr", "len")?,
            qstr_name: o("qstr", "name")?,
            vfsmount_mnt_root: o("vfsmount", "mnt_root")?,
            mount_mnt: o("mount", "mnt")?,
            mount_mnt_parent: o("mount", "mnt_parent")?,
            mount_mnt_mountpoint: o("mount", "mnt_mountpoint")?,
            bprm_filename: o("linux_binprm", "filename")?,
            bprm_file: o("linux_binprm", "file")?,
            // Optional: without them the io_uring programs are not attached.
            io_kiocb_cmd: o("io_kiocb", "cmd").unwrap_or(0),
            io_open_file_slot: o("io_open", "file_slot").unwrap_or(0),
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF; every Linux CI machine for agentwatch has one.
    #[test]
    fn offsets_of_the_running_kernel_are_plausible() {
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).expect("kernel BTF");
        let offsets = btf.kernel_offsets().expect("offsets");
        assert_eq!(offsets.task_tgid, offsets.task_pid + 4, "tgid follows pid");
        assert_eq!(offsets.qstr_len, 4, "qstr.len follows the 32-bit hash");
        assert_eq!(offsets.path_dentry, 8);
        assert!(btf.offset("task_struct", "no_such_field").is_err());
        assert!(btf.offset("no_such_struct", "x").is_err());
    }
}
