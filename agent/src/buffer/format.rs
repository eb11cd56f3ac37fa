//! On-disk record format of the buffer: a [`lookout_ingest::seglog`] framing
//! ([`FRAMING`]).
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

use bytes::Bytes;
use lookout_ingest::seglog::framings::{
    check_buffer_body, BUFFER_FIXED_BODY_LEN, BUFFER_POSITION_LEN,
};
use lookout_ingest::seglog::u64_at;

use crate::sink::{FilePosition, Signal};

pub use lookout_ingest::seglog::BUFFER as FRAMING;
/// Bytes of `len` and `crc32`.
pub use lookout_ingest::seglog::FRAME_LEN;

/// Bytes of the fixed part of the body.
pub const FIXED_BODY_LEN: usize = BUFFER_FIXED_BODY_LEN;

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
    FRAME_LEN + FIXED_BODY_LEN + positions * BUFFER_POSITION_LEN + payload
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
    out.reserve(encoded_len(positions.len(), payload.len()));
    let start = FRAMING.begin(out);
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
    FRAMING.finish(out, start);
}

/// Decode a body whose checksum was verified.
pub fn decode(body: &[u8]) -> Result<Record, &'static str> {
    check_buffer_body(body)?;
    let signal = Signal::from_tag(body[16]).ok_or("unknown signal tag")?;
    let npos = usize::from(u16::from_le_bytes([body[21], body[22]]));
    let pos_end = FIXED_BODY_LEN + npos * BUFFER_POSITION_LEN;
    let positions = (0..npos)
        .map(|i| {
            let at = FIXED_BODY_LEN + i * BUFFER_POSITION_LEN;
            FilePosition {
                file_id: u64_at(body, at),
                offset: u64_at(body, at + 8),
            }
        })
        .collect();
    Ok(Record {
        seq: u64_at(body, 0),
        time: u64_at(body, 8),
        signal,
        items: u32::from_le_bytes([body[17], body[18], body[19], body[20]]),
        positions,
        payload: Bytes::copy_from_slice(&body[pos_end..]),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use lookout_ingest::seglog::{Next, SegmentReader};

    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for (seq, payload) in [(1u64, &b"one"[..]), (2, b"two")] {
            let positions = [FilePosition {
                file_id: 9,
                offset: seq * 10,
            }];
            encode(&mut out, seq, 7, Signal::Logs, 3, &positions, payload);
            ends.push(out.len() as u64);
        }
        assert_eq!(ends[0], encoded_len(1, 3) as u64);
        std::fs::write(&path, &out).unwrap();
        let mut r = SegmentReader::open(&FRAMING, &path, 0).unwrap();
        let limit = ends[1];
        let Next::Record { body, end } = r.next(limit).unwrap() else {
            panic!()
        };
        assert_eq!(end, ends[0]);
        let record = decode(body).unwrap();
        assert_eq!((record.seq, &record.payload[..]), (1, &b"one"[..]));
        assert_eq!((record.time, record.signal), (7, Signal::Logs));
        assert_eq!(record.positions[0].offset, 10);
        assert_eq!(record.items, 3);
        assert!(matches!(r.next(limit).unwrap(), Next::Record { .. }));
        assert!(matches!(r.next(limit).unwrap(), Next::End));
    }
}
