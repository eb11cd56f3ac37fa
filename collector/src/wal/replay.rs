//! Start-up replay: every record past its store's checkpoint goes to the stores, damage is
//! counted, logged and stepped over, and a damaged end of the log is truncated.

use std::sync::Arc;

use bytes::Bytes;
use lookout_ingest::seglog::{
    self, u64_at, Damage, LogVisitor, Missing, SegmentFile, SegmentScan, SeqCursor, SeqWindow,
};
use lookout_ingest::signal::Signal;

use super::checkpoints::Checkpoints;
use super::error::WalError;
use super::metrics::WalMetrics;
use super::origins::{untag, Origins, Tagged};
use super::quarantine::Quarantine;
use super::record::{Dispatch, Record, WalPos, FRAMING};
use super::writer::Segment;

/// State of start-up replay over all segments.
pub(super) struct Replay<'a> {
    pub checkpoints: &'a Checkpoints,
    pub metrics: &'a WalMetrics,
    pub quarantine: &'a Arc<Quarantine>,
    pub dispatch: &'a mut Dispatch,
    /// Stream sequences of consumed records, per partition.
    pub origins: &'a Origins,
    /// Records dispatched.
    pub replayed: u64,
    /// The segments read, oldest first.
    pub segments: Vec<Segment>,
    /// Highest LSN of each signal in the segment being read.
    max_lsn: [u64; 3],
    /// Where the segment being read was cut off, if it was.
    truncated_at: Option<u64>,
}

impl<'a> Replay<'a> {
    pub fn new(
        checkpoints: &'a Checkpoints,
        metrics: &'a WalMetrics,
        quarantine: &'a Arc<Quarantine>,
        dispatch: &'a mut Dispatch,
        origins: &'a Origins,
    ) -> Self {
        Self {
            checkpoints,
            metrics,
            quarantine,
            dispatch,
            origins,
            replayed: 0,
            segments: Vec::new(),
            max_lsn: [0; 3],
            truncated_at: None,
        }
    }

    /// Replay `segments`; returns the highest LSN found (0: none).
    pub fn run(&mut self, segments: Vec<SegmentFile>) -> Result<u64, WalError> {
        // LSNs a record found after damage may have, before any record was read: around
        // the checkpoints.
        let committed = Signal::ALL
            .iter()
            .map(|s| self.checkpoints.get(*s))
            .max()
            .unwrap_or(0);
        let cursor = SeqCursor::new(SeqWindow::around(committed));
        Ok(seglog::scan_log(&FRAMING, segments, cursor, false, self)?.last)
    }
}

impl LogVisitor for Replay<'_> {
    type Error = WalError;

    fn missing(&mut self, seg: &SegmentFile, missing: Missing) {
        let what = match missing {
            Missing::Segments { first, last } => {
                format!("segments {first:020}..={last:020} are missing")
            }
            Missing::Records { first, last } => {
                format!("records {first}..={last} (an empty or missing segment)")
            }
        };
        let kind = seglog::DamageKind::MissingSegment;
        self.metrics.damage.count(kind);
        tracing::error!(segment = %seg.path.display(), offset = 0, kind = kind.as_str(), "write-ahead log is missing data before this segment: {what}; their records are lost");
    }

    fn record(&mut self, seg: &SegmentFile, offset: u64, _end: u64, body: &[u8]) {
        let (lsn, tag, payload) = (u64_at(body, 0), body[8], &body[FRAMING.uncounted..]);
        let pos = WalPos {
            segment: seg.seq,
            offset,
        };
        let (signal, payload) = match untag(tag, payload) {
            Some(Tagged {
                signal,
                origin,
                payload,
            }) => {
                if let Some(o) = origin {
                    self.origins.note(o);
                }
                (signal, payload)
            }
            None => {
                self.quarantine.put(
                    pos,
                    lsn,
                    &format!("tag{tag}"),
                    payload,
                    "unknown record tag or short record",
                );
                return;
            }
        };
        self.max_lsn[signal.index()] = self.max_lsn[signal.index()].max(lsn);
        if lsn > self.checkpoints.get(signal) {
            (self.dispatch)(Record {
                lsn,
                signal,
                payload: Bytes::copy_from_slice(payload),
                batch: None,
                charge: None,
                pos,
            });
            self.replayed += 1;
            self.metrics.replayed_records.inc();
        }
    }

    fn damage(&mut self, seg: &SegmentFile, d: &Damage, end_of_log: bool) {
        self.metrics.damage.count(d.kind);
        let path = seg.path.display();
        let (offset, bytes, kind, reason) = (d.offset, d.len, d.kind.as_str(), d.reason);
        if !d.tail {
            tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged stretch in the write-ahead log; skipping it, reading on from the next valid record");
        } else if end_of_log {
            tracing::warn!(segment = %path, offset, bytes, kind, reason, "damaged end of the write-ahead log (torn write from a crash or power loss); truncating it");
            self.truncated_at = Some(d.offset);
        } else {
            tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged end of a write-ahead log segment; skipping the rest of it, reading on in the next segment");
        }
    }

    fn segment(&mut self, seg: SegmentFile, scan: SegmentScan) -> Result<(), WalError> {
        self.segments.push(Segment {
            seq: seg.seq,
            path: seg.path,
            len: self.truncated_at.take().unwrap_or(scan.bytes),
            max_lsn: std::mem::take(&mut self.max_lsn),
        });
        Ok(())
    }
}
