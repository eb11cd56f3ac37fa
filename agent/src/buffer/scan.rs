//! Reading whole segments: start-up recovery, and `lookout-agent buffer inspect|verify`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{self, Next, SegmentReader};
use super::Pos;

/// What kind of damage a stretch is: the fixed values of the `kind` label of
/// `lookout_agent_buffer_corruptions_total`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// A record cut short by the end of the data (a crash in the middle of a write).
    Torn,
    /// A record of consistent length whose checksum does not match (flipped bits).
    Checksum,
    /// A length field out of range, or not leading to the next record.
    BadLength,
    /// A record with a valid checksum whose header makes no sense (unknown signal,
    /// positions past its end).
    BadHeader,
    /// A stretch of zero bytes (a preallocated or half-written file after a power loss).
    Zeroed,
    /// Segments missing from the sequence, or records missing between two segments.
    MissingSegment,
}

impl DamageKind {
    /// Every kind, in label order.
    pub const ALL: [DamageKind; 6] = [
        DamageKind::Torn,
        DamageKind::Checksum,
        DamageKind::BadLength,
        DamageKind::BadHeader,
        DamageKind::Zeroed,
        DamageKind::MissingSegment,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Torn => "torn",
            DamageKind::Checksum => "checksum",
            DamageKind::BadLength => "bad_length",
            DamageKind::BadHeader => "bad_header",
            DamageKind::Zeroed => "zeroed",
            DamageKind::MissingSegment => "missing_segment",
        }
    }
}

/// A stretch of unreadable bytes in a segment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What was wrong at `offset`.
    pub reason: &'static str,
    /// What kind of damage it is.
    pub kind: DamageKind,
    /// True when nothing valid follows (a torn tail, typical of a crash mid-write).
    pub tail: bool,
}

/// What kind of damage the `end - offset` bytes at `offset` are, `reason` being what
/// reading found at `offset` and `tail` whether nothing valid follows.
pub fn classify(
    r: &SegmentReader,
    offset: u64,
    end: u64,
    reason: &'static str,
    tail: bool,
) -> io::Result<DamageKind> {
    if r.is_zero(offset, end - offset)? {
        return Ok(DamageKind::Zeroed);
    }
    Ok(match reason {
        format::TORN_FRAME => DamageKind::Torn,
        format::PAST_END if tail => DamageKind::Torn,
        format::PAST_END | format::BAD_LENGTH => DamageKind::BadLength,
        format::CHECKSUM => {
            // The length leads exactly to the next record (or the end): it is right, and
            // other bytes are damaged.
            let len = r.frame_len_at(offset)?.map_or(0, u64::from);
            if offset + format::FRAME_LEN as u64 + len == end {
                DamageKind::Checksum
            } else {
                DamageKind::BadLength
            }
        }
        _ => DamageKind::BadHeader,
    })
}

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

/// Segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:020}.seg")
}

/// Read every record of segment `seq` at `path`; `ack` tells which are acknowledged.
pub fn scan_segment(seq: u64, path: &Path, ack: Pos) -> io::Result<SegmentScan> {
    scan_segment_after(seq, path, ack, 0)
}

/// [`scan_segment`], knowing that the records before this segment end with sequence
/// number `prev_seq` (0: unknown), which narrows what damage at its start may hide.
pub fn scan_segment_after(
    seq: u64,
    path: &Path,
    ack: Pos,
    prev_seq: u64,
) -> io::Result<SegmentScan> {
    let bytes = fs::metadata(path)?.len();
    let mut scan = SegmentScan {
        seq,
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        ..Default::default()
    };
    let mut r = SegmentReader::open(path, 0)?;
    let mut last_seq = prev_seq;
    loop {
        match r.next(bytes)? {
            Next::End => break,
            Next::Record { record, end } => {
                let i = record.signal.index();
                scan.records += 1;
                scan.items[i] += u64::from(record.items);
                let end_pos = Pos {
                    seg: seq,
                    offset: end,
                };
                if end_pos > ack {
                    scan.unacked_records += 1;
                    scan.unacked_items[i] += u64::from(record.items);
                }
                scan.seq_range = Some(match scan.seq_range {
                    None => (record.seq, record.seq),
                    Some((lo, _)) => (lo, record.seq),
                });
                last_seq = record.seq;
                for p in &record.positions {
                    let o = scan.positions.entry(p.file_id).or_default();
                    *o = (*o).max(p.offset);
                }
                scan.valid_end = end;
            }
            Next::Corrupt(reason) => {
                let at = r.offset();
                match r.resync(bytes, last_seq)? {
                    Some(next) => scan.damage.push(Damage {
                        offset: at,
                        len: next - at,
                        reason,
                        kind: classify(&r, at, next, reason, false)?,
                        tail: false,
                    }),
                    None => {
                        scan.damage.push(Damage {
                            offset: at,
                            len: bytes - at,
                            reason,
                            kind: classify(&r, at, bytes, reason, true)?,
                            tail: true,
                        });
                        break;
                    }
                }
            }
        }
    }
    Ok(scan)
}

/// Rewrite a damaged segment with only its valid records (tmp file, fsync, rename).
pub fn repair_segment(seq: u64, path: &Path) -> io::Result<SegmentScan> {
    let before = scan_segment(seq, path, Pos::default())?;
    if before.damage.is_empty() {
        return Ok(before);
    }
    if before.damage.len() == 1 && before.damage[0].tail {
        let f = fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(before.damage[0].offset)?;
        f.sync_all()?;
    } else {
        let data = fs::read(path)?;
        let mut keep = Vec::with_capacity(data.len());
        let mut at = 0u64;
        for d in &before.damage {
            keep.extend_from_slice(&data[at as usize..d.offset as usize]);
            at = d.offset + d.len;
        }
        keep.extend_from_slice(&data[at.min(data.len() as u64) as usize..]);
        let tmp = path.with_extension("seg.tmp");
        {
            let mut f = lookout_ingest::fsutil::create_file(&tmp)?;
            f.write_all(&keep)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    scan_segment(seq, path, Pos::default())
}
