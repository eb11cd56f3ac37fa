//! Reading whole segments: start-up recovery, and `lookout-agent buffer inspect|verify`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::{Next, SegmentReader};
use super::Pos;

/// A stretch of unreadable bytes in a segment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What was wrong at `offset`.
    pub reason: &'static str,
    /// True when nothing valid follows (a torn tail, typical of a crash mid-write).
    pub tail: bool,
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
    let mut last_seq = 0u64;
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
                        tail: false,
                    }),
                    None => {
                        scan.damage.push(Damage {
                            offset: at,
                            len: bytes - at,
                            reason,
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
        fs::write(&tmp, &keep)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)?;
    }
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    scan_segment(seq, path, Pos::default())
}
