//! File sensor: open, openat, openat2, creat and open_by_handle_at, at their
//! exit only: for a session's process it reads the call's arguments from the
//! task's registers and reports the path, the base directory of a relative
//! path, and the identity (device, inode) of the file actually opened.

use agentwatch_common::{
    event::{AT_FDCWD, OpenEvent, PATH_CAP, owes_scan, truncated},
    maps::{CredKey, OpenedKey, counter},
    names::{Kind, OpenSyscall},
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    emit::{Urgency, fill_header, send_with},
    kernel::{FileIdentity, fd_file, file_identity, off, read, read_ptr},
    maps::{CREDS, ENV_CLASSES, REPORTED_OPENS, count, owe_scan},
    path::{KPath, cwd_and_root, write_dir_path},
    process::string_len,
    scratch::{OPEN_SCRATCH, OpenScratch},
    session::{Member, member},
    syscall::{entry_args, ret},
};

const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    report_open(&ctx, OpenSyscall::Openat, |[dirfd, path, flags]| OpenCall {
        path,
        dirfd: dirfd as i32,
        flags: flags as u32,
    })
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    report_open(&ctx, OpenSyscall::Openat2, |[dirfd, path, how]| {
        // `struct open_how` starts with the u64 flags.
        let mut flags: u64 = 0;
        // SAFETY: reads 8 bytes of the caller's memory into a local.
        unsafe {
            bpf_probe_read_user((&mut flags as *mut u64).cast(), 8, how as *const _);
        }
        OpenCall {
            path,
            dirfd: dirfd as i32,
            flags: flags as u32,
        }
    })
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    report_open(&ctx, OpenSyscall::Open, |[path, flags, _]| OpenCall {
        path,
        dirfd: AT_FDCWD,
        flags: flags as u32,
    })
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    report_open(&ctx, OpenSyscall::Creat, |[path, _, _]| OpenCall {
        path,
        dirfd: AT_FDCWD,
        flags: O_CREAT | O_WRONLY | O_TRUNC,
    })
}

/// `open_by_handle_at(mount_fd, handle, flags)` names no path: the file
/// is known by the identity of what it opened, as every open is.
#[tracepoint(category = "syscalls", name = "sys_exit_open_by_handle_at")]
pub fn sys_exit_open_by_handle_at(ctx: TracePointContext) -> u32 {
    report_open(&ctx, OpenSyscall::OpenByHandleAt, |[_, _, flags]| {
        OpenCall {
            path: 0,
            dirfd: AT_FDCWD,
            flags: flags as u32,
        }
    })
}

/// What an open call asked for, from its arguments.
struct OpenCall {
    /// User pointer to the path (0: none).
    path: u64,
    dirfd: i32,
    flags: u32,
}

/// Judges and reports an open of a session's process at its exit, with
/// the call's arguments read there (`call` maps the syscall's first three).
#[inline(always)]
fn report_open(
    ctx: &TracePointContext,
    syscall: OpenSyscall,
    call: impl FnOnce([u64; 3]) -> OpenCall,
) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(member) = member((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let call = call(entry_args());
    let Some(scratch) = OPEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch value, used by this program run only.
    let scratch: &mut OpenScratch = unsafe { &mut *scratch };
    let event = &mut scratch.event;
    let result = ret(ctx);
    event.ret = result;
    event.flags = call.flags;
    judge_opened(event, result, pid_tgid);
    let opened = opened_key(event, &member);
    if let Some(key) = &opened
        && repeated(key)
    {
        return 0;
    }
    fill_header(&mut event.header, Kind::Open, member.session);
    event.dirfd = call.dirfd;
    event.syscall = syscall.code();
    event.truncated = 0;
    let len = unsafe {
        bpf_probe_read_user_str(
            event.path.as_mut_ptr().cast(),
            PATH_CAP as u32,
            call.path as *const _,
        )
    };
    event.path_len = string_len(len, PATH_CAP, &mut event.truncated, truncated::PATH);
    event.base_len = 0;
    if event.path_len > 0 && event.path[0] != b'/' {
        let (cwd, root) = cwd_and_root();
        let dir = if call.dirfd == AT_FDCWD {
            cwd
        } else {
            KPath::read(fd_file(call.dirfd as u32 as u64) + off!(file_f_path))
        };
        let (len, complete) = write_dir_path(dir, root);
        event.base_len = len as u16;
        if !complete {
            event.truncated |= truncated::BASE;
        }
    }
    if send_open(&scratch.event)
        && let Some(key) = opened
    {
        let _ = REPORTED_OPENS.insert(key, 0, 0);
    }
    0
}

/// What names an open for coalescing: the session, the file and the
/// flags; None for a failed open, for a credential's (always reported) and
/// for a session user space has forgotten.
#[inline(always)]
fn opened_key(event: &OpenEvent, member: &Member) -> Option<OpenedKey> {
    if event.ret < 0 || event.cred_classes != 0 || member.state.is_null() {
        return None;
    }
    Some(OpenedKey {
        // SAFETY: a live map value (checked non-null above).
        session_opened_ns: unsafe { (*member.state).opened_ns },
        ino: event.ino,
        session: member.session,
        dev: event.dev,
        flags: event.flags,
        _pad: 0,
    })
}

/// Whether the session reported this open already (any of its processes,
/// the same file and flags): counted, not sent again. Its judgment (a
/// credential's taint) was made all the same, and the content of what it
/// reads was scanned at the first report.
#[inline(always)]
fn repeated(key: &OpenedKey) -> bool {
    // SAFETY: only the key's presence is read.
    if unsafe { REPORTED_OPENS.get(key) }.is_none() {
        return false;
    }
    count(counter::OPENS_REPEATED);
    true
}

/// Names the file descriptor `result` refers to by its identity and taints
/// the session with the credential it is. Decided before the descriptor
/// reaches the process: the session holds the credential from the moment
/// it could read it.
#[inline(always)]
fn judge_opened(event: &mut OpenEvent, result: i64, pid_tgid: u64) {
    let file = if result >= 0 {
        fd_file(result as u64)
    } else {
        0
    };
    let identity = file_identity(file);
    (event.dev, event.ino) = (identity.dev, identity.ino);
    event.cred_classes = credential_classes(file, &identity, pid_tgid);
    if event.cred_classes != 0
        && let Some(member) = member((pid_tgid >> 32) as u32)
    {
        member.taint(event.cred_classes);
    }
}

/// Reports an open known only by the descriptor it gave (an io_uring
/// completion): no path, no flags.
#[inline(always)]
pub fn report_opened_descriptor(session: u32, result: i64, syscall: OpenSyscall) {
    let Some(scratch) = OPEN_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch value, used by this program run only.
    let scratch: &mut OpenScratch = unsafe { &mut *scratch };
    let event = &mut scratch.event;
    fill_header(&mut event.header, Kind::Open, session);
    event.ret = result;
    event.flags = 0;
    event.dirfd = AT_FDCWD;
    event.syscall = syscall.code();
    event.truncated = 0;
    event.path_len = 0;
    event.base_len = 0;
    judge_opened(event, result, bpf_get_current_pid_tgid());
    send_open(&scratch.event);
}

/// Sends an open's record, returning whether it was sent; a read user
/// space may scan is owed to the session's scan fence once user space is
/// sure to see it.
#[inline(always)]
fn send_open(event: &OpenEvent) -> bool {
    let sent = send_with(
        event as *const _,
        event.wire_len(),
        Kind::Open,
        Urgency::Batched,
    );
    if sent && owes_scan(event.ret, event.flags, event.cred_classes) {
        owe_scan(event.header.session);
    }
    sent
}

const PROC_SUPER_MAGIC: u64 = 0x9fa0;
/// "environ\0" as a little-endian u64.
const ENVIRON: u64 = u64::from_le_bytes(*b"environ\0");

/// Credential classes an opened file gives: a catalog credential file by
/// identity, or another process's `/proc/PID/environ` holding credentials.
#[inline(always)]
fn credential_classes(file: u64, identity: &FileIdentity, pid_tgid: u64) -> u64 {
    if file == 0 {
        return 0;
    }
    let key = CredKey {
        dev: identity.dev,
        _pad: 0,
        ino: identity.ino,
    };
    if let Some(class) = unsafe { CREDS.get(key) } {
        return 1u64 << (*class & 63);
    }
    let target = environ_owner(file, identity.sb);
    if target == 0 || target == (pid_tgid >> 32) as u32 {
        return 0;
    }
    unsafe { ENV_CLASSES.get(target) }.copied().unwrap_or(0)
}

/// The pid whose `environ` procfs file this is (on filesystem `sb`), or 0.
#[inline(always)]
fn environ_owner(file: u64, sb: u64) -> u32 {
    if sb == 0 || read::<u64>(sb, off!(super_block_s_magic)) != PROC_SUPER_MAGIC {
        return 0;
    }
    let dentry = read_ptr(file, off!(file_f_path) + off!(path_dentry));
    let name = read_ptr(dentry, off!(dentry_d_name) + off!(qstr_name));
    if name == 0 || read::<u64>(name, 0) != ENVIRON {
        return 0;
    }
    // The parent directory is /proc/<pid> (or /proc/<pid>/task/<tid>).
    let parent = read_ptr(dentry, off!(dentry_d_parent));
    let parent_name = read_ptr(parent, off!(dentry_d_name) + off!(qstr_name));
    let digits = read::<[u8; 16]>(parent_name, 0);
    let mut pid: u32 = 0;
    for digit in digits.iter().take(10) {
        match digit {
            b'0'..=b'9' => pid = pid * 10 + u32::from(digit - b'0'),
            0 => return pid,
            _ => return 0,
        }
    }
    0
}
