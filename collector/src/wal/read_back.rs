//! Reading one record back from its segment, by position: for a store that writes a record
//! again after a failed commit, and for the quarantine.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use lookout_ingest::seglog::{framings::WAL_HEADER_LEN, u32_at, u64_at};

use super::record::{WalPos, FRAMING};

/// Reads records back from the WAL's segments. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RecordReader {
    dir: PathBuf,
}

impl RecordReader {
    /// A reader of the WAL in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The payload of record `lsn` at `pos`, read back from its segment.
    pub fn read_back(&self, pos: WalPos, lsn: u64) -> io::Result<Vec<u8>> {
        let path = self
            .dir
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
        let payload = &body[FRAMING.uncounted..];
        match super::origins::untag(body[8], payload) {
            Some(t) => Ok(t.payload.to_vec()),
            None => Ok(payload.to_vec()),
        }
    }
}
