//! Reading `syscalls:sys_enter_*` / `sys_exit_*` records. Their layout is the
//! same for every syscall: arguments are 8-byte slots from offset 16, and the
//! exit record's return value sits at offset 16.

use aya_ebpf::{EbpfContext, programs::TracePointContext};

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
