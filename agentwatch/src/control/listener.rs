//! Binding the control socket safely, and the accept loop.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use tokio::net::UnixListener;
use tracing::{error, warn};

use super::{ControlHandler, authorize::Authority, connection::handle_client};

/// Binds `path` (creating the parent dir 0755, removing a stale socket file only if nothing
/// listens on it), sets mode 0660 with group `admin_gid` (or 0600 when None).
///
/// Must be called inside a tokio runtime. The mode and group are set before `listen`, so no
/// client can connect while the socket still has the umask's permissions.
pub fn bind(path: &Path, admin_gid: Option<u32>) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        // The umask may have narrowed it, and group members must be able to reach the socket.
        fs::set_permissions(parent, Permissions::from_mode(0o755))
            .with_context(|| format!("cannot set the mode of {}", parent.display()))?;
    }
    remove_stale(path)?;

    let addr =
        UnixAddr::new(path).with_context(|| format!("bad socket path {}", path.display()))?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create a unix socket")?;
    socket::bind(fd.as_raw_fd(), &addr)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    let mode = if let Some(gid) = admin_gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
        0o660
    } else {
        0o600
    };
    fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    socket::listen(&fd, Backlog::MAXCONN)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
        .context("cannot register the control socket with the runtime")
}

/// Removes a socket file left by a daemon that is gone; refuses when one still listens.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another path",
            path.display()
        );
    }
    // Non-blocking, so a live daemon with a full backlog answers EAGAIN instead of hanging us.
    let probe = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("cannot create a unix socket")?;
    match socket::connect(probe.as_raw_fd(), &UnixAddr::new(path)?) {
        Err(Errno::ECONNREFUSED) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Ok(()) | Err(Errno::EAGAIN) => {
            bail!(
                "another agentwatch daemon is listening on {}",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot probe {}", path.display())),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the stale socket {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Accept loop; each client in its own task. Runs until the listener errors fatally.
pub async fn serve(
    listener: UnixListener,
    authority: Arc<Authority>,
    handler: Arc<dyn ControlHandler>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle_client(stream, authority.clone(), handler.clone()));
            }
            Err(e) if is_transient(&e) => {
                // Out of descriptors or memory: wait for clients to go rather than spin.
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                error!("control socket: accept failed, no longer serving: {e}");
                return;
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM | Errno::ECONNABORTED)
    )
}
