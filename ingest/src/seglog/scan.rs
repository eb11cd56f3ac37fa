//! Reading whole segments, and a whole log of them: start-up recovery and inspection.

use std::fs;
use std::path::Path;

use super::classify::classify;
use super::damage::Damage;
use super::error::Error;
use super::files::{truncate, SegmentFile};
use super::frame::{u64_at, Framing, SeqWindow};
use super::reader::{resync_budget, Next, SegmentReader};

/// What is known of the sequence numbers before the next record: where resynchronisation
/// looks for one.
#[derive(Debug, Clone, Copy)]
pub struct SeqCursor {
    /// Highest sequence number of a valid record so far (0: none).
    pub last: u64,
    /// The window while no record has been seen.
    pub first_window: SeqWindow,
}

impl SeqCursor {
    /// Nothing seen yet; records found by resynchronisation must be in `first_window`.
    pub fn new(first_window: SeqWindow) -> Self {
        Self {
            last: 0,
            first_window,
        }
    }

    /// Sequence numbers the next record found by resynchronisation may have.
    pub fn window(&self) -> SeqWindow {
        if self.last > 0 {
            SeqWindow::after(self.last)
        } else {
            self.first_window
        }
    }
}

/// What one segment holds.
#[derive(Debug, Clone, Default)]
pub struct SegmentScan {
    /// File size.
    pub bytes: u64,
    /// Valid records.
    pub records: u64,
    /// Sequence number of the first valid record.
    pub first_seq: Option<u64>,
    /// Unreadable stretches, in file order.
    pub damage: Vec<Damage>,
    /// End of the last valid record.
    pub valid_end: u64,
}

impl SegmentScan {
    /// Where readers stop: at a damaged tail, else at the end of the file.
    pub fn readable(&self) -> u64 {
        self.damage
            .last()
            .filter(|d| d.tail)
            .map_or(self.bytes, |d| d.offset)
    }

    /// Whether the segment starts with damage.
    pub fn head_damaged(&self) -> bool {
        self.damage.first().is_some_and(|d| d.offset == 0)
    }
}

/// Read every frame of the segment at `path`, handing each valid record to `on_record`
/// (`offset`, `end`, body) and stepping over damage (resynchronising within the window of
/// `cursor`, which follows the records read; the checksum budget is [`resync_budget`] of
/// the file, for the whole segment).
pub fn scan_segment(
    framing: &'static Framing,
    path: &Path,
    cursor: &mut SeqCursor,
    mut on_record: impl FnMut(u64, u64, &[u8]),
) -> std::io::Result<SegmentScan> {
    let bytes = fs::metadata(path)?.len();
    let mut scan = SegmentScan {
        bytes,
        ..SegmentScan::default()
    };
    let mut budget = resync_budget(bytes);
    let mut r = SegmentReader::open(framing, path, 0)?;
    loop {
        let offset = r.offset();
        let flaw = match r.next(bytes)? {
            Next::End => break,
            Next::Record { body, end } => {
                let seq = u64_at(body, 0);
                scan.records += 1;
                scan.first_seq.get_or_insert(seq);
                cursor.last = cursor.last.max(seq);
                scan.valid_end = end;
                on_record(offset, end, body);
                continue;
            }
            Next::Corrupt(flaw) => flaw,
        };
        let reason = framing.reason(flaw);
        match r.resync(bytes, cursor.window(), &mut budget)? {
            Some(next) => scan.damage.push(Damage {
                offset,
                len: next - offset,
                reason,
                kind: classify(&r, offset, next, flaw, false)?,
                tail: false,
            }),
            None => {
                scan.damage.push(Damage {
                    offset,
                    len: bytes - offset,
                    reason,
                    kind: classify(&r, offset, bytes, flaw, true)?,
                    tail: true,
                });
                break;
            }
        }
    }
    Ok(scan)
}

/// Data found missing before a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Segment numbers `first..=last` are absent from the sequence.
    Segments {
        /// First absent segment.
        first: u64,
        /// Last absent segment.
        last: u64,
    },
    /// Sequence numbers `first..=last` are absent between two segments (an empty or
    /// missing segment).
    Records {
        /// First absent sequence number.
        first: u64,
        /// Last absent sequence number.
        last: u64,
    },
}

/// What a log does with what [`scan_log`] finds, segment by segment.
pub trait LogVisitor {
    /// The error [`LogVisitor::segment`] may fail with.
    type Error: From<Error>;
    /// Data is missing before `seg`.
    fn missing(&mut self, seg: &SegmentFile, missing: Missing);
    /// A valid record of `seg` at `offset..end`.
    fn record(&mut self, seg: &SegmentFile, offset: u64, end: u64, body: &[u8]);
    /// A damaged stretch of `seg`; `end_of_log` tells that `seg` is at the end of the
    /// log, where a damaged tail is a torn write and is cut off (after this call).
    fn damage(&mut self, seg: &SegmentFile, damage: &Damage, end_of_log: bool);
    /// `seg` is done (its damaged tail truncated if it was the end of the log).
    fn segment(&mut self, seg: SegmentFile, scan: SegmentScan) -> Result<(), Self::Error>;
}

/// Scan a whole log, oldest segment first. Segments are deleted oldest first, so the
/// ones left are contiguous and so are their records' sequence numbers: a gap in the
/// segment numbers, or a jump in sequence numbers between two segments not explained by
/// damage, is reported as [`Missing`]. `damage_before` tells that something before the
/// first segment was already reported missing. Damage is stepped over; a damaged tail
/// of the last non-empty segment (or a later one) is truncated.
pub fn scan_log<V: LogVisitor>(
    framing: &'static Framing,
    segments: Vec<SegmentFile>,
    mut cursor: SeqCursor,
    damage_before: bool,
    visitor: &mut V,
) -> Result<SeqCursor, V::Error> {
    // The end of the log: past it, every segment is empty.
    let mut last_nonempty = None;
    for (i, seg) in segments.iter().enumerate() {
        if fs::metadata(&seg.path).map_err(Error::io(&seg.path))?.len() > 0 {
            last_nonempty = Some(i);
        }
    }
    // Damage was reported after the last valid record (it explains a jump).
    let mut damage_since = damage_before;
    let mut prev: Option<u64> = None;
    for (i, seg) in segments.into_iter().enumerate() {
        if let Some(p) = prev.filter(|p| seg.seq > p.saturating_add(1)) {
            let (first, last) = (p + 1, seg.seq - 1);
            visitor.missing(&seg, Missing::Segments { first, last });
            damage_since = true;
        }
        prev = Some(seg.seq);
        let end_of_log = last_nonempty.is_none_or(|l| i >= l);
        let last_before = cursor.last;
        let scan = scan_segment(framing, &seg.path, &mut cursor, |offset, end, body| {
            visitor.record(&seg, offset, end, body)
        })
        .map_err(Error::io(&seg.path))?;
        match scan.first_seq {
            Some(lo) => {
                if last_before > 0
                    && lo > last_before.saturating_add(1)
                    && !damage_since
                    && !scan.head_damaged()
                {
                    let (first, last) = (last_before + 1, lo - 1);
                    visitor.missing(&seg, Missing::Records { first, last });
                }
                damage_since = scan.damage.last().is_some_and(|d| d.tail);
            }
            None => damage_since |= !scan.damage.is_empty(),
        }
        for d in &scan.damage {
            visitor.damage(&seg, d, end_of_log);
        }
        if let Some(d) = scan.damage.last().filter(|d| d.tail && end_of_log) {
            truncate(&seg.path, d.offset).map_err(Error::io(&seg.path))?;
        }
        visitor.segment(seg, scan)?;
    }
    Ok(cursor)
}
