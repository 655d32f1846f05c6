//! What systemd (`Type=notify`) is told: ready once agents are watched,
//! reloading around SIGHUP, alive once a second, stopping. Outside systemd
//! (no `NOTIFY_SOCKET`) these do nothing.

use sd_notify::NotifyState;
use tracing::warn;

pub struct ServiceManager {
    watchdog: bool,
}

impl ServiceManager {
    pub fn new() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled().is_some(),
        }
    }

    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Followed by [`ready`](Self::ready) when the new policy is in force
    /// or refused; systemd needs the clock to match the two.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        states.extend(NotifyState::monotonic_usec_now().ok());
        send(&states);
    }

    /// From the event loop, so a loop stuck for `WatchdogSec=` gets the
    /// daemon restarted.
    pub fn keep_alive(&self) {
        if self.watchdog {
            send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        warn!("telling systemd: {error}");
    }
}
