//! Reading `syscalls:sys_enter_*` / `sys_exit_*` records. Their layout is the
//! same for every syscall: arguments are 8-byte slots from offset 16, and the
//! exit record's return value sits at offset 16.
//!
//! An exit program reads the call's arguments from the task's saved user
//! registers instead ([`entry_args`]): the syscall leaves them as they were
//! at entry, so no entry program and no map carry them across the call.

use core::mem::offset_of;

use aya_ebpf::{
    EbpfContext,
    bindings::pt_regs,
    helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    programs::TracePointContext,
};

use crate::kernel::read;

/// The `n`th argument of a `sys_enter_*` record.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // Tracepoint records are directly readable context memory.
    unsafe { *(ctx.as_ptr() as *const u64).add(2 + n) }
}

/// The return value in a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { *(ctx.as_ptr() as *const i64).add(2) }
}

// The x86-64 syscall ABI passes arguments 1-3 in rdi, rsi and rdx, which
// `pt_regs` holds in reverse order, side by side: one read takes all three.
const FIRST_ARG_REGS: usize = offset_of!(pt_regs, rdx);
const _: () = assert!(
    offset_of!(pt_regs, rsi) == FIRST_ARG_REGS + 8
        && offset_of!(pt_regs, rdi) == FIRST_ARG_REGS + 16
);

/// The first three arguments of the syscall the current task is in, from a
/// `sys_exit_*` program: as its `sys_enter_*` record had them.
#[inline(always)]
pub fn entry_args() -> [u64; 3] {
    // SAFETY: both helpers take and give kernel pointers the verifier
    // types; the registers are read with bpf_probe_read_kernel.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let [rdx, rsi, rdi] = read::<[u64; 3]>(regs, FIRST_ARG_REGS as u64);
    [rdi, rsi, rdx]
}
