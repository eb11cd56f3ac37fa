//! Reading whole segments: start-up recovery, and `lookout-agent buffer inspect|verify`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use lookout_ingest::seglog::{self, SeqCursor};
use serde::Serialize;

use super::format::{self, FRAMING};
use super::pos::Pos;

pub use lookout_ingest::seglog::{Damage, DamageKind};

/// What one segment holds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SegmentScan {
    /// Segment number.
    pub seq: u64,
    /// File name.
    pub file: String,
    /// File size.
    pub bytes: u64,
    /// Valid records.
    pub records: u64,
    /// Items of valid records by signal (traces, logs, metrics).
    pub items: [u64; 3],
    /// Valid records not yet acknowledged by the collector.
    pub unacked_records: u64,
    /// Items of valid records not yet acknowledged by the collector.
    pub unacked_items: [u64; 3],
    /// Lowest and highest record sequence numbers.
    pub seq_range: Option<(u64, u64)>,
    /// Unreadable stretches.
    pub damage: Vec<Damage>,
    /// End of the last valid record.
    pub valid_end: u64,
    /// Latest position of each tailed file in this segment.
    #[serde(skip)]
    pub positions: HashMap<u64, u64>,
}

impl SegmentScan {
    /// An empty tally of segment `seq` at `path`.
    pub(super) fn new(seq: u64, path: &Path) -> Self {
        Self {
            seq,
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ..Self::default()
        }
    }

    /// Count the record with `body` ending at `end`; `ack` tells whether it is
    /// acknowledged.
    pub(super) fn count(&mut self, body: &[u8], end: u64, ack: Pos) {
        let Ok(record) = format::decode(body) else {
            return;
        };
        let i = record.signal.index();
        self.items[i] += u64::from(record.items);
        let end_pos = Pos {
            seg: self.seq,
            offset: end,
        };
        if end_pos > ack {
            self.unacked_records += 1;
            self.unacked_items[i] += u64::from(record.items);
        }
        self.seq_range = Some(match self.seq_range {
            None => (record.seq, record.seq),
            Some((lo, _)) => (lo, record.seq),
        });
        for p in &record.positions {
            let o = self.positions.entry(p.file_id).or_default();
            *o = (*o).max(p.offset);
        }
    }

    /// Take what the segment log's scan found: size, records, damage, valid end.
    pub(super) fn finish(&mut self, scan: seglog::SegmentScan) {
        self.bytes = scan.bytes;
        self.records = scan.records;
        self.damage = scan.damage;
        self.valid_end = scan.valid_end;
    }
}

fn io_error(e: seglog::Error) -> io::Error {
    match e {
        seglog::Error::Io { source, .. } => source,
    }
}

/// Segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let listed = seglog::list_segments(&FRAMING, dir).map_err(io_error)?;
    Ok(listed.into_iter().map(|s| (s.seq, s.path)).collect())
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    seglog::segment_name(&FRAMING, seq)
}

/// Read every record of segment `seq` at `path`; `ack` tells which are acknowledged.
pub fn scan_segment(seq: u64, path: &Path, ack: Pos) -> io::Result<SegmentScan> {
    let mut tally = SegmentScan::new(seq, path);
    let mut cursor = SeqCursor::new(FRAMING.first_window);
    let scan = seglog::scan_segment(&FRAMING, path, &mut cursor, |_, end, body| {
        tally.count(body, end, ack)
    })?;
    tally.finish(scan);
    Ok(tally)
}

/// Rewrite a damaged segment with only its valid records (tmp file, fsync, rename).
pub fn repair_segment(seq: u64, path: &Path) -> io::Result<SegmentScan> {
    seglog::repair_segment(&FRAMING, path)?;
    scan_segment(seq, path, Pos::default())
}
