//! A damaged stretch of a segment and its kind.

use serde::Serialize;

/// What kind of damage a stretch is: the values of a log's `kind` label on its
/// corruption counter.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// A record cut short by the end of the data (a crash in the middle of a write).
    Torn,
    /// A record of consistent length whose checksum does not match (flipped bits).
    Checksum,
    /// A length field out of range, or not leading to the next record (a damaged header).
    BadLength,
    /// A record with a valid checksum whose header makes no sense (for example an
    /// unknown signal, or positions past its end).
    BadHeader,
    /// A stretch of zero bytes (a preallocated or half-written file after a power loss).
    Zeroed,
    /// Segments missing from the sequence, or records missing between two segments.
    MissingSegment,
}

impl DamageKind {
    /// Every kind, in label order.
    pub const ALL: [DamageKind; 6] = [
        DamageKind::Torn,
        DamageKind::Checksum,
        DamageKind::BadLength,
        DamageKind::BadHeader,
        DamageKind::Zeroed,
        DamageKind::MissingSegment,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Torn => "torn",
            DamageKind::Checksum => "checksum",
            DamageKind::BadLength => "bad_length",
            DamageKind::BadHeader => "bad_header",
            DamageKind::Zeroed => "zeroed",
            DamageKind::MissingSegment => "missing_segment",
        }
    }
}

/// A stretch of unreadable bytes in a segment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// Where it starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What was wrong at `offset`.
    pub reason: &'static str,
    /// What kind of damage it is.
    pub kind: DamageKind,
    /// True when nothing valid follows (a torn tail, typical of a crash mid-write).
    pub tail: bool,
}
