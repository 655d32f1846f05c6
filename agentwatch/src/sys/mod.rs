//! The one owner of each outside interface the daemon reads: /proc and the
//! user database.

pub mod proc;
pub mod users;
