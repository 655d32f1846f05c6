//! Agent discovery at exec (daemon mode): a process whose executable name or
//! environment marks it as an agent gets a session before its first
//! instruction; an interpreter an agent may run as is held for user space.

use agentwatch_common::{
    event::agent,
    hash::comm_hash,
    maps::{Config, counter},
};
use aya_ebpf::helpers::{bpf_get_current_comm, generated::bpf_send_signal};

use crate::{
    maps::{AGENT_COMMS, HELD, count},
    session::{SIGSTOP, open_session},
};

/// Returns the agent id `tgid` was found as (with `HELD` when it is held for
/// user space to match its argv), or 0.
#[inline(always)]
pub fn discover_agent(tgid: u32, env_agent: u32, config: &Config) -> u32 {
    // At this tracepoint `comm` already holds the new executable's name.
    let comm = bpf_get_current_comm().unwrap_or_default();
    let by_name = unsafe { AGENT_COMMS.get(comm_hash(&comm)) }
        .copied()
        .unwrap_or(0);
    let agent = if by_name != 0 && by_name & agent::HELD == 0 {
        by_name
    } else if env_agent != 0 {
        env_agent
    } else {
        by_name
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
