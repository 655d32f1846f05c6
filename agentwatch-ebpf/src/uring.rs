//! io_uring sensor: an open a session submits to an io_uring
//! (`IORING_OP_OPENAT`, `IORING_OP_OPENAT2`) passes no open syscall. Its
//! submission is remembered; at its completion, before the process can
//! read the descriptor from the ring, the opened file is known by its
//! identity as every open is, and a credential taints the session. An open
//! into the ring's own file table (a direct descriptor) gives no descriptor
//! to know the file by: the session is then treated as holding every
//! credential (fail closed), and it is counted.

use agentwatch_common::{
    maps::counter,
    names::OpenSyscall,
    uring::{COMPLETE_REQ, COMPLETE_RES, OPENAT, OPENAT2, SUBMIT_OPCODE, SUBMIT_REQ},
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::{
    file::report_opened_descriptor,
    kernel::{off, read},
    maps::{IOURING_OPENS, count},
    session::member,
};

/// Every credential class: what a session whose open cannot be seen holds.
const EVERY_CREDENTIAL: u64 = u64::MAX;

#[tracepoint(category = "io_uring", name = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: TracePointContext) -> u32 {
    let Some(member) = member((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return 0;
    };
    // SAFETY: offsets of this tracepoint's record, checked against tracefs.
    let opcode: u8 = unsafe { ctx.read_at(SUBMIT_OPCODE.offset) }.unwrap_or(0);
    if opcode != OPENAT && opcode != OPENAT2 {
        return 0;
    }
    let req: u64 = unsafe { ctx.read_at(SUBMIT_REQ.offset) }.unwrap_or(0);
    // Set by the open's prep, which ran before this tracepoint.
    let slot: u32 = read(req, off!(io_kiocb_cmd) + off!(io_open_file_slot));
    if slot != 0 || IOURING_OPENS.insert(req, member.session, 0).is_err() {
        count(counter::IOURING_UNSEEN_OPENS);
        member.taint(EVERY_CREDENTIAL);
    }
    0
}

#[tracepoint(category = "io_uring", name = "io_uring_complete")]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of this tracepoint's record, checked against tracefs.
    let req: u64 = unsafe { ctx.read_at(COMPLETE_REQ.offset) }.unwrap_or(0);
    let Some(session) = (unsafe { IOURING_OPENS.get(req) }).copied() else {
        return 0;
    };
    let _ = IOURING_OPENS.remove(req);
    let result: i32 = unsafe { ctx.read_at(COMPLETE_RES.offset) }.unwrap_or(-1);
    // The completion runs in a thread of the submitting process (the
    // submitter, an io-wq worker or the SQPOLL thread), whose descriptor
    // table holds the new descriptor.
    report_opened_descriptor(session, i64::from(result), OpenSyscall::IoUring);
    0
}
