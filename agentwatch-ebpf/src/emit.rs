//! Filling record headers and sending records to user space.

use agentwatch_common::{event::EventHeader, maps::counter, names::Kind};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::bpf_ktime_get_boot_ns,
};
use aya_ebpf::maps::ring_buf::RingBufEntry;

use crate::{
    kernel::current_ppid,
    maps::{EVENTS, count},
};

#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: Kind, session: u32) {
    fill_writer_header(header, kind, session);
    header.ppid = current_ppid();
    header.comm = bpf_get_current_comm().unwrap_or_default();
}

/// What sk_msg programs may learn of the writing task on every supported
/// kernel: not its comm or parent (user space names those from /proc).
#[inline(always)]
pub fn fill_writer_header(header: &mut EventHeader, kind: Kind, session: u32) {
    fill_session_header(header, kind, session);
    let pid_tgid = bpf_get_current_pid_tgid();
    header.pid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.uid = bpf_get_current_uid_gid() as u32;
}

/// A header without a task, for programs that may run in none (cgroup skb).
#[inline(always)]
pub fn fill_session_header(header: &mut EventHeader, kind: Kind, session: u32) {
    *header = EventHeader::default();
    header.kind = kind.code();
    header.session = session;
    header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
}

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;

/// How soon user space must hear of a record. A wake-up per record costs
/// the traced syscall more than the record itself, so routine events are
/// batched (user space drains every few milliseconds, or when a quarter of
/// the buffer is used); what user space must act on wakes it at once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Batched,
    Now,
}

#[inline(always)]
fn wakeup_flags(urgency: Urgency) -> u64 {
    if urgency == Urgency::Now {
        return BPF_RB_FORCE_WAKEUP;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) * 4 >= EVENTS.query(BPF_RB_RING_SIZE) {
        // Filling up: let the kernel wake a reader that has caught up.
        0
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Copies the first `len` bytes of `record` to the ring buffer, counting the
/// record as lost when the buffer is full.
#[inline(always)]
pub fn send<T>(record: *const T, len: usize, kind: Kind) {
    send_with(record, len, kind, Urgency::Batched);
}

/// Returns whether the record was sent.
#[inline(always)]
pub fn send_with<T>(record: *const T, len: usize, kind: Kind, urgency: Urgency) -> bool {
    let len = if len > core::mem::size_of::<T>() {
        core::mem::size_of::<T>()
    } else {
        len
    };
    let bytes = unsafe { core::slice::from_raw_parts(record.cast::<u8>(), len) };
    let sent = EVENTS.output::<[u8]>(bytes, wakeup_flags(urgency)).is_ok();
    if !sent {
        count(counter::LOST_BASE + kind.code());
    }
    sent
}

/// Room for a record of `T` in the ring buffer, filled in place and sent
/// with [`submit_now`] once the caller has done what must come before user
/// space can see it (stopping the writer it describes). None, counted as
/// lost, when the buffer is full.
#[inline(always)]
pub fn reserve<T: 'static>(kind: Kind) -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(counter::LOST_BASE + kind.code());
    }
    entry
}

#[inline(always)]
pub fn submit_now<T>(entry: RingBufEntry<T>) {
    entry.submit(BPF_RB_FORCE_WAKEUP);
}

/// Sends a small record built on the stack.
#[inline(always)]
pub fn send_value<T>(record: &T, kind: Kind, urgency: Urgency) {
    send_with(record as *const T, core::mem::size_of::<T>(), kind, urgency);
}
