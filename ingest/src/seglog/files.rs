//! Segment files: names, listing, creation and truncation.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::error::Error;
use super::frame::Framing;
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
