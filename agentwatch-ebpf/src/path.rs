//! Building a directory's absolute path from its dentry, the way the kernel's
//! `d_path` does (which is not callable from tracepoints): walk `d_parent` up
//! to the process root, crossing mount points through `struct mount`.
//!
//! The walk runs under `bpf_loop`, so the verifier checks one step once
//! instead of every unrolled iteration.

use core::ffi::c_void;

use agentwatch_common::event::BASE_CAP;
use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel};

use crate::{
    kernel::{current_task, off, read, read_ptr},
    scratch::{OPEN_SCRATCH, OpenScratch, Walk},
};

/// Path components walked before giving up and marking the path truncated.
const MAX_STEPS: u32 = 128;
/// Longest name a dentry can have (NAME_MAX), as a mask.
const NAME_MASK: u32 = 255;
const POS_MASK: u64 = BASE_CAP as u64 - 1;

/// A `struct path`: (vfsmount, dentry).
#[derive(Clone, Copy)]
pub struct KPath {
    pub mnt: u64,
    pub dentry: u64,
}

impl KPath {
    #[inline(always)]
    pub fn read(path: u64) -> Self {
        Self {
            mnt: read_ptr(path, off!(path_mnt)),
            dentry: read_ptr(path, off!(path_dentry)),
        }
    }
}

/// The current task's working directory and root.
#[inline(always)]
pub fn cwd_and_root() -> (KPath, KPath) {
    let fs = read_ptr(current_task(), off!(task_fs));
    (
        KPath::read(fs + off!(fs_pwd)),
        KPath::read(fs + off!(fs_root)),
    )
}

const RUNNING: u64 = 0;
const COMPLETE: u64 = 1;
const CUT_SHORT: u64 = 2;

#[inline(always)]
fn open_scratch() -> Option<&'static mut OpenScratch> {
    OPEN_SCRATCH
        .get_ptr_mut(0)
        .map(|scratch| unsafe { &mut *scratch })
}

/// Writes the absolute path of `dir` into `OPEN_SCRATCH.event.base` so that
/// it ends at `BASE_CAP`; returns (length, complete).
#[inline(always)]
pub fn write_dir_path(dir: KPath, root: KPath) -> (usize, bool) {
    let Some(scratch) = open_scratch() else {
        return (0, false);
    };
    scratch.walk = Walk {
        mnt: dir.mnt,
        dentry: dir.dentry,
        mount: dir.mnt.wrapping_sub(off!(mount_mnt)),
        root_mnt: root.mnt,
        root_dentry: root.dentry,
        pos: BASE_CAP as u64,
        state: RUNNING,
    };
    unsafe {
        bpf_loop(
            MAX_STEPS,
            walk_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    let Some(scratch) = open_scratch() else {
        return (0, false);
    };
    let complete = scratch.walk.state == COMPLETE;
    let mut pos = scratch.walk.pos & POS_MASK;
    if complete && scratch.walk.pos == BASE_CAP as u64 {
        // The directory is the root itself.
        pos = BASE_CAP as u64 - 1;
        scratch.event.base[BASE_CAP - 1] = b'/';
    }
    ((BASE_CAP as u64 - pos) as usize, complete)
}

/// One step of the walk: cross a mount or prepend one name. Returns 1 to stop.
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = open_scratch() else {
        return 1;
    };
    let walk = &mut scratch.walk;
    if walk.dentry == 0 {
        walk.state = CUT_SHORT;
        return 1;
    }
    if walk.dentry == walk.root_dentry && walk.mnt == walk.root_mnt {
        walk.state = COMPLETE;
        return 1;
    }
    if walk.dentry == read_ptr(walk.mnt, off!(vfsmount_mnt_root)) {
        // At the root of a mount: continue from where it is mounted.
        let parent = read_ptr(walk.mount, off!(mount_mnt_parent));
        if parent == walk.mount || parent == 0 {
            walk.state = COMPLETE;
            return 1;
        }
        walk.dentry = read_ptr(walk.mount, off!(mount_mnt_mountpoint));
        walk.mount = parent;
        walk.mnt = parent + off!(mount_mnt);
        return 0;
    }
    let parent = read_ptr(walk.dentry, off!(dentry_d_parent));
    if parent == walk.dentry || parent == 0 {
        walk.state = COMPLETE;
        return 1;
    }
    let name_len =
        (read::<u32>(walk.dentry, off!(dentry_d_name) + off!(qstr_len)) & NAME_MASK) as u64;
    let name = read_ptr(walk.dentry, off!(dentry_d_name) + off!(qstr_name));
    if name_len + 1 > walk.pos {
        walk.state = CUT_SHORT;
        return 1;
    }
    walk.pos -= name_len;
    walk.dentry = parent;
    let pos = walk.pos;
    let buf = scratch.event.base.as_mut_ptr();
    // `base` is followed by 256 bytes of slack, so any masked position plus
    // a NAME_MAX copy stays inside the map value.
    unsafe {
        bpf_probe_read_kernel(
            buf.add((pos & POS_MASK) as usize).cast(),
            name_len as u32,
            name as *const _,
        );
        *buf.add(((pos - 1) & POS_MASK) as usize) = b'/';
    }
    scratch.walk.pos = pos - 1;
    0
}
