//! What kind of damage a stretch of a segment is, from what reading it found.

use super::damage::DamageKind;
use super::frame::Flaw;
use super::reader::SegmentReader;

/// What kind of damage the bytes `offset..end` read by `r` are, `flaw` being what reading
/// found at `offset` and `tail` whether nothing valid follows.
pub fn classify(
    r: &SegmentReader,
    offset: u64,
    end: u64,
    flaw: Flaw,
    tail: bool,
) -> std::io::Result<DamageKind> {
    if r.is_zero(offset, end - offset)? {
        return Ok(DamageKind::Zeroed);
    }
    Ok(match flaw {
        Flaw::TornHeader => DamageKind::Torn,
        Flaw::PastEnd if tail => DamageKind::Torn,
        Flaw::PastEnd | Flaw::BadLength => DamageKind::BadLength,
        Flaw::Checksum => {
            // The length leads exactly to the next record (or the end): it is right, and
            // other bytes are damaged.
            let len = r.frame_len_at(offset)?.unwrap_or(0);
            if offset + r.framing().frame_len(len) == end {
                DamageKind::Checksum
            } else {
                DamageKind::BadLength
            }
        }
        Flaw::BadHeader(_) => DamageKind::BadHeader,
    })
}
