//! Repair of a damaged segment: only its valid records are kept.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::files::{sync_dir, truncate};
use super::frame::Framing;
use super::scan::{scan_segment, SegmentScan, SeqCursor};
use crate::fsutil;

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
