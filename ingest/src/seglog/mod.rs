//! The segment log under the collector's write-ahead log and the agent's disk buffer: the
//! format's reference, and the one reader, resynchronisation, damage classification,
//! segment files, whole-log scan and group commit both are built on.
//!
//! # Segments
//!
//! A log is a directory of segment files `{seq:020}.{extension}`, numbered from 1 up.
//! Records are only appended, to the newest segment; a full one is closed and the next is
//! created (its directory entry made durable). Segments are deleted oldest first only, so
//! the ones left are contiguous: a gap is damage, not history.
//!
//! # Frames
//!
//! Every record is one frame, little-endian:
//!
//! ```text
//! len: u32 | crc32: u32 | body
//! body = seq: u64 | ...
//! ```
//!
//! `crc32` (CRC-32/ISO-HDLC, as `crc32fast`) covers the whole body. `seq` increases by
//! one per record over the whole log. A [`Framing`] tells the rest: how many leading body
//! bytes `len` leaves uncounted, the range of `len`, what makes a header plausible, and
//! what a body with a valid checksum must satisfy. The two framings:
//!
//! | | collector write-ahead log | agent disk buffer |
//! |---|---|---|
//! | files | `{seq:020}.wal` | `{seq:020}.seg` |
//! | body | `lsn: u64 \| tag: u8 \| payload` | `seq: u64 \| time: u64 \| tag: u8 \| items: u32 \| npos: u16 \| npos × (file_id: u64, offset: u64) \| payload` |
//! | `len` counts | the payload only (body = `9 + len`) | the whole body |
//! | `len` range | `0..=1 GiB` | `23..=256 MiB` |
//! | plausible header | known tag | known tag, positions within the body |
//! | valid body | any (an unknown tag is poison, set aside by the log) | known tag, positions within the body |
//!
//! # Damage
//!
//! Reading never stops at damage. A stretch that is not a record is classified
//! ([`DamageKind`]: torn, checksum, bad_length, bad_header, zeroed, missing_segment),
//! reported once, and stepped over: reading resumes at the next offset holding a valid
//! record whose sequence number lies within 2^40 after the last one seen (or in a window
//! the log chooses while it has seen none). Resynchronisation reads the damaged stretch a
//! window at a time, checks each offset's header in memory, and checksums only plausible
//! candidates, within a budget of twice the stretch, so a zeroed or random stretch costs
//! about one read of it. When nothing valid follows, the rest of the segment is a damaged
//! tail; at the end of the log (the last non-empty segment) that is a torn write and is
//! truncated. A gap in segment numbers, or a jump in sequence numbers between segments
//! that no damage explains, is `missing_segment`.

pub mod classify;
pub mod commit;
pub mod damage;
pub mod error;
pub mod files;
pub mod frame;
pub mod framings;
pub mod metrics;
pub mod reader;
pub mod repair;
pub mod scan;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use classify::classify;
pub use commit::{next_group, Wait};
pub use damage::{Damage, DamageKind};
pub use error::Error;
pub use files::{create_segment, list_segments, segment_name, sync_dir, truncate, SegmentFile};
pub use frame::{u32_at, u64_at, Flaw, Framing, Reasons, SeqWindow, FRAME_LEN, MAX_SEQ_JUMP};
pub use framings::{BUFFER, WAL};
pub use metrics::DamageCounters;
pub use reader::{resync_budget, Next, SegmentReader};
pub use repair::repair_segment;
pub use scan::{scan_log, scan_segment, LogVisitor, Missing, SegmentScan, SeqCursor};
