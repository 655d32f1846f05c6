//! Everything that touches the kernel: BTF offsets, mounts, loading and
//! attaching the programs, and the maps and ring buffer they share.

pub mod btf;
pub mod features;
pub mod maps;
pub mod mounts;
pub mod probes;
pub mod ringbuf;
pub mod teardown;
pub mod tls;

#[cfg(test)]
mod tests;
