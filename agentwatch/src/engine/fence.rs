//! The scan fence, user space's side. The kernel counts each read of a
//! session that user space may scan (`owes_scan`) and stops the session's
//! TLS writes while it has counted more than user space has handled; here
//! a read is paid once it is handled (at once when it is not worth
//! scanning, after its findings are applied when it is scanned), and a
//! stopped write waits until its session has no scan left to finish.

use std::collections::HashMap;

use anyhow::Result;

use crate::{decode::TlsWrite, kernel::maps::KernelMaps};

#[derive(Debug, Default)]
pub struct ScanFence {
    sessions: HashMap<u32, SessionFence>,
}

#[derive(Debug, Default)]
struct SessionFence {
    /// Reads handled; the kernel's `SCANS_PAID` once flushed.
    paid: u64,
    /// Reads whose scans have not finished.
    scanning: usize,
    /// Writes the kernel stopped meanwhile, in the order they came.
    waiting: Vec<TlsWrite>,
    /// `paid` moved since the kernel was last told.
    unflushed: bool,
}

impl ScanFence {
    /// A read that needs no scan (or no second one) is handled.
    pub fn pay(&mut self, session: u32) {
        let fence = self.sessions.entry(session).or_default();
        fence.paid += 1;
        fence.unflushed = true;
    }

    /// A read is to be scanned: the session's writes wait for it.
    pub fn scanning(&mut self, session: u32) {
        self.sessions.entry(session).or_default().scanning += 1;
    }

    /// A read's scan is done and its findings applied: it is paid, and the
    /// writes that waited for the session's last scan are handed back.
    pub fn scanned(&mut self, session: u32) -> Vec<TlsWrite> {
        let fence = self.sessions.entry(session).or_default();
        fence.scanning = fence.scanning.saturating_sub(1);
        fence.paid += 1;
        fence.unflushed = true;
        if fence.scanning == 0 {
            std::mem::take(&mut fence.waiting)
        } else {
            Vec::new()
        }
    }

    /// A write the fence stopped: kept while its session has scans to
    /// finish, handed back when it has none.
    pub fn wait(&mut self, write: TlsWrite) -> Option<TlsWrite> {
        match self.sessions.get_mut(&write.session) {
            Some(fence) if fence.scanning > 0 => {
                fence.waiting.push(write);
                None
            }
            _ => Some(write),
        }
    }

    /// Tells the kernel what was paid since it was last told; after the
    /// findings of those scans are in its maps.
    pub fn flush(&mut self, maps: &mut KernelMaps) -> Result<()> {
        for (&session, fence) in &mut self.sessions {
            if fence.unflushed {
                maps.set_scans_paid(session, fence.paid)?;
                fence.unflushed = false;
            }
        }
        Ok(())
    }

    /// A session has ended: its writers have exited with it.
    pub fn forget(&mut self, session: u32) {
        self.sessions.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(session: u32, pid: u32) -> TlsWrite {
        TlsWrite {
            ts: std::time::SystemTime::UNIX_EPOCH,
            session,
            pid,
            tid: pid,
            uid: 0,
            comm: String::new(),
            ssl: 0,
            held: 0,
            len: 0,
            data: Vec::new(),
        }
    }

    #[test]
    fn a_write_waits_for_its_sessions_last_scan_and_no_other() {
        let mut fence = ScanFence::default();
        fence.scanning(1);
        fence.scanning(1);
        fence.pay(1);
        assert!(fence.wait(write(1, 10)).is_none());
        assert!(fence.wait(write(1, 11)).is_none());
        // Another session's write is not held by session 1's scans.
        assert_eq!(fence.wait(write(2, 20)).map(|w| w.pid), Some(20));
        assert!(fence.scanned(1).is_empty());
        let released: Vec<u32> = fence.scanned(1).iter().map(|w| w.pid).collect();
        assert_eq!(released, [10, 11]);
        assert_eq!(fence.sessions[&1].paid, 3);
        // Nothing left to scan: the next write goes on at once.
        assert_eq!(fence.wait(write(1, 12)).map(|w| w.pid), Some(12));
    }
}
