//! The quarantine directory of poison records: a valid checksum, unusable content.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lookout_ingest::fsutil;
use lookout_ingest::seglog::{framings::WAL_HEADER_LEN, u32_at, u64_at};

use super::{WalMetrics, WalPos, FRAMING};

/// The quarantine directory of poison records, and its counter.
pub struct Quarantine {
    dir: PathBuf,
    wal_dir: PathBuf,
    metrics: WalMetrics,
}

impl Quarantine {
    /// Poison records of the WAL in `wal_dir` go to `dir` (created when the first one
    /// arrives).
    pub fn new(dir: PathBuf, wal_dir: PathBuf, metrics: WalMetrics) -> Self {
        Self {
            dir,
            wal_dir,
            metrics,
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

    /// Count a poison record whose bytes could not be had.
    pub(super) fn lost(&self) {
        self.metrics.quarantined_records.inc();
    }

    /// The payload of record `lsn` at `pos`, read back from its segment.
    pub fn read_back(&self, pos: WalPos, lsn: u64) -> io::Result<Vec<u8>> {
        let path = self
            .wal_dir
            .join(lookout_ingest::seglog::segment_name(&FRAMING, pos.segment));
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(pos.offset))?;
        let mut header = [0u8; WAL_HEADER_LEN];
        f.read_exact(&mut header)?;
        let len = u32_at(&header, 0);
        if len > FRAMING.max_len || u64_at(&header, 8) != lsn {
            return Err(io::Error::other("no such record at this position"));
        }
        let mut record = header.to_vec();
        record.resize(WAL_HEADER_LEN + len as usize, 0);
        f.read_exact(&mut record[WAL_HEADER_LEN..])?;
        let (body, _) = FRAMING.parse(&record).map_err(|flaw| {
            io::Error::other(format!(
                "record read back is damaged: {}",
                FRAMING.reason(flaw)
            ))
        })?;
        Ok(body[FRAMING.uncounted..].to_vec())
    }
}
