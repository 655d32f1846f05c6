//! Ask-mode requests as a state machine of their own: ids, the session each
//! stopped, where it wanted to connect, and when it is denied for want of
//! an answer. Nothing here touches the kernel or the socket.

pub use crate::respond::Retry;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// An open request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub session: u32,
    pub retry: Retry,
    pub deadline: Instant,
}

#[derive(Debug)]
pub struct Requests {
    next: u64,
    open: BTreeMap<u64, Pending>,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            next: 1,
            open: BTreeMap::new(),
        }
    }
}

impl Requests {
    /// Opens a request; ids start at 1 and are never reused.
    pub fn open(&mut self, pending: Pending) -> u64 {
        let id = self.next;
        self.next += 1;
        self.open.insert(id, pending);
        id
    }

    /// Answers a request, which is then no longer open; `None` when there is
    /// no such open request (answered, timed out, or its session ended).
    pub fn close(&mut self, id: u64) -> Option<Pending> {
        self.open.remove(&id)
    }

    /// Requests unanswered at their deadline.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        self.open
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Closes the requests of a session that ended; returns their ids.
    pub fn close_session(&mut self, session: u32) -> Vec<u64> {
        let ids: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, pending)| pending.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.open.remove(id);
        }
        ids
    }

    /// How long request `id` has before it is denied.
    pub fn expires_in(&self, id: u64, now: Instant) -> Option<Duration> {
        self.open
            .get(&id)
            .map(|pending| pending.deadline.saturating_duration_since(now))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.open.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests;
