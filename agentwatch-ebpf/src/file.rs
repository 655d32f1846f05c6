//! File sensor: open, openat, openat2 and creat. Entry saves the arguments of
//! a tracked process; exit reports the path, the base directory of a relative
//! path, and the identity (device, inode) of the file actually opened.

use agentwatch_common::{
    event::{AT_FDCWD, PATH_CAP, kind, open_syscall, truncated},
    maps::{OpenArgs, counter},
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
    emit::{fill_header, send},
    kernel::{fd_file, file_identity, off},
    maps::{OPEN_SCRATCH, OpenScratch, PENDING_OPENS, count, session_of},
    path::{KPath, cwd_and_root, write_dir_path},
    process::string_len,
    syscall::{arg, ret},
};

const O_WRONLY: u32 = 0o1;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;

#[tracepoint(category = "syscalls", name = "sys_enter_openat")]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    save_open(
        arg(&ctx, 1),
        arg(&ctx, 0) as i32,
        open_syscall::OPENAT,
        || arg(&ctx, 2) as u32,
    )
}

#[tracepoint(category = "syscalls", name = "sys_enter_openat2")]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    save_open(
        arg(&ctx, 1),
        arg(&ctx, 0) as i32,
        open_syscall::OPENAT2,
        || {
            // `struct open_how` starts with the u64 flags.
            let mut flags: u64 = 0;
            unsafe {
                bpf_probe_read_user((&mut flags as *mut u64).cast(), 8, arg(&ctx, 2) as *const _);
            }
            flags as u32
        },
    )
}

#[tracepoint(category = "syscalls", name = "sys_enter_open")]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    save_open(arg(&ctx, 0), AT_FDCWD, open_syscall::OPEN, || {
        arg(&ctx, 1) as u32
    })
}

#[tracepoint(category = "syscalls", name = "sys_enter_creat")]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    save_open(arg(&ctx, 0), AT_FDCWD, open_syscall::CREAT, || {
        O_CREAT | O_WRONLY | O_TRUNC
    })
}

#[inline(always)]
fn save_open(path: u64, dirfd: i32, syscall: u8, flags: impl FnOnce() -> u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(session) = session_of((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let args = OpenArgs {
        path,
        session,
        dirfd,
        flags: flags(),
        syscall,
        _pad: [0; 3],
    };
    if PENDING_OPENS.insert(pid_tgid, args, 0).is_err() {
        count(counter::PENDING_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat")]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    report_open(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_openat2")]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    report_open(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_open")]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    report_open(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_creat")]
pub fn sys_exit_creat(ctx: TracePointContext) -> u32 {
    report_open(&ctx)
}

#[inline(always)]
fn report_open(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { PENDING_OPENS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING_OPENS.remove(pid_tgid);
    let Some(scratch) = OPEN_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch: &mut OpenScratch = unsafe { &mut *scratch };
    let event = &mut scratch.event;
    fill_header(&mut event.header, kind::OPEN, args.session);
    let result = ret(ctx);
    event.ret = result;
    event.flags = args.flags;
    event.dirfd = args.dirfd;
    event.syscall = args.syscall;
    event.truncated = 0;
    let len = unsafe {
        bpf_probe_read_user_str(
            event.path.as_mut_ptr().cast(),
            PATH_CAP as u32,
            args.path as *const _,
        )
    };
    event.path_len = string_len(len, PATH_CAP, &mut event.truncated, truncated::PATH);
    (event.dev, event.ino) = if result >= 0 {
        file_identity(fd_file(result as u64))
    } else {
        (0, 0)
    };
    event.base_len = 0;
    if event.path_len > 0 && event.path[0] != b'/' {
        let (cwd, root) = cwd_and_root();
        let dir = if args.dirfd == AT_FDCWD {
            cwd
        } else {
            KPath::read(fd_file(args.dirfd as u32 as u64) + off!(file_f_path))
        };
        let (len, complete) = write_dir_path(dir, root);
        event.base_len = len as u16;
        if !complete {
            event.truncated |= truncated::BASE;
        }
    }
    send(
        &scratch.event as *const _,
        scratch.event.wire_len(),
        kind::OPEN,
    );
    0
}
