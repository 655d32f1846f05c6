//! The ring buffer the programs write their records to, read with tokio.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};

pub struct RecordStream {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl RecordStream {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("map EVENTS missing from the object"))?;
        let ring = RingBuf::try_from(map).context("map EVENTS")?;
        // SAFETY: the ring buffer owns its map fd, which stays open and the
        // same for as long as the AsyncFd owns the ring buffer.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|error| anyhow!("polling the ring buffer: {error}"))?;
        Ok(Self { ring })
    }

    /// Waits until records are available, then hands each one to `handle`.
    pub async fn recv(&mut self, mut handle: impl FnMut(&[u8])) -> Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(record) = ring.next() {
            handle(&record);
        }
        guard.clear_ready();
        Ok(())
    }

    /// Hands every record already written to `handle`, without waiting.
    pub fn drain(&mut self, mut handle: impl FnMut(&[u8])) {
        let ring = self.ring.get_mut();
        while let Some(record) = ring.next() {
            handle(&record);
        }
    }
}
