//! The corruption tests of a segment log, shared: one matrix of damage (torn tails,
//! flipped bits, bad lengths, zeroed stretches, missing segments, damage at the start of
//! a segment, several stretches, a large stretch) run against any log built on this
//! module ([`Subject`]): the core's own scan over both framings here, and the collector's
//! write-ahead log and the agent's disk buffer through their real start-up and readers.
//!
//! Compiled for tests and with the `testkit` feature.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::damage::DamageKind;
use super::files::segment_name;
use super::frame::{Framing, FRAME_LEN};

/// Payload bytes of every record the tests write: `[seq as u8; PAYLOAD]`.
pub const PAYLOAD: usize = 100;

/// The payload of record `seq`.
pub fn payload(seq: u64) -> Vec<u8> {
    vec![seq as u8; PAYLOAD]
}

/// What opening a (damaged) log found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Sequence numbers of the records read back, in order (the subject checked that each
    /// record's payload is [`payload`] of its sequence number).
    pub seqs: Vec<u64>,
    /// Damaged stretches counted, by kind.
    pub kinds: HashMap<DamageKind, u64>,
    /// Every other count of damaged stretches the log keeps (name, value): each must
    /// equal the number of stretches.
    pub stretches: Vec<(&'static str, u64)>,
    /// The warning and error lines logged, when the log logs.
    pub lines: Option<Vec<String>>,
}

/// A log under test.
pub trait Subject {
    /// The log, open.
    type Log;
    /// Its framing.
    fn framing(&self) -> &'static Framing;
    /// Append the encoding of record `seq` (payload [`payload`]`(seq)`) to `out`.
    fn encode(&self, out: &mut Vec<u8>, seq: u64);
    /// Offset of the payload in an encoded record.
    fn payload_at(&self) -> usize;
    /// Offset of the signal tag in an encoded record.
    fn tag_at(&self) -> usize;
    /// Open the log in `dir`, recovering what is there, and read every record.
    fn open(&self, dir: &Path) -> (Self::Log, Opened);
    /// Append record `seq` to the open log and close it (durably).
    fn append_and_close(&self, log: Self::Log, seq: u64);
}

/// Bytes of one encoded record.
fn record_len(s: &impl Subject) -> usize {
    s.payload_at() + PAYLOAD
}

/// Three segments of three records each, sequence numbers 1..=9.
pub fn write_log(s: &impl Subject, dir: &Path) -> Vec<PathBuf> {
    (0..3u64)
        .map(|seg| {
            let mut out = Vec::new();
            for r in 0..3u64 {
                s.encode(&mut out, seg * 3 + r + 1);
            }
            assert_eq!(out.len(), 3 * record_len(s));
            let path = dir.join(segment_name(s.framing(), seg + 1));
            fs::write(&path, out).unwrap();
            path
        })
        .collect()
}

/// One kind of damage done to a record of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// Cut the segment in the middle of the record's payload.
    TornPayload,
    /// Cut the segment 5 bytes into the record (inside `len | crc32`).
    TornFrame,
    /// Cut the segment 9 bytes into the record (past `len | crc32`, inside the write-ahead
    /// log's header).
    TornHeader,
    /// Flip one payload byte.
    Flip,
    /// Length field far too large.
    LenHuge,
    /// Length field zero.
    LenZero,
    /// Length field pointing past the end of the segment.
    LenPastEnd,
    /// Everything before the payload overwritten with garbage.
    Garbage,
    /// A valid checksum over a body with an unknown signal tag (only where that is damage:
    /// framings that report `bad_header`).
    BadTag,
    /// The whole record zero-filled.
    ZeroRecord,
    /// The record and everything after it in its segment zero-filled.
    ZeroFrom,
    /// 4 KiB of zeros after the segment's last record; the record index is ignored.
    ZeroTail,
    /// The segment deleted; the record index is ignored.
    Missing,
    /// The segment emptied; the record index is ignored.
    Empty,
}

/// Do `hit` to record `r` of the segment at `path`.
pub fn damage(s: &impl Subject, path: &Path, r: usize, hit: Hit) {
    let mut d = fs::read(path).unwrap();
    let rec = record_len(s);
    let at = r * rec;
    let payload_at = at + s.payload_at();
    match hit {
        Hit::TornPayload => d.truncate(payload_at + PAYLOAD / 2),
        Hit::TornFrame => d.truncate(at + 5),
        Hit::TornHeader => d.truncate(at + 9),
        Hit::Flip => d[payload_at + 50] ^= 0x20,
        Hit::LenHuge => d[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()),
        Hit::LenZero => d[at..at + 4].copy_from_slice(&0u32.to_le_bytes()),
        Hit::LenPastEnd => {
            let past = (d.len() - at) as u32 + 1000;
            d[at..at + 4].copy_from_slice(&past.to_le_bytes());
        }
        Hit::Garbage => {
            for (i, b) in d[at..payload_at].iter_mut().enumerate() {
                *b = [0xde, 0xad, 0xbe, 0xef][i % 4];
            }
        }
        Hit::BadTag => {
            d[at + s.tag_at()] = 0x7f;
            let crc = crc32fast::hash(&d[at + FRAME_LEN..at + rec]);
            d[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        Hit::ZeroRecord => d[at..at + rec].fill(0),
        Hit::ZeroFrom => d[at..].fill(0),
        Hit::ZeroTail => d.extend_from_slice(&[0; 4096]),
        Hit::Missing => return fs::remove_file(path).unwrap(),
        Hit::Empty => d.clear(),
    }
    fs::write(path, d).unwrap();
}

/// (damage, segment, record, sequence numbers lost, kinds counted, end of log cut off)
pub type Case = (
    Hit,
    usize,
    usize,
    &'static [u64],
    &'static [DamageKind],
    bool,
);

/// The matrix: every kind of damage at the first record of the first segment, a middle
/// record of the middle segment, the last record of the last segment, and at segment
/// boundaries.
#[rustfmt::skip]
pub const CASES: &[Case] = {
    use DamageKind::{BadHeader, BadLength, Checksum, MissingSegment, Torn, Zeroed};
    use Hit::*;
    &[
        (TornPayload, 0, 0, &[1, 2, 3], &[Torn], false),
        (TornPayload, 1, 1, &[5, 6], &[Torn], false),
        (TornPayload, 2, 2, &[9], &[Torn], true),
        (TornPayload, 2, 0, &[7, 8, 9], &[Torn], true),
        (TornFrame, 0, 2, &[3], &[Torn], false),
        (TornFrame, 2, 2, &[9], &[Torn], true),
        (TornHeader, 0, 2, &[3], &[Torn], false),
        (TornHeader, 2, 2, &[9], &[Torn], true),
        (Flip, 0, 0, &[1], &[Checksum], false),
        (Flip, 0, 2, &[3], &[Checksum], false),
        (Flip, 1, 1, &[5], &[Checksum], false),
        (Flip, 2, 0, &[7], &[Checksum], false),
        (Flip, 2, 2, &[9], &[Checksum], true),
        (LenHuge, 0, 0, &[1], &[BadLength], false),
        (LenHuge, 1, 1, &[5], &[BadLength], false),
        (LenHuge, 2, 2, &[9], &[BadLength], true),
        (LenZero, 0, 0, &[1], &[BadLength], false),
        (LenZero, 1, 1, &[5], &[BadLength], false),
        (LenZero, 2, 2, &[9], &[BadLength], true),
        (LenPastEnd, 0, 0, &[1], &[BadLength], false),
        (LenPastEnd, 1, 1, &[5], &[BadLength], false),
        (LenPastEnd, 1, 2, &[6], &[Torn], false),
        (LenPastEnd, 2, 2, &[9], &[Torn], true),
        (Garbage, 0, 0, &[1], &[BadLength], false),
        (Garbage, 1, 1, &[5], &[BadLength], false),
        (Garbage, 2, 2, &[9], &[BadLength], true),
        (BadTag, 0, 0, &[1], &[BadHeader], false),
        (BadTag, 1, 1, &[5], &[BadHeader], false),
        (BadTag, 2, 2, &[9], &[BadHeader], true),
        (ZeroRecord, 0, 0, &[1], &[Zeroed], false),
        (ZeroRecord, 1, 1, &[5], &[Zeroed], false),
        (ZeroRecord, 2, 2, &[9], &[Zeroed], true),
        (ZeroFrom, 0, 1, &[2, 3], &[Zeroed], false),
        (ZeroFrom, 2, 1, &[8, 9], &[Zeroed], true),
        (ZeroTail, 0, 0, &[], &[Zeroed], false),
        (ZeroTail, 1, 0, &[], &[Zeroed], false),
        (ZeroTail, 2, 0, &[], &[Zeroed], true),
        // The oldest segment gone looks like one deleted once done with, the newest gone
        // like records never written: neither is detectable. A middle one is.
        (Missing, 0, 0, &[1, 2, 3], &[], false),
        (Missing, 1, 0, &[4, 5, 6], &[MissingSegment], false),
        (Missing, 2, 0, &[7, 8, 9], &[], false),
        (Empty, 0, 0, &[1, 2, 3], &[], false),
        (Empty, 1, 0, &[4, 5, 6], &[MissingSegment], false),
        (Empty, 2, 0, &[7, 8, 9], &[], false),
    ]
};

/// Check what opening found against the expected records and damaged stretches.
fn check_opened(case: &str, got: &Opened, want: &[u64], kinds: &[DamageKind]) {
    assert_eq!(got.seqs, want, "{case}: records read");
    for kind in DamageKind::ALL {
        let n = kinds.iter().filter(|k| **k == kind).count() as u64;
        let counted = got.kinds.get(&kind).copied().unwrap_or(0);
        assert_eq!(counted, n, "{case}: {kind:?}");
    }
    for (what, n) in &got.stretches {
        assert_eq!(*n, kinds.len() as u64, "{case}: {what}");
    }
    if let Some(lines) = &got.lines {
        // One line per damaged stretch, naming the file, the offset and the kind.
        assert_eq!(lines.len(), kinds.len(), "{case}: {lines:#?}");
        for (line, kind) in lines.iter().zip(kinds) {
            assert!(
                line.contains(&format!("kind=\"{}\"", kind.as_str())),
                "{case}: {line}"
            );
            assert!(
                line.contains("segment=") && line.contains("offset="),
                "{case}: {line}"
            );
        }
    }
}

/// Run the matrix: opening never fails; every record but the damaged ones is read back
/// in order (later ones in the same segment and later segments included); each damaged
/// stretch is counted once by kind and logged on one line; a damaged end of the log is
/// truncated, other damage left in place; and the log appends after the highest sequence
/// number found and opens again with the same records plus the new one.
pub fn corruption_matrix(s: &impl Subject) {
    for &(hit, seg, rec, lost, kinds, cut) in CASES {
        if hit == Hit::BadTag && !s.framing().kinds.contains(&DamageKind::BadHeader) {
            continue;
        }
        let case = format!(
            "{}: {hit:?} at segment {seg} record {rec}",
            s.framing().extension
        );
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(s, dir.path());
        damage(s, &paths[seg], rec, hit);
        let size_before = fs::metadata(&paths[seg]).map(|m| m.len()).ok();

        let (log, got) = s.open(dir.path());
        let want: Vec<u64> = (1..=9).filter(|l| !lost.contains(l)).collect();
        check_opened(&case, &got, &want, kinds);
        let size_after = fs::metadata(&paths[seg]).map(|m| m.len()).ok();
        assert_eq!(
            size_after < size_before,
            cut,
            "{case}: truncated ({size_before:?} -> {size_after:?})"
        );
        let next = want.last().map_or(1, |l| l + 1);
        s.append_and_close(log, next);

        // Again: the same records plus the new one; damage cut off is gone for good.
        let (log, again) = s.open(dir.path());
        let mut want = want;
        want.push(next);
        assert_eq!(again.seqs, want, "{case}: second open");
        let left = if cut { 0 } else { kinds.len() as u64 };
        for (what, n) in &again.stretches {
            assert_eq!(*n, left, "{case}: damage left ({what})");
        }
        drop(log);
    }
}

/// Several damaged stretches in one segment (a checksum, zeros, a length) are each
/// skipped, counted and logged on their own.
pub fn several_stretches_in_one_segment(s: &impl Subject) {
    let dir = tempfile::tempdir().unwrap();
    let rec = record_len(s);
    let mut buf = Vec::new();
    for seq in 1..=9u64 {
        s.encode(&mut buf, seq);
    }
    buf[rec + s.payload_at() + 3] ^= 1; // seq 2: checksum
    buf[4 * rec..5 * rec].fill(0); // seq 5: zeros
    buf[6 * rec..6 * rec + 4].copy_from_slice(&0u32.to_le_bytes()); // seq 7: length
    fs::write(dir.path().join(segment_name(s.framing(), 1)), &buf).unwrap();
    let (log, got) = s.open(dir.path());
    use DamageKind::{BadLength, Checksum, Zeroed};
    check_opened(
        "several stretches",
        &got,
        &[1, 3, 4, 6, 8, 9],
        &[Checksum, Zeroed, BadLength],
    );
    drop(log);
}

/// A large zero-filled stretch followed by random bytes is skipped in about one read of
/// it (no quadratic rescans), and the record after it is found.
pub fn large_damaged_stretch_resync_is_linear(s: &impl Subject) {
    let dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    s.encode(&mut buf, 1);
    buf.extend(std::iter::repeat_n(0u8, 8 << 20));
    let mut x = 0x1234_5678u32;
    buf.extend((0..(8 << 20)).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    s.encode(&mut buf, 2);
    fs::write(dir.path().join(segment_name(s.framing(), 1)), &buf).unwrap();
    let t = Instant::now();
    let (log, got) = s.open(dir.path());
    assert_eq!(got.seqs, [1, 2]);
    for (what, n) in &got.stretches {
        assert_eq!(*n, 1, "{what}");
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    drop(log);
}

/// Run every test of this kit against `s`.
pub fn run_all(s: &impl Subject) {
    corruption_matrix(s);
    several_stretches_in_one_segment(s);
    large_damaged_stretch_resync_is_linear(s);
}

/// Captured log lines (warnings and errors) of the calling thread.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Run `f`, capturing the warnings and errors it logs on this thread.
    pub fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(sub, f)
    }

    /// The lines captured so far.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Counter values of the metric `name` in `registry` whose labels include `label` (all
/// when `None`), summed.
pub fn counter(registry: &prometheus::Registry, name: &str, label: Option<&str>) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|x| label.is_none_or(|l| x.get_label().iter().any(|p| p.value() == l)))
        .map(|x| x.get_counter().value() as u64)
        .sum()
}

/// Counts by kind of `name{kind}` in `registry`.
pub fn kind_counts(registry: &prometheus::Registry, name: &str) -> HashMap<DamageKind, u64> {
    DamageKind::ALL
        .iter()
        .map(|k| (*k, counter(registry, name, Some(k.as_str()))))
        .collect()
}
