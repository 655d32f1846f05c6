//! The decision every sensor that can refuse makes the same way: a session
//! holding a credential that counts against a host, with no allow rule and
//! no human approval for this retry, is refused, alerted and acted on.

use agentwatch_common::{
    event::{AlertEvent, EventHeader},
    first_write::NAME_CAP,
    maps::{AllowKey, HostClass},
    names::{Action, Kind},
};

use crate::{
    emit::{Urgency, send_value},
    maps::{ALLOW_ONCE, USER_TAINT},
    scratch::ALERT_SCRATCH,
    session::Member,
};

/// Where a connection or datagram goes.
pub struct Destination {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Host order.
    pub port: u16,
    /// IPv4 in the first four bytes, or IPv6; network order.
    pub addr: [u8; 16],
}

/// The name a request asked for, when it gave one.
pub struct Named<'a> {
    pub len: u32,
    pub name: &'a [u8; NAME_CAP],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed because a human approved exactly this retry.
    Approved,
    Refuse,
}

/// Every credential class the session holds: taken in the kernel, or found
/// by user space in what it read. 0 when user space forgot the session.
#[inline(always)]
pub fn held_credentials(member: &Member) -> u64 {
    if member.state.is_null() {
        return 0;
    }
    // SAFETY: a live map value (checked non-null above).
    let creds = unsafe { (*member.state).creds };
    let found = unsafe { USER_TAINT.get(member.session) }
        .copied()
        .unwrap_or(0);
    creds | found
}

/// Judges a call of `member`'s session, holding `creds`, to `host`; `fill`
/// writes the alert's header as the calling program may.
#[inline(always)]
pub fn judge(
    member: &Member,
    creds: u64,
    host: &HostClass,
    to: &Destination,
    named: Option<Named>,
    fill: impl Fn(&mut EventHeader, Kind, u32),
) -> Decision {
    let held = creds & host.classes;
    if held & !host.allowed == 0 || member.state.is_null() {
        return Decision::Allow;
    }
    let approved = AllowKey {
        session: member.session,
        _pad: 0,
        addr: to.addr,
    };
    if unsafe { ALLOW_ONCE.get(approved) }.is_some() && ALLOW_ONCE.remove(approved).is_ok() {
        return Decision::Approved;
    }
    // SAFETY: a live map value (checked non-null above).
    let state = unsafe { *member.state };
    if let Some(alert) = ALERT_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch value, used by this program run only.
        let alert: &mut AlertEvent = unsafe { &mut *alert };
        fill(&mut alert.header, Kind::Alert, member.session);
        alert.held = held;
        alert.last_classes = state.last_classes;
        alert.last_ns = state.last_ns;
        alert.action = state.action;
        alert.domain = host.domain;
        alert.family = to.family;
        alert.port = to.port;
        alert.addr = to.addr;
        alert.learned = host.learned;
        alert.name_len = 0;
        if let Some(named) = named {
            alert.name_len = named.len;
            alert.name = *named.name;
        }
        send_value(alert, Kind::Alert, Urgency::Now);
    }
    match Action::try_from(state.action) {
        Ok(Action::Observe | Action::Alert) => Decision::Allow,
        Ok(Action::Kill) => {
            member.kill();
            Decision::Refuse
        }
        Ok(Action::Ask) => {
            member.stop();
            Decision::Refuse
        }
        Ok(Action::Block) | Err(_) => Decision::Refuse,
    }
}
