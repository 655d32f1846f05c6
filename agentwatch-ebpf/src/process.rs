//! Process sensor: keeps `PROCS` equal to the set of processes in sessions
//! (children join their parent's session at fork, entries leave at exit) and
//! reports fork, exec and exit.

use agentwatch_common::{
    event::{ARGV_CAP, ExecEvent, ExitEvent, FILENAME_CAP, ForkEvent, agent, truncated},
    maps::{ExecArgs, ProcInfo, counter},
    names::Kind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

use crate::{
    discover::discover_agent,
    emit::{Urgency, fill_header, send, send_value, send_with},
    env::scan_environment,
    kernel::{current_task, off, read, read_ptr},
    maps::{ENV_CLASSES, PENDING_EXECS, PROCS, SPAWNERS, config, count},
    operation::{exec_judgment, forget_process, hold_command, kill_unjudged_command},
    scratch::EXEC_SCRATCH,
    session::member,
    syscall::{arg, ret},
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let (session, parent_in_session) = match member(parent_tgid) {
        Some(member) => (member.session, true),
        None => match unsafe { SPAWNERS.get(parent_tgid) } {
            Some(session) => (*session, false),
            None => return 0,
        },
    };
    let child: u64 = ctx.arg(1);
    let child_tgid = read::<u32>(child, off!(task_tgid));
    if child_tgid == parent_tgid || child_tgid == 0 {
        return 0; // a new thread, already covered by its process
    }
    let info = ProcInfo { session, _pad: 0 };
    if PROCS.insert(child_tgid, info, 0).is_err() {
        count(counter::PROCS_FULL);
    }
    forget_process(child_tgid);
    if parent_in_session {
        let mut event = ForkEvent::default();
        fill_header(&mut event.header, Kind::Fork, session);
        event.child = child_tgid;
        send_value(&event, Kind::Fork, Urgency::Batched);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Membership is looked up again after the scan: an Option<Member> kept
    // across the bpf_loop call makes LLVM spill an uninitialised register.
    let tracked = unsafe { PROCS.get(tgid) }.is_some();
    let config = config();
    let discover = !tracked && config.discover != 0;
    if !tracked && config.scan_all_env == 0 && !discover {
        return 0;
    }
    // Before the new program runs: a session started with RAILWAY_TOKEN in
    // its environment holds the credential from this moment.
    let environment = scan_environment(discover);
    if environment.classes != 0 {
        let _ = ENV_CLASSES.insert(tgid, environment.classes, 0);
    }
    let agent = if discover {
        discover_agent(tgid, environment.agent, &config, ctx.arg(2))
    } else {
        0
    };
    let session = match member(tgid) {
        Some(member) => {
            member.taint(environment.classes);
            member.session
        }
        // Held for user space to decide: reported outside any session.
        None if agent & agent::HELD != 0 => 0,
        None => return 0,
    };
    let _ = PENDING_EXECS.remove(pid_tgid);
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let event = unsafe { &mut *event };
    fill_header(&mut event.header, Kind::Exec, session);
    event.env_classes = environment.classes;
    event.agent = agent;
    event.ret = 0;
    event.truncated = 0;
    let bprm: u64 = ctx.arg(2);
    let filename = read_ptr(bprm, off!(bprm_filename));
    let len = unsafe {
        bpf_probe_read_kernel_str(
            event.filename.as_mut_ptr().cast(),
            FILENAME_CAP as u32,
            filename as *const _,
        )
    };
    event.filename_len = string_len(len, FILENAME_CAP, &mut event.truncated, truncated::FILENAME);
    read_argv(event);
    event.hold = 0;
    let held_command = session != 0 && exec_judgment(tgid, event);
    // A held or paused agent, or a held command, waits, stopped, for user
    // space to answer.
    let urgency = if agent == 0 && !held_command {
        Urgency::Batched
    } else {
        Urgency::Now
    };
    if held_command {
        hold_command();
    }
    let sent = send_with(
        event as *const ExecEvent,
        event.wire_len(),
        Kind::Exec,
        urgency,
    );
    if held_command && !sent {
        kill_unjudged_command();
    }
    0
}

/// Copies the new image's argument block (`mm->arg_start..arg_end`), which the
/// kernel has just laid out contiguously on its stack.
#[inline(always)]
fn read_argv(event: &mut ExecEvent) {
    let mm = read_ptr(current_task(), off!(task_mm));
    let start = read_ptr(mm, off!(mm_arg_start));
    let end = read_ptr(mm, off!(mm_arg_end));
    let mut len = end.saturating_sub(start) as usize;
    if len > ARGV_CAP {
        len = ARGV_CAP;
        event.truncated |= truncated::ARGV;
    }
    let ret = unsafe {
        bpf_probe_read_user(
            event.argv.as_mut_ptr().cast(),
            len as u32,
            start as *const _,
        )
    };
    if ret != 0 {
        count(counter::READ_FAILED);
        len = 0;
    }
    event.argv_len = len as u16;
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let session = unsafe { PROCS.get(tgid) }.map(|info| info.session);
    let env_known = unsafe { ENV_CLASSES.get(tgid) }.is_some();
    if session.is_none() && !env_known {
        return 0;
    }
    // A thread killed in the middle of a syscall leaves its saved arguments.
    let _ = PENDING_EXECS.remove(pid_tgid);
    let task = current_task();
    let signal = read_ptr(task, off!(task_signal));
    // `live` drops to zero when the last thread of the group is exiting.
    if signal == 0 || read::<i32>(signal, off!(signal_live)) != 0 {
        return 0;
    }
    let _ = ENV_CLASSES.remove(tgid);
    let Some(session) = session else {
        return 0;
    };
    let mut event = ExitEvent::default();
    fill_header(&mut event.header, Kind::Exit, session);
    event.exit_code = read::<u32>(task, off!(task_exit_code));
    send_value(&event, Kind::Exit, Urgency::Batched);
    let _ = PROCS.remove(tgid);
    forget_process(tgid);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    save_exec(&ctx, arg(&ctx, 0))
}

#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    save_exec(&ctx, arg(&ctx, 1))
}

#[inline(always)]
fn save_exec(_ctx: &TracePointContext, filename: u64) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(member) = member((pid_tgid >> 32) as u32) else {
        return 0;
    };
    let args = ExecArgs {
        filename,
        session: member.session,
        _pad: 0,
    };
    if PENDING_EXECS.insert(pid_tgid, args, 0).is_err() {
        count(counter::PENDING_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_execve")]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    report_failed_exec(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_exit_execveat")]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    report_failed_exec(&ctx)
}

/// A successful exec was reported by `sched_process_exec`; only a failure
/// (the old image still running) is reported here, with the name it tried.
#[inline(always)]
fn report_failed_exec(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { PENDING_EXECS.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING_EXECS.remove(pid_tgid);
    let result = ret(ctx);
    if result >= 0 {
        return 0;
    }
    let Some(event) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let event = unsafe { &mut *event };
    fill_header(&mut event.header, Kind::Exec, args.session);
    event.env_classes = 0;
    event.ret = result as i32;
    event.truncated = 0;
    event.hold = 0;
    let len = unsafe {
        bpf_probe_read_user_str(
            event.filename.as_mut_ptr().cast(),
            FILENAME_CAP as u32,
            args.filename as *const _,
        )
    };
    event.filename_len = string_len(len, FILENAME_CAP, &mut event.truncated, truncated::FILENAME);
    event.argv_len = 0;
    send(event as *const ExecEvent, event.wire_len(), Kind::Exec);
    0
}

/// Length without the NUL of a string helper's result, marking a string that
/// filled its whole buffer as possibly truncated.
#[inline(always)]
pub fn string_len(helper_ret: i64, cap: usize, flags: &mut u8, bit: u8) -> u16 {
    if helper_ret <= 0 {
        count(counter::READ_FAILED);
        return 0;
    }
    let len = helper_ret as usize - 1;
    if len >= cap - 1 {
        *flags |= bit;
    }
    len as u16
}
