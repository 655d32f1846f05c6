//! Scanning a new image's environment for credential variables, right after
//! exec and before the program runs: `mm->env_start..env_end` is the block of
//! `NAME=VALUE\0` strings the kernel just copied onto its stack.

use core::ffi::c_void;

use agentwatch_common::{
    env::{ENTRY_CAP, hash_entry},
    maps::counter,
};
use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_user_str};

use crate::{
    kernel::{current_task, off, read_ptr},
    maps::{AGENT_MARKERS, ENV_NAMES, count},
    scratch::ENV_SCRATCH,
};

/// Strings (or 255-byte pieces of long ones) examined per exec.
const MAX_STEPS: u32 = 1024;

/// What the current task's environment holds.
pub struct Environment {
    /// Credential classes of the variables set.
    pub classes: u64,
    /// The agent an environment marker names, 0 if none (or not looked for).
    pub agent: u32,
}

#[inline(always)]
pub fn scan_environment(discover: bool) -> Environment {
    let none = Environment {
        classes: 0,
        agent: 0,
    };
    let Some(scan) = ENV_SCRATCH.get_ptr_mut(0) else {
        return none;
    };
    let scan = unsafe { &mut *scan };
    let mm = read_ptr(current_task(), off!(task_mm));
    scan.cursor = read_ptr(mm, off!(mm_env_start));
    scan.end = read_ptr(mm, off!(mm_env_end));
    scan.classes = 0;
    scan.discover = discover as u64;
    scan.agent = 0;
    scan.skipping = 0;
    unsafe { bpf_loop(MAX_STEPS, env_step as *mut c_void, core::ptr::null_mut(), 0) };
    // Re-borrow: the callback wrote through the map pointer.
    let Some(scan) = ENV_SCRATCH.get_ptr_mut(0) else {
        return none;
    };
    let scan = unsafe { &*scan };
    if scan.cursor < scan.end {
        count(counter::ENV_TRUNCATED);
    }
    Environment {
        classes: scan.classes,
        agent: scan.agent as u32,
    }
}

extern "C" fn env_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scan) = ENV_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let scan = unsafe { &mut *scan };
    if scan.cursor >= scan.end {
        return 1;
    }
    let read = unsafe {
        bpf_probe_read_user_str(
            scan.entry.as_mut_ptr().cast(),
            ENTRY_CAP as u32,
            scan.cursor as *const _,
        )
    };
    if read <= 0 {
        return 1;
    }
    if scan.skipping == 0 {
        let hashes = hash_entry(&scan.entry);
        if hashes.name != 0
            && let Some(name) = unsafe { ENV_NAMES.get(hashes.name) }
        {
            scan.classes |= name.classes;
        }
        if scan.discover != 0 && scan.agent == 0 {
            // `NAME` present with any value, or exactly `NAME=value`.
            let marker = unsafe { AGENT_MARKERS.get(hashes.name) }
                .or_else(|| unsafe { AGENT_MARKERS.get(hashes.whole) });
            if let Some(agent) = marker {
                scan.agent = u64::from(*agent);
            }
        }
    }
    if read as usize == ENTRY_CAP {
        // The string goes on: its next piece starts where this read stopped.
        scan.cursor += ENTRY_CAP as u64 - 1;
        scan.skipping = 1;
    } else {
        scan.cursor += read as u64;
        scan.skipping = 0;
    }
    0
}
