//! First-write sensor: a session's established TCP sockets enter a sockhash
//! (sock_ops), and the sk_msg program attached to it reads each socket's
//! first write for the name it asks for (TLS server name, HTTP `Host:`, a
//! proxy's `CONNECT` target), judges that name, and refuses the write with
//! EACCES before a byte leaves. A socket that named an infrastructure host
//! stays watched, so a write after a later credential read is refused too;
//! any other leaves the sockhash (user space takes it out), so a long
//! download pays nothing per write. A ClientHello of probed OpenSSL leaves
//! the judgment to `SSL_write` (`operation.rs`), and a plaintext request
//! that only reads (`GET`, `HEAD`, `OPTIONS`) passes.

use core::ffi::c_void;

use agentwatch_common::{
    first_write::{MAX_STEPS, NameParser, Step, WRITE_CAP, phase},
    maps::{HostClass, SocketKey, SocketMark, SocketState, counter, socket_flags},
    names::{Kind, NameSource, SocketJudgment},
};
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE, sk_action::SK_DROP, sk_action::SK_PASS,
    },
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{
            bpf_get_socket_cookie, bpf_loop, bpf_msg_pull_data, bpf_probe_read_kernel,
            bpf_sock_ops_cb_flags_set,
        },
    },
    macros::{sk_msg, sock_ops},
    programs::{SkMsgContext, SockOpsContext},
};

use crate::{
    catalog::{AF_INET, address_host, classify},
    emit::{fill_writer_header, send},
    judge::{Decision, Destination, Named, held_credentials, judge},
    maps::{SOCKET_MARKS, SOCKET_STATES, SOCKETS, count, count_watched, flag_uninspected},
    operation::{granted, refused_writer, tls_inspected},
    scratch::{WRITE_SCRATCH, WriteScratch},
    session::{session_of, socket_member},
};

#[sock_ops]
pub fn socket_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => watch(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => forget(&ctx),
        _ => {}
    }
    1
}

/// The fields of a socket both contexts hold. Each is read unconditionally
/// and volatile: the verifier accepts only loads at a constant offset from
/// the context pointer, and a branch on the family would let the compiler
/// load through a pointer chosen by the branch.
macro_rules! socket_key {
    ($ctx:expr) => {{
        let ctx = $ctx;
        // SAFETY: loads of the program's own context fields.
        let field = |field: *const u32| unsafe { core::ptr::read_volatile(field) };
        let (family, remote_port, local_port) = unsafe {
            (
                field(&raw const (*ctx).family),
                field(&raw const (*ctx).remote_port),
                field(&raw const (*ctx).local_port),
            )
        };
        let ip4 = unsafe {
            [
                field(&raw const (*ctx).remote_ip4),
                field(&raw const (*ctx).local_ip4),
            ]
        };
        let remote_ip6 = unsafe {
            [
                field(&raw const (*ctx).remote_ip6[0]),
                field(&raw const (*ctx).remote_ip6[1]),
                field(&raw const (*ctx).remote_ip6[2]),
                field(&raw const (*ctx).remote_ip6[3]),
            ]
        };
        let local_ip6 = unsafe {
            [
                field(&raw const (*ctx).local_ip6[0]),
                field(&raw const (*ctx).local_ip6[1]),
                field(&raw const (*ctx).local_ip6[2]),
                field(&raw const (*ctx).local_ip6[3]),
            ]
        };
        let v4 = family == u32::from(AF_INET);
        SocketKey {
            family,
            // Network order in the low 16 bits, however the kernel hands it over.
            remote_port: if remote_port >> 16 != 0 {
                remote_port >> 16
            } else {
                remote_port
            },
            local_port,
            _pad: 0,
            remote_ip: if v4 { [ip4[0], 0, 0, 0] } else { remote_ip6 },
            local_ip: if v4 { [ip4[1], 0, 0, 0] } else { local_ip6 },
        }
    }};
}

/// A marked socket is established: watch its writes.
#[inline(always)]
fn watch(ctx: &SockOpsContext) {
    // SAFETY: the context's own socket, as the helper expects.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(mark) = (unsafe { SOCKET_MARKS.get(cookie) }).copied() else {
        return;
    };
    let mut key = socket_key!(ctx.ops);
    let judgment = if mark.flags & socket_flags::APPROVED != 0 {
        SocketJudgment::Approved
    } else {
        SocketJudgment::Pending
    };
    let Some(state) = fresh_state(mark.session, judgment) else {
        return;
    };
    if SOCKET_STATES.insert(key, *state, 0).is_err() {
        uninspected(cookie, mark);
        return;
    }
    // Full, or another program's sk_msg owns the socket.
    // SAFETY: the program's context, as the helper expects.
    if SOCKETS
        .update(&mut key, unsafe { &mut *ctx.ops }, 0)
        .is_err()
    {
        let _ = SOCKET_STATES.remove(key);
        uninspected(cookie, mark);
        return;
    }
    count_watched(1);
    // A Fast Open socket's queued data leaves without a write: egress
    // still judges it by its mark.
    if mark.flags & socket_flags::UNINSPECTED == 0 {
        let _ = SOCKET_MARKS.remove(cookie);
    }
    // Close is where its state leaves (the sockhash entry leaves by itself).
    // SAFETY: the program's context.
    unsafe { bpf_sock_ops_cb_flags_set(ctx.ops, BPF_SOCK_OPS_STATE_CB_FLAG as i32) };
}

/// A socket whose writes cannot be seen: counted, and judged by address
/// at egress from now on (fail closed, never open).
#[inline(always)]
fn uninspected(cookie: u64, mark: SocketMark) {
    count(counter::SOCKET_UNINSPECTABLE);
    let mark = SocketMark {
        flags: mark.flags | socket_flags::UNINSPECTED,
        ..mark
    };
    if SOCKET_MARKS.insert(cookie, mark, 0).is_err() {
        count(counter::SOCKET_MARKS_FULL);
    }
    flag_uninspected();
}

#[inline(always)]
fn forget(ctx: &SockOpsContext) {
    let key = socket_key!(ctx.ops);
    // A harmless socket left the count when it was judged.
    let counted = unsafe { SOCKET_STATES.get(key) }
        .is_some_and(|state| state.judgment != SocketJudgment::Harmless.code());
    if SOCKET_STATES.remove(key).is_ok() && counted {
        count_watched(u64::MAX);
    }
}

#[sk_msg]
pub fn first_write(ctx: SkMsgContext) -> u32 {
    if inspect(&ctx) { SK_PASS } else { SK_DROP }
}

/// Whether the write may go.
#[inline(always)]
fn inspect(ctx: &SkMsgContext) -> bool {
    let key = socket_key!(ctx.msg);
    let Some(state) = state_of(&key) else {
        return true;
    };
    // SAFETY: a live map value, used by this program run.
    let state: &mut SocketState = unsafe { &mut *state };
    match SocketJudgment::try_from(state.judgment) {
        Ok(SocketJudgment::Harmless | SocketJudgment::Approved) => return true,
        Ok(SocketJudgment::TlsInspected) => {
            if refused_writer() {
                return false;
            }
            // Each request of a probed writer was judged at SSL_write,
            // before it was encrypted. Another writer (a child forked
            // after the handshake) is judged by host below.
            if tls_inspected() {
                return true;
            }
        }
        Ok(SocketJudgment::Infrastructure) => {}
        // An empty write names nothing yet: the next one is the first.
        Ok(SocketJudgment::Pending) if ctx.size() == 0 => return true,
        Ok(SocketJudgment::Pending) => {
            if !name_first_write(ctx, &key, state) {
                return true;
            }
        }
        // A code this program never writes: refuse rather than guess.
        Err(_) => return false,
    }
    let member = socket_member(state.session);
    let creds = held_credentials(&member);
    if creds == 0 || granted(creds & state.host.classes) {
        return true;
    }
    // A plaintext request that names its host says what it does: one that
    // only reads passes.
    if state.host.learned == NameSource::Host.code() && reads_method(ctx) {
        return true;
    }
    let to = destination(&key);
    let named = Named {
        len: state.name_len,
        name: &state.name,
    };
    let decision = judge(
        &member,
        creds,
        &state.host,
        &to,
        Some(named),
        fill_writer_header,
    );
    if decision == Decision::Approved {
        state.judgment = SocketJudgment::Approved.code();
    }
    decision != Decision::Refuse
}

/// A socket's first state, built in this CPU's scratch value (too large
/// for the stack) before it enters `SOCKET_STATES`.
#[inline(always)]
fn fresh_state(session: u32, judgment: SocketJudgment) -> Option<&'static mut SocketState> {
    let scratch = WRITE_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value, used by this program run only.
    let state = unsafe { &mut (*scratch).state };
    state.session = session;
    state.judgment = judgment.code();
    state.host = HostClass::default();
    state.name_len = 0;
    Some(state)
}

/// The socket's state; one evicted from the LRU is judged anew as the
/// writer's session's (a writer in no session lets it pass).
#[inline(always)]
fn state_of(key: &SocketKey) -> Option<*mut SocketState> {
    if let Some(state) = SOCKET_STATES.get_ptr_mut(key) {
        return Some(state);
    }
    count(counter::SOCKET_STATE_LOST);
    let session = session_of((bpf_get_current_pid_tgid() >> 32) as u32)?;
    let state = fresh_state(session, SocketJudgment::Pending)?;
    SOCKET_STATES.insert(key, *state, 0).ok()?;
    SOCKET_STATES.get_ptr_mut(key)
}

#[inline(always)]
fn destination(key: &SocketKey) -> Destination {
    let mut addr = [0u8; 16];
    for (i, word) in key.remote_ip.iter().enumerate() {
        addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    Destination {
        family: key.family as u16,
        port: u16::from_be(key.remote_port as u16),
        addr,
    }
}

/// Reads the first write for a name and records what it decided; true
/// when the socket named an infrastructure host (then judged every write).
#[inline(always)]
fn name_first_write(ctx: &SkMsgContext, key: &SocketKey, state: &mut SocketState) -> bool {
    let Some(scratch) = WRITE_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch value, used by this program run only.
    let scratch: &mut WriteScratch = unsafe { &mut *scratch };
    let read = read_write(ctx, scratch);
    let named = read && {
        scratch.parser = NameParser::start(scratch.len);
        // SAFETY: the callback only touches this CPU's scratch value.
        unsafe {
            bpf_loop(
                MAX_STEPS,
                name_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        scratch.parser.phase == phase::NAMED
    };
    let host = if named {
        count(counter::NAMED_WRITES);
        let parser = &scratch.parser;
        state.name = parser.name;
        state.name_len = parser.name_bytes().len() as u32;
        classify(|i| parser.label_from_right(i)).map(|host| HostClass {
            learned: parser.source,
            ..host
        })
    } else {
        if read {
            count(counter::NAMELESS_WRITES);
        }
        state.name_len = 0;
        address_host(&destination(key)).map(|host| HostClass {
            learned: NameSource::Address.code(),
            ..host
        })
    };
    let infrastructure = host.is_some();
    state.host = host.unwrap_or_default();
    // A ClientHello from probed OpenSSL: its requests are judged at
    // SSL_write, where their operation is visible.
    let inspected = infrastructure
        && named
        && scratch.parser.source == NameSource::Sni.code()
        && tls_inspected();
    state.judgment = if inspected {
        SocketJudgment::TlsInspected.code()
    } else if infrastructure {
        SocketJudgment::Infrastructure.code()
    } else {
        // User space takes it out of the sockhash.
        count_watched(u64::MAX);
        SocketJudgment::Harmless.code()
    };
    report(key, state, named, scratch);
    infrastructure && !inspected
}

/// Whether the write starts a request with a method that only reads.
#[inline(always)]
fn reads_method(ctx: &SkMsgContext) -> bool {
    const PREFIX: usize = 8;
    // SAFETY: the program's context; a message shorter than PREFIX fails.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, PREFIX as u32, 0) } != 0 {
        return false;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + PREFIX > end {
        return false;
    }
    // SAFETY: PREFIX bytes of the message's linear data, checked above.
    let head = unsafe { *(start as *const [u8; PREFIX]) };
    head.starts_with(b"GET ") || head.starts_with(b"HEAD ") || head.starts_with(b"OPTIONS ")
}

/// Copies up to `WRITE_CAP` bytes of the write into the scratch buffer.
#[inline(always)]
fn read_write(ctx: &SkMsgContext, scratch: &mut WriteScratch) -> bool {
    let size = ctx.size();
    let wanted = if size as usize > WRITE_CAP {
        WRITE_CAP as u32
    } else {
        size
    };
    // SAFETY: the program's context; the range is within the message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, wanted, 0) } != 0 {
        count(counter::WRITE_UNREADABLE);
        return false;
    }
    let mut len = ctx.data_end().saturating_sub(ctx.data());
    if len > WRITE_CAP {
        len = WRITE_CAP;
    }
    if len == 0 {
        count(counter::WRITE_UNREADABLE);
        return false;
    }
    // SAFETY: reads `len` bytes of the message's linear data into scratch.
    let read = unsafe {
        bpf_probe_read_kernel(
            scratch.write.as_mut_ptr().cast(),
            len as u32,
            ctx.data() as *const c_void,
        )
    };
    if read != 0 {
        count(counter::WRITE_UNREADABLE);
        return false;
    }
    scratch.len = len as u32;
    true
}

extern "C" fn name_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = WRITE_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value; bpf_loop runs callbacks in order.
    let scratch = unsafe { &mut *scratch };
    match scratch.parser.step(&scratch.write) {
        Step::Continue => 0,
        Step::Named | Step::Nameless => 1,
    }
}

/// Tells user space what the socket named (and to take a harmless one out
/// of the sockhash).
#[inline(always)]
fn report(key: &SocketKey, state: &SocketState, named: bool, scratch: &mut WriteScratch) {
    let event = &mut scratch.event;
    fill_writer_header(&mut event.header, Kind::Name, state.session);
    event.key = *key;
    event.judgment = state.judgment;
    event.learned = if named {
        scratch.parser.source
    } else {
        NameSource::Address.code()
    };
    event.domain = if state.judgment == SocketJudgment::Infrastructure.code() {
        state.host.domain + 1
    } else {
        0
    };
    // At most NAME_CAP: it is the parser's kept name's length.
    event.name_len = state.name_len;
    event.name = state.name;
    send(event as *const _, core::mem::size_of_val(event), Kind::Name);
}
