//! Types shared by agentwatch's kernel programs and its user-space daemon.
//! Everything here is `#[repr(C)]` and `no_std`: the same definitions are
//! compiled into the eBPF object and into the daemon that decodes its output.
// User space (the `user` feature) has std, for the names' parse errors.
#![cfg_attr(not(any(test, feature = "user")), no_std)]

pub mod dns;
pub mod env;
pub mod event;
pub mod features;
pub mod first_write;
pub mod hash;
pub mod maps;
pub mod names;
pub mod offsets;
pub mod uring;
