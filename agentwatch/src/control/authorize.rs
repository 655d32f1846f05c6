//! Who may ask what of the daemon. Kept small and apart so it can be
//! audited on its own: an agent must never approve its own request.

use super::{ControlHandler, Peer};
use crate::{
    control::protocol::Request,
    sys::proc::{self, supplementary_groups},
};

/// Who may do what on the socket.
pub struct Authority {
    pub admin_gid: Option<u32>,
}

impl Authority {
    /// Read-only requests (Pending, Status, Events) are allowed to root, the admin group, and any
    /// process not inside a watched session (read access to the socket file is already enforced
    /// by its mode). A peer whose pid the daemon cannot see (pid 0, e.g. from another pid
    /// namespace) might be an agent, so it gets read access only as root or admin.
    ///
    /// Approve/Deny: the peer must be uid 0 or in the admin group (primary or supplementary), must
    /// still exist in /proc, and must not be inside a watched session — an agent must never
    /// approve its own request, whatever its uid.
    ///
    /// Run: the same, and the process to watch must be the peer's own child, so nobody opens a
    /// session (with a mode of their choosing) for a process that is not theirs to start.
    pub fn authorize(
        &self,
        request: &Request,
        peer: Peer,
        handler: &dyn ControlHandler,
    ) -> Result<(), String> {
        let verb = match request {
            Request::Approve { .. } => "approve",
            Request::Deny { .. } => "deny",
            Request::Run { .. } => "open a session",
            // Answered only about the asker's own session: a watched agent may learn why its
            // call was refused (and that a human must approve it), nothing more.
            Request::Why { .. } if peer.pid != 0 => return Ok(()),
            Request::Why { .. } => {
                return Err("refused: the requesting process is not visible to the daemon".into());
            }
            Request::Pending | Request::Status | Request::Events { .. } => {
                if peer.uid == 0
                    || (peer.pid != 0 && !handler.is_watched(peer.pid))
                    || self.is_admin(peer)
                {
                    return Ok(());
                }
                return Err(format!(
                    "refused: process {} is inside a watched agent session (or not visible to \
                     the daemon) and is neither root nor in the admin group",
                    peer.pid
                ));
            }
        };
        // The pid is checked before anything else is decided from it: a pid the daemon cannot
        // see cannot be checked against the watched sessions.
        if !proc::exists(peer.pid) {
            return Err(format!(
                "refused to {verb}: the requesting process (pid {}) is not visible to the daemon",
                peer.pid
            ));
        }
        if handler.is_watched(peer.pid) {
            return Err(format!(
                "refused to {verb}: process {} is inside a watched agent session, and a watched \
                 session cannot approve or deny requests or open sessions",
                peer.pid
            ));
        }
        if let Request::Run { pid, .. } = request
            && proc::parent_of(*pid).ok() != Some(peer.pid)
        {
            return Err(format!(
                "refused to {verb}: process {pid} is not a child of the requesting process ({})",
                peer.pid
            ));
        }
        if peer.uid == 0 || self.is_admin(peer) {
            return Ok(());
        }
        Err(match self.admin_gid {
            Some(gid) => format!("refused to {verb}: needs root or membership of group {gid}"),
            None => format!("refused to {verb}: needs root (no admin group is configured)"),
        })
    }

    fn is_admin(&self, peer: Peer) -> bool {
        let Some(admin) = self.admin_gid else {
            return false;
        };
        // A peer whose groups cannot be read (it has gone) is not taken for a member.
        peer.gid == admin
            || supplementary_groups(peer.pid).is_ok_and(|groups| groups.contains(&admin))
    }
}
