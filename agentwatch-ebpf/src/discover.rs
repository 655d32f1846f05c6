//! Agent discovery at exec (daemon mode): a process whose executable name,
//! executable's directories or environment marks it as an agent gets a
//! session before its first instruction; an interpreter an agent may run
//! as is held for user space.

use agentwatch_common::{
    event::agent,
    hash::{DIR_NAME_CAP, comm_hash, dir_name_step, fnv_start},
    maps::{Config, counter},
};
use aya_ebpf::helpers::{bpf_get_current_comm, generated::bpf_send_signal};

use crate::{
    kernel::{off, read, read_ptr},
    maps::{AGENT_COMMS, AGENT_DIRS, HELD, count},
    session::{SIGSTOP, open_session},
};

/// Returns the agent id `tgid` was found as (with `HELD` when it is held for
/// user space to match its argv), or 0. `bprm` is the exec's `linux_binprm`.
#[inline(always)]
pub fn discover_agent(tgid: u32, env_agent: u32, config: &Config, bprm: u64) -> u32 {
    // At this tracepoint `comm` already holds the new executable's name.
    let comm = bpf_get_current_comm().unwrap_or_default();
    let by_name = unsafe { AGENT_COMMS.get(comm_hash(&comm)) }
        .copied()
        .unwrap_or(0);
    let agent = if by_name != 0 && by_name & agent::HELD == 0 {
        by_name
    } else if env_agent != 0 {
        env_agent
    } else if by_name != 0 {
        by_name
    } else {
        agent_by_directory(bprm)
    };
    if agent & agent::HELD != 0 {
        // Recorded first, so that no process is stopped without user space
        // being able to find it, even if its exec event is lost.
        if HELD.insert(tgid, 1, 0).is_err() {
            count(counter::HELD_FULL);
            return 0;
        }
        unsafe { bpf_send_signal(SIGSTOP) };
    } else if agent != 0 {
        open_session(tgid, config.default_action);
        if config.syscalls_attached == 0 {
            unsafe { bpf_send_signal(SIGSTOP) };
            return agent | agent::PAUSED;
        }
    }
    agent
}

/// The agent whose install the executable lies in, by its two innermost
/// directories (`…/claude/versions/2.1.197`), or 0. Read from the file
/// being executed, so a symlink or a relative path names the same place.
#[inline(always)]
fn agent_by_directory(bprm: u64) -> u32 {
    let file = read_ptr(bprm, off!(bprm_file));
    let dentry = read_ptr(file, off!(file_f_path) + off!(path_dentry));
    let parent = read_ptr(dentry, off!(dentry_d_parent));
    let grandparent = read_ptr(parent, off!(dentry_d_parent));
    let mut hash = fnv_start();
    for dir in [grandparent, parent] {
        let len = read::<u32>(dir, off!(dentry_d_name) + off!(qstr_len)) as usize;
        // A longer name is in no policy entry.
        if dir == 0 || len > DIR_NAME_CAP {
            return 0;
        }
        let name = read_ptr(dir, off!(dentry_d_name) + off!(qstr_name));
        // Bytes past the name's end are read but not hashed.
        hash = dir_name_step(hash, len, |offset| read::<u64>(name, offset as u64));
    }
    unsafe { AGENT_DIRS.get(hash) }.copied().unwrap_or(0)
}
