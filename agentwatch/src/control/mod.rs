//! The daemon's control socket: the wire protocol, the server that the daemon runs, and the
//! client side used by the CLI subcommands and the terminal UI.

pub mod client;
pub mod protocol;
pub mod server;
