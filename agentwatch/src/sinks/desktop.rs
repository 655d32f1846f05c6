//! Desktop notifications of ask-mode requests, on the session bus of the
//! user at the desk.
//!
//! A user's session bus is `/run/user/UID/bus` (what logind's
//! `XDG_RUNTIME_DIR` and `DBUS_SESSION_BUS_ADDRESS=unix:path=...` name), and
//! it admits only its own user: root is refused. So the daemon runs itself
//! (`agentwatch notify-desktop`, hidden) as that user, with that address in
//! `DBUS_SESSION_BUS_ADDRESS`, and the child makes the
//! `org.freedesktop.Notifications.Notify` call with zbus. logind creates
//! `/run/user/UID` at a user's first login and removes it at the last
//! logout, so its directories are the logged-in users, with or without
//! logind running to be asked.
//!
//! Who: the agent's own user, who started it; when that user has no session
//! bus (an agent run as root or by a service account), every logged-in user
//! who has one. Delivery is best effort in the background: the outcome is
//! counted (`agentwatch_desktop_notifications_total`) and never holds up or
//! fails the daemon.

use std::{
    collections::HashMap,
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{io::AsyncWriteExt as _, process::Command, time};
use tracing::warn;
use zbus::zvariant::Value;

use crate::sinks::prometheus::Metrics;

/// Where logind keeps each logged-in user's runtime directory.
pub const RUNTIME_DIRS: &str = "/run/user";
/// The session bus's socket in a user's runtime directory.
const BUS_SOCKET: &str = "bus";
/// The hidden subcommand the daemon runs as the user.
pub const SUBCOMMAND: &str = "notify-desktop";
/// A bus or notification server that does not answer in this time counts as failed.
const DELIVER_WITHIN: Duration = Duration::from_secs(5);
const APP_NAME: &str = "agentwatch";
const SUMMARY: &str = "agentwatch: an agent is waiting for approval";
/// The specification's urgency hint: 2 is critical (stays up until dismissed or expired).
const CRITICAL: u8 = 2;

/// What became of one notification, a label of the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The notification server on a user's bus took it.
    Delivered,
    /// A user's bus or notification server refused it, or did not answer in time.
    Failed,
    /// No logged-in user has a session bus: nobody to show it to.
    NoSessionBus,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Delivered, Outcome::Failed, Outcome::NoSessionBus];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::NoSessionBus => "no_session_bus",
        }
    }
}

/// A logged-in user's session bus.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionBus {
    uid: u32,
    /// The runtime directory's group: the user's primary group, as logind made it.
    gid: u32,
    socket: PathBuf,
}

impl SessionBus {
    fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }
}

/// The session buses under `runtime_dirs` that a notification for `agent_uid`'s
/// request goes to (see the module's documentation). Only a directory and a
/// socket owned by the directory's user count: anything else is not that
/// user's bus.
fn recipients(runtime_dirs: &Path, agent_uid: u32) -> Vec<SessionBus> {
    let bus = |uid: u32| {
        let dir = runtime_dirs.join(uid.to_string());
        let owner = std::fs::metadata(&dir).ok()?;
        let socket = dir.join(BUS_SOCKET);
        let meta = std::fs::symlink_metadata(&socket).ok()?;
        (owner.is_dir() && owner.uid() == uid && meta.file_type().is_socket() && meta.uid() == uid)
            .then(|| SessionBus {
                uid,
                gid: owner.gid(),
                socket,
            })
    };
    if let Some(own) = bus(agent_uid) {
        return vec![own];
    }
    let Ok(dirs) = std::fs::read_dir(runtime_dirs) else {
        return Vec::new();
    };
    let mut all: Vec<SessionBus> = dirs
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(bus)
        .collect();
    all.sort_by_key(|b| b.uid);
    all
}

/// Shows `body` on the desktops of the people who can act on `agent_uid`'s
/// request, in the background; it expires with the request, `expire_after`.
pub fn notify(agent_uid: u32, body: String, expire_after: Duration, metrics: Arc<Mutex<Metrics>>) {
    tokio::spawn(async move {
        let buses = recipients(Path::new(RUNTIME_DIRS), agent_uid);
        if buses.is_empty() {
            count(&metrics, Outcome::NoSessionBus);
        }
        for bus in buses {
            let outcome = match deliver(&bus, &body, expire_after).await {
                Ok(()) => Outcome::Delivered,
                Err(error) => {
                    warn!(
                        "desktop notification to uid {} at {}: {error:#}",
                        bus.uid,
                        bus.socket.display()
                    );
                    Outcome::Failed
                }
            };
            count(&metrics, outcome);
        }
    });
}

fn count(metrics: &Mutex<Metrics>, outcome: Outcome) {
    metrics.lock().expect("metrics").count_notification(outcome);
}

/// Runs `agentwatch notify-desktop` as the bus's user, its environment only
/// the bus's address, and waits for it (killed when late).
async fn deliver(bus: &SessionBus, body: &str, expire_after: Duration) -> Result<()> {
    // Not current_exe(): after an upgrade replaced the file it names
    // "... (deleted)"; the kernel's link still runs the daemon's own binary.
    let mut child = Command::new("/proc/self/exe")
        .arg(SUBCOMMAND)
        .arg(
            i32::try_from(expire_after.as_millis())
                .unwrap_or(i32::MAX)
                .to_string(),
        )
        .env_clear()
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .current_dir("/")
        // Run as root, std drops the supplementary groups with these.
        .uid(bus.uid)
        .gid(bus.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the notifying process")?;
    // On stdin, not argv: other users can read a process's command line.
    let mut stdin = child.stdin.take().context("no stdin")?;
    let output = time::timeout(DELIVER_WITHIN, async {
        stdin.write_all(body.as_bytes()).await?;
        drop(stdin);
        child.wait_with_output().await
    })
    .await
    .with_context(|| format!("no answer within {} s", DELIVER_WITHIN.as_secs()))??;
    if !output.status.success() {
        bail!(
            "{}",
            String::from_utf8_lossy(&output.stderr)
                .trim_end()
                .trim_start_matches("agentwatch: ")
        );
    }
    Ok(())
}

/// `agentwatch notify-desktop EXPIRE_MS`: the child's side, as the user. One
/// Notify call on the bus `DBUS_SESSION_BUS_ADDRESS` names, the body read from stdin.
pub async fn notify_desktop_command(expire_ms: i32) -> Result<i32> {
    let mut body = String::new();
    std::io::stdin().read_to_string(&mut body)?;
    let bus = zbus::Connection::session()
        .await
        .context("cannot connect to the session bus")?;
    let hints = HashMap::from([("urgency", Value::U8(CRITICAL))]);
    bus.call_method(
        Some("org.freedesktop.Notifications"),
        "/org/freedesktop/Notifications",
        Some("org.freedesktop.Notifications"),
        "Notify",
        &(
            APP_NAME,
            0u32, // replaces no earlier notification
            "dialog-warning",
            SUMMARY,
            body.as_str(),
            Vec::<&str>::new(), // no actions
            hints,
            expire_ms,
        ),
    )
    .await
    .context("the notification server refused the notification")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// The test runs as root: the buses it makes are root's, under uid 0.
    fn runtime_dir(root: &Path, uid: u32) -> PathBuf {
        let dir = root.join(uid.to_string());
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn the_agents_user_first_else_every_logged_in_user() {
        let me = nix::unistd::getuid().as_raw();
        let root = tempfile::tempdir().unwrap();
        // Nobody logged in.
        assert_eq!(recipients(root.path(), me), []);
        let dir = runtime_dir(root.path(), me);
        // Logged in without a bus, and a stray name.
        std::fs::create_dir(root.path().join("not-a-uid")).unwrap();
        assert_eq!(recipients(root.path(), me), []);
        let _bus = UnixListener::bind(dir.join(BUS_SOCKET)).unwrap();
        let mine = SessionBus {
            uid: me,
            gid: nix::unistd::getgid().as_raw(),
            socket: dir.join(BUS_SOCKET),
        };
        assert_eq!(mine.address(), format!("unix:path={}/bus", dir.display()));
        assert_eq!(recipients(root.path(), me), std::slice::from_ref(&mine));
        // An agent whose user has no bus: the logged-in users' buses.
        assert_eq!(recipients(root.path(), me + 1), [mine]);
        // A directory named for a user it does not belong to is not theirs.
        let other = runtime_dir(root.path(), me + 2);
        let _stray = UnixListener::bind(other.join(BUS_SOCKET)).unwrap();
        assert_eq!(recipients(root.path(), me + 2).len(), 1);
        assert_eq!(recipients(root.path(), me + 2)[0].uid, me);
    }
}
