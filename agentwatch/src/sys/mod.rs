//! The one owner of each outside interface the daemon reads: /proc and the
//! user database; and of the state it writes.

pub mod proc;
pub mod state;
pub mod users;
