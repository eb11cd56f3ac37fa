//! Start-up recovery: what the segments hold, damage counted, logged and stepped over, a
//! damaged end of the buffer truncated, and acknowledged segments deleted.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::Path;

use lookout_ingest::seglog::{Damage, LogVisitor, Missing, SegmentFile};

use super::error::{io_err, BufferError};
use super::metrics::BufferMetrics;
use super::pos::Pos;
use super::scan::{DamageKind, SegmentScan};
use super::state::Seg;

/// What start-up found in the buffer.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records not yet acknowledged.
    pub unacked_records: u64,
    /// Their items, by signal (traces, logs, metrics).
    pub unacked_items: [u64; 3],
    /// Damaged stretches skipped.
    pub damaged: u64,
    /// Latest position of each tailed file found in the buffer.
    pub positions: HashMap<u64, u64>,
}

/// State of start-up recovery over all segments.
pub(super) struct Recover<'a> {
    pub metrics: &'a BufferMetrics,
    /// The acknowledged position read from `ack.pos`.
    pub ack: Pos,
    pub recovery: Recovery,
    /// The segments kept, oldest first.
    pub segments: VecDeque<Seg>,
    /// Sequence number of the next record written.
    pub next_record_seq: u64,
    /// What the segment being read holds so far.
    tally: Option<SegmentScan>,
}

impl<'a> Recover<'a> {
    pub fn new(metrics: &'a BufferMetrics, ack: Pos) -> Self {
        Self {
            metrics,
            ack,
            recovery: Recovery::default(),
            segments: VecDeque::new(),
            next_record_seq: 1,
            tally: None,
        }
    }

    /// Count and log data missing before the segment at `path`.
    pub fn missing_data(&mut self, path: &Path, what: &str) {
        self.metrics.damage.count(DamageKind::MissingSegment);
        self.recovery.damaged += 1;
        tracing::error!(segment = %path.display(), offset = 0, kind = DamageKind::MissingSegment.as_str(), "buffer data is missing before this segment: {what}; its records are lost");
    }
}

impl LogVisitor for Recover<'_> {
    type Error = BufferError;

    fn missing(&mut self, seg: &SegmentFile, missing: Missing) {
        let what = match missing {
            Missing::Segments { first, last } => format!("segments {first}..={last} are gone"),
            Missing::Records { first, last } => {
                format!("records {first}..={last} (an empty or missing segment)")
            }
        };
        self.missing_data(&seg.path, &what);
    }

    fn record(&mut self, seg: &SegmentFile, _offset: u64, end: u64, body: &[u8]) {
        let ack = self.ack;
        self.tally
            .get_or_insert_with(|| SegmentScan::new(seg.seq, &seg.path))
            .count(body, end, ack);
    }

    fn damage(&mut self, seg: &SegmentFile, d: &Damage, end_of_buffer: bool) {
        self.metrics.damage.count(d.kind);
        self.recovery.damaged += 1;
        let path = seg.path.display();
        let (offset, bytes, kind, reason) = (d.offset, d.len, d.kind.as_str(), d.reason);
        if d.tail && end_of_buffer {
            tracing::warn!(segment = %path, offset, bytes, kind, reason, "damaged end of the buffer (torn write from a crash, or zeros after a power loss); truncating it");
        } else if d.tail {
            tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged end of a buffer segment; skipping the rest of it, reading on in the next segment (run `lookout-agent buffer verify --repair`)");
        } else {
            tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged stretch in the buffer; skipping it, reading on from the next valid record (run `lookout-agent buffer verify --repair`)");
        }
    }

    fn segment(
        &mut self,
        seg: SegmentFile,
        scan: lookout_ingest::seglog::SegmentScan,
    ) -> Result<(), BufferError> {
        let mut s = self
            .tally
            .take()
            .unwrap_or_else(|| SegmentScan::new(seg.seq, &seg.path));
        // Readers stop where a damaged tail starts.
        let len = scan.readable();
        s.finish(scan);
        if let Some((_, hi)) = s.seq_range {
            self.next_record_seq = self.next_record_seq.max(hi.saturating_add(1));
        }
        for (k, v) in s.positions {
            let o = self.recovery.positions.entry(k).or_default();
            *o = (*o).max(v);
        }
        let ack = self.ack;
        let acked = seg.seq < ack.seg || (seg.seq == ack.seg && ack.offset >= len);
        if acked {
            fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            return Ok(());
        }
        for (a, b) in self.recovery.unacked_items.iter_mut().zip(s.unacked_items) {
            *a += b;
        }
        self.recovery.unacked_records += s.unacked_records;
        self.segments.push_back(Seg {
            seq: seg.seq,
            path: seg.path,
            len,
            sealed: true,
            damage: s
                .damage
                .iter()
                .filter(|d| !d.tail)
                .map(|d| (d.offset, d.offset + d.len))
                .collect(),
        });
        Ok(())
    }
}
