//! The quarantine directory of poison records: a valid checksum, unusable content.

use std::path::{Path, PathBuf};

use lookout_ingest::fsutil;

use super::metrics::WalMetrics;
use super::read_back::RecordReader;
use super::record::{Record, WalPos};

/// Name of the quarantine directory, beside the WAL directory (`DATA_DIR/quarantine`).
pub const QUARANTINE_DIR: &str = "quarantine";

/// The quarantine directory of a WAL in `dir`: `quarantine` beside it.
pub fn default_quarantine_dir(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) => p.join(QUARANTINE_DIR),
        None => dir.join(QUARANTINE_DIR),
    }
}

/// The quarantine directory of poison records, and its counter. The stores are handed
/// one at start-up and set aside what they cannot decode or apply.
pub struct Quarantine {
    dir: PathBuf,
    /// Reads back a record whose bytes its store no longer holds.
    records: RecordReader,
    metrics: WalMetrics,
}

impl Quarantine {
    /// Poison records of the WAL in `wal_dir` go to `dir` (created when the first one
    /// arrives).
    pub fn new(dir: PathBuf, wal_dir: PathBuf, metrics: WalMetrics) -> Self {
        Self {
            dir,
            records: RecordReader::new(wal_dir),
            metrics,
        }
    }

    /// The quarantine of the WAL in `wal_dir`, in its default place
    /// ([`default_quarantine_dir`]).
    pub fn beside(wal_dir: &Path, metrics: WalMetrics) -> Self {
        Self::new(
            default_quarantine_dir(wal_dir),
            wal_dir.to_path_buf(),
            metrics,
        )
    }

    /// Set `rec` aside as poison (its checksum is valid but a store cannot decode or apply
    /// it): copy its bytes (the payload; else the encoded batch; else, when both were
    /// consumed, the record read back from its segment) to the quarantine directory, count
    /// it, and log it with `reason`. The caller skips the record. Returns the file
    /// written, if any.
    pub fn set_aside(&self, rec: &Record, reason: &str) -> Option<PathBuf> {
        let what = rec.signal.as_str();
        if !rec.payload.is_empty() {
            return self.put(rec.pos, rec.lsn, what, &rec.payload, reason);
        }
        if let Some(b) = &rec.batch {
            return self.put(rec.pos, rec.lsn, what, &b.encode_protobuf(), reason);
        }
        match self.records.read_back(rec.pos, rec.lsn) {
            Ok(bytes) => self.put(rec.pos, rec.lsn, what, &bytes, reason),
            Err(e) => {
                self.metrics.quarantined_records.inc();
                tracing::error!(lsn = rec.lsn, signal = what, segment = rec.pos.segment, offset = rec.pos.offset, reason, error = %e, "poison write-ahead log record skipped; its bytes could not be read back for the quarantine");
                None
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File name of the record at `pos`: `{segment:020}-{offset:010}-lsn{lsn:020}.{what}`.
    /// Only numbers and `what` (a signal name or `tag{N}`) go into it.
    pub fn file_name(pos: WalPos, lsn: u64, what: &str) -> String {
        format!("{:020}-{:010}-lsn{lsn:020}.{what}", pos.segment, pos.offset)
    }

    /// Write `bytes` of the record at `pos` to the quarantine directory, count and log it.
    /// Naming by position makes this idempotent: a record quarantined again after a
    /// restart overwrites its own file.
    pub fn put(
        &self,
        pos: WalPos,
        lsn: u64,
        what: &str,
        bytes: &[u8],
        reason: &str,
    ) -> Option<PathBuf> {
        self.metrics.quarantined_records.inc();
        let path = self.dir.join(Self::file_name(pos, lsn, what));
        let written =
            fsutil::create_dir_all(&self.dir).and_then(|()| fsutil::write_atomic(&path, bytes));
        match written {
            Ok(()) => {
                tracing::error!(file = %path.display(), lsn, segment = pos.segment, offset = pos.offset, bytes = bytes.len(), reason, "poison write-ahead log record (valid checksum, unusable content) copied to quarantine; skipping it");
                Some(path)
            }
            Err(e) => {
                tracing::error!(file = %path.display(), lsn, segment = pos.segment, offset = pos.offset, reason, error = %e, "poison write-ahead log record skipped; it could not be copied to quarantine");
                None
            }
        }
    }
}
