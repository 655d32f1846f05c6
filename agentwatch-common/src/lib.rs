//! Types shared by agentwatch's kernel programs and its user-space daemon.
//! Everything here is `#[repr(C)]` and `no_std`: the same definitions are
//! compiled into the eBPF object and into the daemon that decodes its output.
#![cfg_attr(not(test), no_std)]

pub mod dns;
pub mod env;
pub mod event;
pub mod features;
pub mod hash;
pub mod maps;
pub mod offsets;
