//! Durable progress of the stores, published as the WAL checkpoints.
//!
//! Each store that applies a signal's records says, after each durable commit, through which
//! WAL sequence number (LSN) it needs nothing more. A signal's checkpoint is the lowest of
//! what its stores said: spans are applied by the span index and by the trace tracker (which
//! holds back the records of its open traces), and the WAL keeps a record until both are done
//! with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lookout_ingest::Signal;

use crate::wal::Checkpoints;

/// One store's durable progress on one signal.
#[derive(Clone)]
pub struct Progress {
    checkpoints: Arc<Checkpoints>,
    signal: Signal,
    /// Every store of the signal, this one at `me`.
    stores: Arc<[AtomicU64]>,
    me: usize,
}

impl Progress {
    /// The progress handles of the stores of `signal`, starting from what each committed
    /// (`committed[i]` for store `i`), in the same order. Publishes the starting checkpoint.
    pub fn of_stores(
        checkpoints: &Arc<Checkpoints>,
        signal: Signal,
        committed: &[u64],
    ) -> Vec<Self> {
        let stores: Arc<[AtomicU64]> = committed.iter().map(|&l| AtomicU64::new(l)).collect();
        let all = (0..committed.len())
            .map(|me| Self {
                checkpoints: checkpoints.clone(),
                signal,
                stores: stores.clone(),
                me,
            })
            .collect::<Vec<_>>();
        if let Some(p) = all.first() {
            p.publish();
        }
        all
    }

    /// The progress of the only store of `signal`, starting from `committed`.
    pub fn single(checkpoints: &Arc<Checkpoints>, signal: Signal, committed: u64) -> Self {
        let mut all = Self::of_stores(checkpoints, signal, &[committed]);
        all.swap_remove(0)
    }

    /// This store no longer needs the records through `lsn` (never goes back).
    pub fn advance(&self, lsn: u64) {
        if let Some(mine) = self.stores.get(self.me) {
            mine.fetch_max(lsn, Ordering::AcqRel);
        }
        self.publish();
    }

    /// What this store said last.
    pub fn get(&self) -> u64 {
        self.stores
            .get(self.me)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    /// The checkpoint of the signal: where replay starts (exclusive).
    pub fn signal_checkpoint(&self) -> u64 {
        self.stores
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    fn publish(&self) {
        self.checkpoints
            .advance(self.signal, self.signal_checkpoint());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_signal_checkpoint_is_the_slowest_store() {
        let cps = Arc::new(Checkpoints::default());
        let mut stores = Progress::of_stores(&cps, Signal::Traces, &[10, 4]);
        let tracker = stores.pop().unwrap();
        let spans = stores.pop().unwrap();
        assert_eq!(cps.get(Signal::Traces), 4);
        spans.advance(20);
        assert_eq!(cps.get(Signal::Traces), 4, "the tracker still needs 5..");
        tracker.advance(12);
        assert_eq!(cps.get(Signal::Traces), 12);
        tracker.advance(3);
        assert_eq!(tracker.get(), 12, "progress never goes back");
        let logs = Progress::single(&cps, Signal::Logs, 7);
        assert_eq!(cps.get(Signal::Logs), 7);
        logs.advance(9);
        assert_eq!((cps.get(Signal::Logs), cps.get(Signal::Traces)), (9, 12));
    }
}
