//! The stores' durable checkpoints, which replay starts from and segment deletion waits for.

use std::sync::atomic::{AtomicU64, Ordering};

use lookout_ingest::signal::Signal;

/// Per-signal durable checkpoints: the highest LSN of each signal that its store has made
/// durable on its own. LSNs start at 1; 0 means nothing.
#[derive(Debug, Default)]
pub struct Checkpoints([AtomicU64; 3]);

impl Checkpoints {
    /// The checkpoint of `signal`.
    pub fn get(&self, signal: Signal) -> u64 {
        self.0[signal.index()].load(Ordering::Acquire)
    }
    /// Raise the checkpoint of `signal` to `lsn` (never lowers it).
    pub fn advance(&self, signal: Signal, lsn: u64) {
        self.0[signal.index()].fetch_max(lsn, Ordering::AcqRel);
    }
}
