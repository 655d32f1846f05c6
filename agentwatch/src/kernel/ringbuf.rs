//! The ring buffer the programs write their records to, read with tokio.

use anyhow::{Context as _, Result, anyhow};
use std::time::Duration;

use agentwatch_common::names::map_name;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};

/// The longest a batched record waits in the ring buffer; records user
/// space must act on at once (alerts, agents held at exec) wake it.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(10);

pub struct RecordStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl RecordStream {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(map_name::EVENTS)
            .ok_or_else(|| anyhow!("map {} missing from the object", map_name::EVENTS))?;
        let ring = RingBuf::try_from(map).with_context(|| format!("map {}", map_name::EVENTS))?;
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| anyhow!("polling the ring buffer: {error}"))?;
        Ok(Self { ring })
    }

    /// Waits until the kernel wakes us (a record that cannot wait, or a
    /// filling buffer) or [`BATCH_INTERVAL`] passes, then hands every record
    /// written so far to `handle`.
    pub async fn recv(&mut self, handle: impl FnMut(&[u8])) -> Result<()> {
        match tokio::time::timeout(BATCH_INTERVAL, self.ring.readable_mut()).await {
            Ok(guard) => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), handle);
                guard.clear_ready();
            }
            Err(_) => drain(self.ring.get_mut(), handle),
        }
        Ok(())
    }

    /// Hands every record already written to `handle`, without waiting.
    pub fn drain(&mut self, handle: impl FnMut(&[u8])) {
        drain(self.ring.get_mut(), handle);
    }
}

fn drain(ring: &mut RingBuf<MapData>, mut handle: impl FnMut(&[u8])) {
    while let Some(record) = ring.next() {
        handle(&record);
    }
}
