//! The daemon's control socket: the wire protocol (`protocol`), who may ask
//! what (`authorize`), the listener and one task per client (`listener`,
//! `connection`), and the client side used by the CLI subcommands and `top`
//! (`client`). It is both a sink (events streamed to `events` and `top`) and
//! the way answers to ask-mode requests come in.

pub mod authorize;
pub mod client;
mod connection;
#[cfg(test)]
pub mod fake;
pub mod listener;
pub mod protocol;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use agentwatch_common::names::Action;
use tokio::sync::broadcast;

use crate::event::Event;
use protocol::{PendingRequest, Status};

/// Who is on the other end of a connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the daemon provides to the socket. Implemented by the daemon.
///
/// Methods are called from a blocking-pool thread, so they may take locks or read /proc.
pub trait ControlHandler: Send + Sync + 'static {
    fn pending(&self) -> Vec<PendingRequest>;
    fn status(&self) -> Status;
    /// Already authorised by the server; returns a message for the client.
    fn approve(&self, id: u64, peer: Peer) -> Result<String, String>;
    fn deny(&self, id: u64, peer: Peer) -> Result<String, String>;
    /// Recent events (oldest first) and a live feed, for Events requests. Both should be taken
    /// under one lock so that no event is missed or repeated between them.
    fn events(&self) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);
    /// A live feed alone, for a client that wants no replay.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Event>>;
    /// Already authorised by the server: makes `pid` (held before its exec by `peer`, its
    /// parent) the root of a new session; returns the session's action.
    fn open_run(
        &self,
        pid: u32,
        argv: Vec<String>,
        mode: Option<Action>,
        peer: Peer,
    ) -> Result<Action, String>;
    /// Whether `pid` is, or descends from, a process of a watched session.
    fn is_watched(&self, pid: u32) -> bool;
    /// The latest refusal (an alert that blocked, killed or asked) of the session `pid` is in;
    /// with `unreported`, only if no earlier such call returned it.
    fn last_refusal(&self, pid: u32, unreported: bool) -> Option<Arc<Event>>;
}
