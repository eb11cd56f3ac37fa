#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::testkit::{self, Opened, Subject};
use super::*;
use crate::signal::Signal;

/// The core's own scan of a whole log in one framing: what every log built on it sees
/// before it adds its own counting and logging.
struct Scan(&'static Framing);

/// Bytes before the payload of the records [`Scan`] writes.
fn payload_at(framing: &Framing) -> usize {
    if framing.uncounted > 0 {
        FRAME_LEN + framing.uncounted
    } else {
        FRAME_LEN + framings::BUFFER_FIXED_BODY_LEN + framings::BUFFER_POSITION_LEN
    }
}

#[derive(Default)]
struct Collect {
    payload_at: usize,
    seqs: Vec<u64>,
    kinds: HashMap<DamageKind, u64>,
    stretches: u64,
}

impl LogVisitor for Collect {
    type Error = Error;
    fn missing(&mut self, _: &SegmentFile, _: Missing) {
        *self.kinds.entry(DamageKind::MissingSegment).or_default() += 1;
        self.stretches += 1;
    }
    fn record(&mut self, _: &SegmentFile, _: u64, _: u64, body: &[u8]) {
        let seq = u64_at(body, 0);
        assert_eq!(
            &body[self.payload_at - FRAME_LEN..],
            testkit::payload(seq),
            "seq {seq}"
        );
        self.seqs.push(seq);
    }
    fn damage(&mut self, _: &SegmentFile, d: &Damage, _: bool) {
        *self.kinds.entry(d.kind).or_default() += 1;
        self.stretches += 1;
    }
    fn segment(&mut self, _: SegmentFile, _: SegmentScan) -> Result<(), Error> {
        Ok(())
    }
}

impl Subject for Scan {
    /// The log's directory: the core has no writer, so appending makes a new segment
    /// after the last one holding the record (as a log's writer does after a start).
    type Log = PathBuf;
    fn framing(&self) -> &'static Framing {
        self.0
    }
    fn encode(&self, out: &mut Vec<u8>, seq: u64) {
        let start = self.0.begin(out);
        out.extend_from_slice(&seq.to_le_bytes());
        if self.0.uncounted == 0 {
            out.extend_from_slice(&7u64.to_le_bytes());
            out.push(Signal::Logs.tag());
            out.extend_from_slice(&2u32.to_le_bytes());
            out.extend_from_slice(&1u16.to_le_bytes());
            out.extend_from_slice(&42u64.to_le_bytes());
            out.extend_from_slice(&(seq * 100).to_le_bytes());
        } else {
            out.push(Signal::Logs.tag());
        }
        out.extend_from_slice(&testkit::payload(seq));
        self.0.finish(out, start);
    }
    fn payload_at(&self) -> usize {
        payload_at(self.0)
    }
    fn tag_at(&self) -> usize {
        FRAME_LEN + if self.0.uncounted > 0 { 8 } else { 16 }
    }
    fn open(&self, dir: &Path) -> (PathBuf, Opened) {
        let mut c = Collect {
            payload_at: payload_at(self.0),
            ..Collect::default()
        };
        let segments = list_segments(self.0, dir).unwrap();
        scan_log(
            self.0,
            segments,
            SeqCursor::new(self.0.first_window),
            false,
            &mut c,
        )
        .unwrap();
        let opened = Opened {
            seqs: c.seqs,
            kinds: c.kinds,
            stretches: vec![("damaged stretches", c.stretches)],
            lines: None,
        };
        (dir.to_path_buf(), opened)
    }
    fn append_and_close(&self, dir: PathBuf, seq: u64) {
        let last = list_segments(self.0, &dir)
            .unwrap()
            .last()
            .map_or(0, |s| s.seq);
        let (mut f, _) = create_segment(self.0, &dir, last + 1).unwrap();
        let mut out = Vec::new();
        self.encode(&mut out, seq);
        f.write_all(&out).unwrap();
    }
}

#[test]
fn corruption_tests_pass_for_the_write_ahead_log_framing() {
    testkit::run_all(&Scan(&WAL));
}

#[test]
fn corruption_tests_pass_for_the_buffer_framing() {
    testkit::run_all(&Scan(&BUFFER));
}

/// A frame round-trips through encode and parse, and every flaw of a damaged one is found.
#[test]
fn frames_parse_back_and_flaws_are_named() {
    for framing in [&WAL, &BUFFER] {
        let s = Scan(framing);
        let mut out = Vec::new();
        s.encode(&mut out, 5);
        let (body, used) = framing.parse(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(u64_at(body, 0), 5);
        assert_eq!(framing.parse(&out[..3]), Err(Flaw::TornHeader));
        assert_eq!(framing.parse(&out[..out.len() - 1]), Err(Flaw::PastEnd));
        let mut bad = out.clone();
        bad[out.len() - 1] ^= 1;
        assert_eq!(framing.parse(&bad), Err(Flaw::Checksum));
        bad[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(framing.parse(&bad), Err(Flaw::BadLength));
        assert_eq!(framing.reason(Flaw::Checksum), "checksum mismatch");
    }
}

/// The reader stops at a torn tail without moving, and resynchronises past a flipped bit
/// onto the next record.
#[test]
fn reader_finds_a_torn_tail_and_resyncs_past_a_flipped_bit() {
    for framing in [&WAL, &BUFFER] {
        let s = Scan(framing);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for seq in 1..=3 {
            s.encode(&mut out, seq);
            ends.push(out.len() as u64);
        }
        fs::write(&path, &out).unwrap();
        let mut r = SegmentReader::open(framing, &path, ends[1]).unwrap();
        assert!(matches!(
            r.next(ends[2] - 1).unwrap(),
            Next::Corrupt(Flaw::PastEnd)
        ));
        assert_eq!(r.offset(), ends[1]);
        out[ends[0] as usize + 20] ^= 0x40;
        fs::write(&path, &out).unwrap();
        let mut r = SegmentReader::open(framing, &path, ends[0]).unwrap();
        assert!(matches!(
            r.next(ends[2]).unwrap(),
            Next::Corrupt(Flaw::Checksum)
        ));
        let mut budget = resync_budget(ends[2]);
        assert_eq!(
            r.resync(ends[2], SeqWindow::after(1), &mut budget).unwrap(),
            Some(ends[1])
        );
        let Next::Record { body, end } = r.next(ends[2]).unwrap() else {
            panic!("no record after the resync")
        };
        assert_eq!((u64_at(body, 0), end), (3, ends[2]));
    }
}

/// Repair keeps exactly the valid records: a torn tail is cut, a damaged stretch in the
/// middle is removed.
#[test]
fn repair_keeps_the_valid_records() {
    for framing in [&WAL, &BUFFER] {
        let s = Scan(framing);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(framing, 1));
        let mut out = Vec::new();
        for seq in 1..=4 {
            s.encode(&mut out, seq);
        }
        let rec = out.len() / 4;
        out[rec + s.payload_at() + 1] ^= 1;
        let torn = out[..rec / 2].to_vec();
        out.extend_from_slice(&torn);
        fs::write(&path, &out).unwrap();
        let before = repair_segment(framing, &path).unwrap();
        assert_eq!(before.records, 3);
        assert_eq!(before.damage.len(), 2);
        let mut cursor = SeqCursor::new(framing.first_window);
        let mut seqs = Vec::new();
        let after = scan_segment(framing, &path, &mut cursor, |_, _, b| {
            seqs.push(u64_at(b, 0))
        })
        .unwrap();
        assert!(after.damage.is_empty(), "{:?}", after.damage);
        assert_eq!(seqs, [1, 3, 4]);
        assert_eq!(after.bytes, 3 * rec as u64);
    }
}

/// A group is whatever is queued behind the first append, up to the byte limit.
#[test]
fn group_commit_takes_what_is_queued_up_to_the_limit() {
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let tick = std::time::Duration::from_millis(10);
    let mut group = Vec::new();
    assert_eq!(next_group(&rx, tick, 10, |n| *n, &mut group), Wait::Idle);
    for n in [4, 4, 4, 4] {
        tx.send(n).unwrap();
    }
    assert_eq!(next_group(&rx, tick, 10, |n| *n, &mut group), Wait::Group);
    assert_eq!(group, [4, 4, 4]);
    group.clear();
    assert_eq!(next_group(&rx, tick, 10, |n| *n, &mut group), Wait::Group);
    assert_eq!(group, [4]);
    drop(tx);
    group.clear();
    assert_eq!(next_group(&rx, tick, 10, |n| *n, &mut group), Wait::Closed);
}
