//! What the buffer handle, its writer thread and its readers share: the segments, the
//! acknowledged position and the writer's queue.

use std::collections::VecDeque;
use std::fs;
use std::path::PathBuf;
use std::sync::mpsc;

use lookout_ingest::seglog::{Next, SegmentReader};
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::format::{self, FRAMING};
use super::metrics::BufferMetrics;
use super::options::BufferOptions;
use super::pos::Pos;
use crate::sink::{Entry, SinkError};

/// A segment file and what is known of it.
pub(super) struct Seg {
    pub seq: u64,
    pub path: PathBuf,
    /// Bytes written (readable).
    pub len: u64,
    /// No more writes: the writer moved on.
    pub sealed: bool,
    /// Damaged stretches already reported, `(start, end)`: readers step over them.
    pub damage: Vec<(u64, u64)>,
}

/// The segments and positions, under [`Inner::state`].
pub(super) struct State {
    pub segments: VecDeque<Seg>,
    /// Bytes of all segment files.
    pub total: u64,
    /// Bytes queued for the writer.
    pub reserved: u64,
    pub ack: Pos,
    pub ack_persisted: Pos,
    pub closed: bool,
}

impl State {
    pub fn unacked(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.seq >= self.ack.seg)
            .map(|s| {
                if s.seq == self.ack.seg {
                    s.len.saturating_sub(self.ack.offset)
                } else {
                    s.len
                }
            })
            .sum()
    }
}

/// One append waiting for the writer.
pub(super) struct Append {
    pub entry: Entry,
    pub size: u64,
    pub done: oneshot::Sender<Result<(), SinkError>>,
}

/// The buffer's shared state.
pub(super) struct Inner {
    pub dir: PathBuf,
    pub opts: BufferOptions,
    pub state: Mutex<State>,
    /// Signalled when data is written or the buffer closes.
    pub data: Condvar,
    pub tx: Mutex<Option<mpsc::Sender<Append>>>,
    pub metrics: BufferMetrics,
}

impl Inner {
    pub fn unreserve(&self, size: u64) {
        let mut st = self.state.lock();
        st.reserved = st.reserved.saturating_sub(size);
    }

    /// Delete the oldest sealed segment, counting its unacknowledged items as dropped.
    pub fn drop_oldest(&self, st: &mut State) -> bool {
        let Some(front) = st.segments.front() else {
            return false;
        };
        if !front.sealed {
            return false;
        }
        let from = if front.seq == st.ack.seg {
            st.ack.offset
        } else {
            0
        };
        if let Ok(mut r) = SegmentReader::open(&FRAMING, &front.path, from) {
            while let Ok(Next::Record { body, .. }) = r.next(front.len) {
                let Ok(record) = format::decode(body) else {
                    break;
                };
                self.metrics
                    .dropped_items
                    .with_label_values(&[record.signal.as_str()])
                    .inc_by(u64::from(record.items));
            }
        }
        tracing::warn!(segment = %front.path.display(), "disk buffer full: deleting the oldest segment unshipped (when_full = drop_oldest)");
        if let Err(e) = fs::remove_file(&front.path) {
            tracing::warn!(segment = %front.path.display(), error = %e, "cannot delete a buffer segment");
        }
        let len = front.len;
        st.segments.pop_front();
        st.total -= len;
        if let Some(next) = st.segments.front() {
            let first = Pos {
                seg: next.seq,
                offset: 0,
            };
            if st.ack < first {
                st.ack = first;
            }
        }
        self.update_gauges(st);
        true
    }

    pub fn update_gauges(&self, st: &State) {
        self.metrics.bytes.set(st.total as i64);
        self.metrics.segments.set(st.segments.len() as i64);
        self.metrics.unacked_bytes.set(st.unacked() as i64);
    }

    /// End of the damaged stretch of segment `seq` that starts at `offset`, if known.
    pub fn known_damage(&self, seq: u64, offset: u64) -> Option<u64> {
        let st = self.state.lock();
        let seg = st.segments.iter().find(|s| s.seq == seq)?;
        seg.damage
            .iter()
            .find(|(start, _)| *start == offset)
            .map(|(_, end)| *end)
    }

    /// Remember a damaged stretch found while reading, so that it is reported once.
    pub fn remember_damage(&self, seq: u64, start: u64, end: u64) {
        let mut st = self.state.lock();
        if let Some(seg) = st.segments.iter_mut().find(|s| s.seq == seq) {
            seg.damage.push((start, end));
        }
    }
}
