//! agentwatch's kernel programs. One module per sensor (process, file,
//! network, first write, DNS, operation); every per-process program returns at its
//! first map lookup for a process outside any session, and every socket
//! program at its first lookup for a socket no session connected.
#![no_std]
#![no_main]
// Atomic fetch-or on map values: bpfel has no `core::sync::atomic` RMW types.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod catalog;
mod discover;
mod dns;
mod emit;
mod env;
mod file;
mod first_write;
mod judge;
mod kernel;
mod maps;
mod net;
mod operation;
mod path;
mod process;
mod scratch;
mod session;
mod syscall;
mod uring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects any path here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
