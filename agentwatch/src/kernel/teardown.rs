//! Detaching without making the caller wait. Releasing a tracepoint's or a
//! uprobe's perf link waits for RCU grace periods, one link after another:
//! about 2 s for the two dozen `run` attaches, spent in the exit of
//! whichever process closes a link's last descriptor. So `run` hands its
//! programs' descriptors to a child that closes everything else, waits for
//! `run` to have exited, and exits in turn: the detaching happens in the
//! child's exit, after the caller (a shell, a test) has its status.
//!
//! The child holds a shared lock on [`DETACHING`] until its last link is
//! released, and a start takes it exclusively before attaching: a start
//! right after a `run` waits for that run's detaching instead of patching
//! the kernel's tracepoints while they are being unpatched (the kernel
//! serialises both, but qemu's emulation has locked up on the overlap).

use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd as _,
    path::Path,
};

use anyhow::{Context as _, Result};
use nix::{
    fcntl::{Flock, FlockArg},
    unistd::{ForkResult, fork, pipe},
};
use tracing::debug;

use agentwatch_common::names::DETACHING_LOCK as DETACHING;

/// Takes the lock on [`DETACHING`], waiting for it.
fn take_lock(how: FlockArg) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(DETACHING)
        .with_context(|| format!("opening {DETACHING}"))?;
    Flock::lock(file, how)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {DETACHING}"))
}

/// Waits until no earlier run's programs are still being detached. Where
/// the lock cannot be had (a read-only `/run`, as the daemon's unit makes
/// it) there is no run detaching to wait for that could have made it.
pub fn wait_for_earlier_detaching() {
    // Released as it is dropped: only the wait matters.
    if let Err(error) = take_lock(FlockArg::LockExclusive) {
        debug!("not waiting for earlier runs' detaching: {error:#}");
    }
}

/// What `/proc/self/fd/N` links to for the kernel objects a link's release
/// needs: programs, maps, links and perf events.
const KERNEL_OBJECTS: &[&str] = &[
    "anon_inode:bpf-prog",
    "anon_inode:bpf-map",
    "anon_inode:bpf_link",
    "anon_inode:[perf_event]",
];

/// Forks the child that keeps this process's kernel objects until it has
/// exited. The child closes every other descriptor first (the caller's
/// pipes see their end when this process exits, not when the child does).
pub fn detach_after_exit() -> Result<()> {
    let (woken, wake) = pipe().context("creating the teardown pipe")?;
    // Shared by the fork: the child's until it exits.
    let lock = take_lock(FlockArg::LockShared)?;
    let (objects, highest) = descriptors()?;
    let mut keep = objects.clone();
    keep.extend([woken.as_raw_fd(), lock.as_raw_fd()]);
    keep.sort_unstable();
    // SAFETY: the child of a multi-threaded process only makes
    // async-signal-safe calls (close, read, _exit) on memory prepared
    // before the fork, and never returns.
    match unsafe { fork() }.context("forking the teardown child")? {
        ForkResult::Child => unsafe {
            for fd in 0..=highest {
                if keep.binary_search(&fd).is_err() {
                    libc::close(fd);
                }
            }
            let mut byte = 0u8;
            // End of file once this process's end of the pipe is closed,
            // by its exit.
            libc::read(woken.as_raw_fd(), (&raw mut byte).cast(), 1);
            // Each close releases its object before it returns; the lock
            // goes with the exit, after them.
            for fd in &objects {
                libc::close(*fd);
            }
            libc::_exit(0)
        },
        ForkResult::Parent { .. } => {
            drop(woken);
            // Open until this process exits: the child's signal.
            std::mem::forget(wake);
            // This process's copy must not unlock the child's: the lock
            // is the open file's, released when its last copy is closed.
            std::mem::forget(lock);
            Ok(())
        }
    }
}

/// This process's descriptors of programs, maps, links and perf events,
/// and its highest descriptor.
fn descriptors() -> Result<(Vec<i32>, i32)> {
    let dir = Path::new("/proc/self/fd");
    let (mut kept, mut highest) = (Vec::new(), 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        highest = highest.max(fd);
        if let Ok(target) = std::fs::read_link(entry.path())
            && KERNEL_OBJECTS
                .iter()
                .any(|kind| target.as_os_str() == *kind)
        {
            kept.push(fd);
        }
    }
    Ok((kept, highest))
}
