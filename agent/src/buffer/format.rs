//! On-disk record format of the buffer, and a streaming segment reader.
//!
//! A segment is a file of records, little-endian:
//!
//! ```text
//! len: u32 | crc32: u32 | body[len]
//! body = seq: u64 | time: u64 | tag: u8 | items: u32 | npos: u16
//!        | npos × (file_id: u64, offset: u64) | payload
//! ```
//!
//! `crc32` covers the body. `seq` increases by one per record over the whole buffer;
//! `time` is when the record was appended (Unix ns); `tag` is the signal; `items` counts
//! spans, log records or data points; the positions say how far tailed files are read
//! once this record is stored; `payload` is a protobuf OTLP export request.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use crate::sink::{FilePosition, Signal};

/// Bytes of `len` and `crc32`.
pub const FRAME_LEN: usize = 8;
/// Bytes of the fixed part of the body.
pub const FIXED_BODY_LEN: usize = 8 + 8 + 1 + 4 + 2;
/// A record longer than this is corruption, not data.
pub const MAX_RECORD_LEN: u32 = 256 << 20;

/// [`Next::Corrupt`] reason: fewer bytes than a frame are left.
pub const TORN_FRAME: &str = "torn record frame";
/// [`Next::Corrupt`] reason: the length field is out of range.
pub const BAD_LENGTH: &str = "bad record length";
/// [`Next::Corrupt`] reason: the record's length runs past the readable end.
pub const PAST_END: &str = "record runs past the end of the data";
/// [`Next::Corrupt`] reason: the body does not match its checksum.
pub const CHECKSUM: &str = "checksum mismatch";

/// Widest jump of sequence numbers [`SegmentReader::resync`] accepts past a known one
/// (far more records than a buffer holds; a random field falls in it once in 2^24).
const MAX_SEQ_JUMP: u64 = 1 << 40;
/// Highest sequence number [`SegmentReader::resync`] accepts when it knows none before.
const MAX_SEQ: u64 = 1 << 48;
/// Bytes [`SegmentReader::resync`] reads at a time.
const RESYNC_WINDOW: usize = 1 << 20;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number, increasing by one per record.
    pub seq: u64,
    /// When it was appended, Unix ns.
    pub time: u64,
    /// Signal of the payload.
    pub signal: Signal,
    /// Items in the payload.
    pub items: u32,
    /// Tailed-file positions reached with this record.
    pub positions: Vec<FilePosition>,
    /// Protobuf export request.
    pub payload: Bytes,
}

/// Bytes a record takes on disk.
pub fn encoded_len(positions: usize, payload: usize) -> usize {
    FRAME_LEN + FIXED_BODY_LEN + positions * 16 + payload
}

/// Append the encoding of a record to `out`.
pub fn encode(
    out: &mut Vec<u8>,
    seq: u64,
    time: u64,
    signal: Signal,
    items: u32,
    positions: &[FilePosition],
    payload: &[u8],
) {
    let start = out.len();
    let body_len = FIXED_BODY_LEN + positions.len() * 16 + payload.len();
    out.reserve(FRAME_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.push(signal.tag());
    out.extend_from_slice(&items.to_le_bytes());
    out.extend_from_slice(&(positions.len() as u16).to_le_bytes());
    for p in positions {
        out.extend_from_slice(&p.file_id.to_le_bytes());
        out.extend_from_slice(&p.offset.to_le_bytes());
    }
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + FRAME_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decode a body whose checksum was verified.
fn decode_body(body: &[u8]) -> Result<Record, &'static str> {
    if body.len() < FIXED_BODY_LEN {
        return Err("record shorter than its fixed header");
    }
    let seq = u64_at(body, 0);
    let time = u64_at(body, 8);
    let signal = Signal::from_tag(body[16]).ok_or("unknown signal tag")?;
    let items = u32::from_le_bytes([body[17], body[18], body[19], body[20]]);
    let npos = usize::from(u16::from_le_bytes([body[21], body[22]]));
    let pos_end = FIXED_BODY_LEN + npos * 16;
    if body.len() < pos_end {
        return Err("positions run past the record");
    }
    let positions = (0..npos)
        .map(|i| {
            let at = FIXED_BODY_LEN + i * 16;
            FilePosition {
                file_id: u64_at(body, at),
                offset: u64_at(body, at + 8),
            }
        })
        .collect();
    Ok(Record {
        seq,
        time,
        signal,
        items,
        positions,
        payload: Bytes::copy_from_slice(&body[pos_end..]),
    })
}

/// What reading the next record found.
#[derive(Debug)]
pub enum Next {
    /// A valid record ending at `end`.
    Record {
        /// The record.
        record: Record,
        /// Offset just past it.
        end: u64,
    },
    /// Clean end of the data available.
    End,
    /// Damage at the current offset: a torn or corrupt record.
    Corrupt(&'static str),
}

/// Reads the records of one segment in order, holding one record in memory at a time.
pub struct SegmentReader {
    file: BufReader<File>,
    offset: u64,
    body: Vec<u8>,
}

impl SegmentReader {
    /// Open `path` at `offset`.
    pub fn open(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            file: BufReader::with_capacity(256 << 10, file),
            offset,
            body: Vec::new(),
        })
    }

    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Move to `offset`.
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// Read the record at the current offset, reading no further than `limit` (the
    /// readable end of the segment). On `Corrupt` the offset is left at the damage.
    pub fn next(&mut self, limit: u64) -> io::Result<Next> {
        let available = limit.saturating_sub(self.offset);
        if available == 0 {
            return Ok(Next::End);
        }
        if available < FRAME_LEN as u64 {
            return Ok(Next::Corrupt(TORN_FRAME));
        }
        let mut frame = [0u8; FRAME_LEN];
        self.file.read_exact(&mut frame)?;
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let rewind = |me: &mut Self| me.seek(me.offset);
        if len > MAX_RECORD_LEN || (len as usize) < FIXED_BODY_LEN {
            rewind(self)?;
            return Ok(Next::Corrupt(BAD_LENGTH));
        }
        if available < FRAME_LEN as u64 + u64::from(len) {
            rewind(self)?;
            return Ok(Next::Corrupt(PAST_END));
        }
        self.body.resize(len as usize, 0);
        self.file.read_exact(&mut self.body)?;
        if crc32fast::hash(&self.body) != crc {
            rewind(self)?;
            return Ok(Next::Corrupt(CHECKSUM));
        }
        match decode_body(&self.body) {
            Ok(record) => {
                self.offset += FRAME_LEN as u64 + u64::from(len);
                Ok(Next::Record {
                    record,
                    end: self.offset,
                })
            }
            Err(why) => {
                rewind(self)?;
                Ok(Next::Corrupt(why))
            }
        }
    }

    /// After damage at the current offset, find the next offset below `limit` where a
    /// valid record with a sequence number above `after_seq` starts. Returns it (the
    /// reader is left there) or `None` when the rest is unreadable.
    ///
    /// The damaged stretch is read a window at a time and each offset's header is checked
    /// in memory (length in range and within `limit`, a known signal tag, positions that
    /// fit, a plausible sequence number); only headers passing that are checksummed, and
    /// the bytes checksummed are capped at twice the stretch, so a zero-filled or random
    /// stretch costs one read of it.
    pub fn resync(&mut self, limit: u64, after_seq: u64) -> io::Result<Option<u64>> {
        let start = self.offset;
        let head = FRAME_LEN + FIXED_BODY_LEN;
        let most = if after_seq > 0 {
            after_seq.saturating_add(MAX_SEQ_JUMP)
        } else {
            MAX_SEQ
        };
        let mut budget = limit
            .saturating_sub(start)
            .saturating_mul(2)
            .saturating_add(1 << 20);
        let mut window = Vec::new();
        let mut base = start + 1;
        while base + head as u64 <= limit {
            let want = usize::try_from((limit - base).min((RESYNC_WINDOW + head - 1) as u64))
                .unwrap_or(RESYNC_WINDOW);
            window.resize(want, 0);
            self.file.get_ref().read_exact_at(&mut window, base)?;
            for i in 0..(want + 1 - head).min(RESYNC_WINDOW) {
                let h = &window[i..i + head];
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                let seq = u64_at(h, FRAME_LEN);
                let npos = usize::from(u16::from_le_bytes([h[FRAME_LEN + 21], h[FRAME_LEN + 22]]));
                let candidate = base + i as u64;
                let plausible = (FIXED_BODY_LEN as u32..=MAX_RECORD_LEN).contains(&len)
                    && candidate + FRAME_LEN as u64 + u64::from(len) <= limit
                    && seq > after_seq
                    && seq <= most
                    && Signal::from_tag(h[FRAME_LEN + 16]).is_some()
                    && FIXED_BODY_LEN + npos * 16 <= len as usize;
                if !plausible {
                    continue;
                }
                let cost = FRAME_LEN as u64 + u64::from(len);
                if budget < cost {
                    self.seek(start)?;
                    return Ok(None);
                }
                budget -= cost;
                self.seek(candidate)?;
                if let Next::Record { .. } = self.next(limit)? {
                    self.seek(candidate)?;
                    return Ok(Some(candidate));
                }
            }
            base += RESYNC_WINDOW as u64;
        }
        self.seek(start)?;
        Ok(None)
    }

    /// The length field of the frame at `offset`, if the file holds one there.
    pub fn frame_len_at(&self, offset: u64) -> io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        match self.file.get_ref().read_exact_at(&mut b, offset) {
            Ok(()) => Ok(Some(u32::from_le_bytes(b))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the `len` bytes at `offset` are all zero (bytes past the end of the file
    /// count as zero).
    pub fn is_zero(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20)];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let got = self.file.get_ref().read_at(&mut buf[..n], at)?;
            if got == 0 {
                break;
            }
            if buf[..got].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += got as u64;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn write(records: &[(u64, &[u8])]) -> (tempfile::TempDir, std::path::PathBuf, Vec<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for (seq, payload) in records {
            encode(
                &mut out,
                *seq,
                7,
                Signal::Logs,
                3,
                &[FilePosition {
                    file_id: 9,
                    offset: *seq * 10,
                }],
                payload,
            );
            ends.push(out.len() as u64);
        }
        std::fs::write(&path, &out).unwrap();
        (dir, path, ends)
    }

    #[test]
    fn round_trip() {
        let (_d, path, ends) = write(&[(1, b"one"), (2, b"two")]);
        let mut r = SegmentReader::open(&path, 0).unwrap();
        let limit = *ends.last().unwrap();
        let Next::Record { record, end } = r.next(limit).unwrap() else {
            panic!()
        };
        assert_eq!(
            (record.seq, &record.payload[..], end),
            (1, &b"one"[..], ends[0])
        );
        assert_eq!(record.positions[0].offset, 10);
        assert_eq!(record.items, 3);
        assert!(matches!(r.next(limit).unwrap(), Next::Record { .. }));
        assert!(matches!(r.next(limit).unwrap(), Next::End));
    }

    #[test]
    fn torn_tail_and_flipped_bit_are_found_and_skipped() {
        let (_d, path, ends) = write(&[(1, b"one"), (2, b"two"), (3, b"three")]);
        // Torn: the limit cuts the last record.
        let mut r = SegmentReader::open(&path, ends[1]).unwrap();
        assert!(matches!(r.next(ends[2] - 1).unwrap(), Next::Corrupt(_)));
        assert_eq!(r.offset(), ends[1]);
        // A flipped bit in the middle record: resync finds the third.
        let mut data = std::fs::read(&path).unwrap();
        data[ends[0] as usize + 20] ^= 0x40;
        std::fs::write(&path, &data).unwrap();
        let mut r = SegmentReader::open(&path, ends[0]).unwrap();
        assert!(matches!(
            r.next(ends[2]).unwrap(),
            Next::Corrupt("checksum mismatch")
        ));
        assert_eq!(r.resync(ends[2], 1).unwrap(), Some(ends[1]));
        let Next::Record { record, .. } = r.next(ends[2]).unwrap() else {
            panic!()
        };
        assert_eq!(record.seq, 3);
    }
}
