//! Segment files: names, listing, creation, truncation and repair.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::frame::Framing;
use super::scan::{scan_segment, SegmentScan, SeqCursor};
use super::Error;
use crate::fsutil;

/// A segment file: its number and path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentFile {
    /// Segment number.
    pub seq: u64,
    /// The file.
    pub path: PathBuf,
}

/// File name of segment `seq`: `{seq:020}.{extension}`.
pub fn segment_name(framing: &Framing, seq: u64) -> String {
    format!("{seq:020}.{}", framing.extension)
}

/// Segment files in `dir`, oldest first: every `{number}.{extension}`.
pub fn list_segments(framing: &Framing, dir: &Path) -> Result<Vec<SegmentFile>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(framing.extension))
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(SegmentFile {
            seq,
            path: entry.path(),
        });
    }
    out.sort();
    Ok(out)
}

/// Create segment `seq` in `dir` for appending (it must not exist yet), and make its
/// directory entry durable.
pub fn create_segment(framing: &Framing, dir: &Path, seq: u64) -> Result<(File, PathBuf), Error> {
    let path = dir.join(segment_name(framing, seq));
    let file = fsutil::open_options()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    sync_dir(dir).map_err(Error::io(dir))?;
    Ok((file, path))
}

/// Make the entries of directory `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Cut the file at `path` to `len` bytes, durably.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// Rewrite a damaged segment with only its valid records (a torn tail is cut off; other
/// damage goes through a temporary file, fsync and rename). Returns the scan of the
/// segment as it was.
pub fn repair_segment(framing: &'static Framing, path: &Path) -> io::Result<SegmentScan> {
    let mut cursor = SeqCursor::new(framing.first_window);
    let before = scan_segment(framing, path, &mut cursor, |_, _, _| {})?;
    if before.damage.is_empty() {
        return Ok(before);
    }
    if before.damage.len() == 1 && before.damage[0].tail {
        truncate(path, before.damage[0].offset)?;
    } else {
        let data = fs::read(path)?;
        let mut keep = Vec::with_capacity(data.len());
        let mut at = 0u64;
        for d in &before.damage {
            keep.extend_from_slice(&data[at as usize..d.offset as usize]);
            at = d.offset + d.len;
        }
        keep.extend_from_slice(&data[at.min(data.len() as u64) as usize..]);
        let tmp = path.with_extension(format!("{}.tmp", framing.extension));
        {
            let mut f = fsutil::create_file(&tmp)?;
            f.write_all(&keep)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(before)
}
