//! Records handed to the store threads and records they applied, per signal, so that
//! start-up can wait until what the WAL replay restored answers queries before `/readyz`
//! says ready.

use std::sync::atomic::{AtomicU64, Ordering};

use lookout_ingest::Signal;

/// Counts of records sent to and applied by the store threads.
#[derive(Debug, Default)]
pub struct Backlog {
    sent: [AtomicU64; Signal::ALL.len()],
    applied: [AtomicU64; Signal::ALL.len()],
}

impl Backlog {
    /// A record of `signal` was handed to its store thread.
    pub fn sent(&self, signal: Signal) {
        self.sent[signal.index()].fetch_add(1, Ordering::AcqRel);
    }

    /// A record of `signal` was applied (written, held for a retry, or set aside).
    pub fn applied(&self, signal: Signal) {
        self.applied[signal.index()].fetch_add(1, Ordering::AcqRel);
    }

    /// Records of `signals` handed on and not applied yet.
    pub fn pending(&self, signals: &[Signal]) -> u64 {
        signals
            .iter()
            .map(|s| {
                let applied = self.applied[s.index()].load(Ordering::Acquire);
                self.sent[s.index()]
                    .load(Ordering::Acquire)
                    .saturating_sub(applied)
            })
            .sum()
    }
}
