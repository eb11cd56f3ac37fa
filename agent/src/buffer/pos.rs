//! Positions in the buffer.

/// A position in the buffer: segment number and byte offset. Ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Pos {
    /// Segment number.
    pub seg: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}
