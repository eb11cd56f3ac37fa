//! The two framings: the collector's write-ahead log and the agent's disk buffer.

use super::damage::DamageKind;
use super::frame::{Framing, Reasons, SeqWindow, MAX_SEQ_JUMP};
use crate::signal::Signal;

/// Body bytes before the payload of a write-ahead log record: `lsn: u64 | tag: u8`.
pub const WAL_UNCOUNTED: usize = 9;
/// Bytes of a write-ahead log record's header: `len | crc32 | lsn | tag`.
pub const WAL_HEADER_LEN: usize = super::frame::FRAME_LEN + WAL_UNCOUNTED;

/// Tag bit of a write-ahead log record consumed from a cluster's stream: its payload
/// starts with its partition and stream sequence (the collector's `wal::origins`).
pub const WAL_ORIGIN_TAG: u8 = 0x10;
/// Whether `tag` is a write-ahead log record's tag.
pub fn wal_tag_known(tag: u8) -> bool {
    Signal::from_tag(tag & !WAL_ORIGIN_TAG).is_some()
}

/// The collector's write-ahead log: `len: u32 | crc32: u32 | lsn: u64 | tag: u8 |
/// payload[len]`, `len` counting the payload only, at most 1 GiB. A record with a valid
/// checksum and an unknown tag is read as a record (the log quarantines it as poison),
/// but resynchronisation only stops at known tags.
pub static WAL: Framing = Framing {
    extension: "wal",
    uncounted: WAL_UNCOUNTED,
    min_len: 0,
    max_len: 1 << 30,
    head_len: WAL_UNCOUNTED,
    plausible: |head, _| wal_tag_known(head[8]),
    check: |_| Ok(()),
    reasons: Reasons {
        torn_header: "incomplete header",
        bad_length: "record length out of range",
        past_end: "incomplete payload",
        checksum: "checksum mismatch",
    },
    kinds: &[
        DamageKind::Torn,
        DamageKind::Checksum,
        DamageKind::BadLength,
        DamageKind::Zeroed,
        DamageKind::MissingSegment,
    ],
    first_window: SeqWindow {
        after: 0,
        most: MAX_SEQ_JUMP,
    },
};

/// Bytes of the fixed part of a buffer record's body:
/// `seq: u64 | time: u64 | tag: u8 | items: u32 | npos: u16`.
pub const BUFFER_FIXED_BODY_LEN: usize = 8 + 8 + 1 + 4 + 2;
/// Bytes of one tailed-file position in a buffer record: `file_id: u64 | offset: u64`.
pub const BUFFER_POSITION_LEN: usize = 16;

/// Offset of the signal tag in a buffer record's body.
const BUFFER_TAG_AT: usize = 16;
/// Offset of `npos` in a buffer record's body.
const BUFFER_NPOS_AT: usize = 21;

/// Bytes of the positions of a buffer record whose fixed body is `fixed`.
fn buffer_positions_len(fixed: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([
        fixed[BUFFER_NPOS_AT],
        fixed[BUFFER_NPOS_AT + 1],
    ])) * BUFFER_POSITION_LEN
}

/// Why a buffer record's body (checksum verified) makes no sense, if it does not.
pub fn check_buffer_body(body: &[u8]) -> Result<(), &'static str> {
    if body.len() < BUFFER_FIXED_BODY_LEN {
        return Err("record shorter than its fixed header");
    }
    if Signal::from_tag(body[BUFFER_TAG_AT]).is_none() {
        return Err("unknown signal tag");
    }
    if body.len() < BUFFER_FIXED_BODY_LEN + buffer_positions_len(body) {
        return Err("positions run past the record");
    }
    Ok(())
}

/// The agent's disk buffer: `len: u32 | crc32: u32 | body[len]`, body = `seq: u64 |
/// time: u64 | tag: u8 | items: u32 | npos: u16 | npos × (file_id: u64, offset: u64) |
/// payload`, at most 256 MiB.
pub static BUFFER: Framing = Framing {
    extension: "seg",
    uncounted: 0,
    min_len: BUFFER_FIXED_BODY_LEN as u32,
    max_len: 256 << 20,
    head_len: BUFFER_FIXED_BODY_LEN,
    plausible: |head, body_len| {
        Signal::from_tag(head[BUFFER_TAG_AT]).is_some()
            && BUFFER_FIXED_BODY_LEN + buffer_positions_len(head) <= body_len
    },
    check: check_buffer_body,
    reasons: Reasons {
        torn_header: "torn record frame",
        bad_length: "bad record length",
        past_end: "record runs past the end of the data",
        checksum: "checksum mismatch",
    },
    kinds: &DamageKind::ALL,
    first_window: SeqWindow {
        after: 0,
        most: 1 << 48,
    },
};
