#![allow(clippy::unwrap_used, clippy::panic)]

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use lookout_config::{FsyncPolicy, WhenFull};

use super::*;
use crate::sink::{Entry, FilePosition, Signal};

fn opts(max: u64, seg: u64, when_full: WhenFull) -> BufferOptions {
    BufferOptions {
        max_size: max,
        segment_size: seg,
        when_full,
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_secs(1),
    }
}

fn open(dir: &Path, o: BufferOptions) -> (Buffer, Recovery, Registry) {
    let registry = Registry::new();
    let m = BufferMetrics::new(&registry).unwrap();
    let (b, r) = Buffer::open(dir, o, m).unwrap();
    (b, r, registry)
}

fn entry(i: u32, len: usize) -> Entry {
    let mut payload = i.to_le_bytes().to_vec();
    payload.resize(len.max(4), 0xab);
    Entry {
        signal: Signal::Logs,
        payload: Bytes::from(payload),
        items: 2,
        positions: vec![FilePosition {
            file_id: 42,
            offset: u64::from(i) * 100,
        }],
    }
}

fn id(r: &Record) -> u32 {
    u32::from_le_bytes([r.payload[0], r.payload[1], r.payload[2], r.payload[3]])
}

fn read_all(reader: &mut Reader) -> Vec<(u32, Pos)> {
    let mut out = Vec::new();
    loop {
        match reader.next(Duration::from_millis(50)).unwrap() {
            Read::Record(r, p) => out.push((id(&r), p)),
            Read::Idle | Read::Closed => return out,
        }
    }
}

fn metric(reg: &Registry, name: &str) -> f64 {
    reg.gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| m.get_counter().value() + m.get_gauge().value())
        .sum()
}

#[tokio::test]
async fn records_come_back_in_order_and_acked_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, reg) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
    for i in 0..100 {
        b.append(entry(i, 3000)).await.unwrap();
    }
    let mut r = b.reader();
    let got = read_all(&mut r);
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    let segs_before = scan::list_segments(dir.path()).unwrap().len();
    assert!(
        segs_before >= 4,
        "rolled into several segments: {segs_before}"
    );
    b.ack(got[49].1);
    b.flush_ack().unwrap();
    let segs_mid = scan::list_segments(dir.path()).unwrap().len();
    assert!(segs_mid < segs_before);
    b.ack(got[99].1);
    b.flush_ack().unwrap();
    assert_eq!(
        scan::list_segments(dir.path()).unwrap().len(),
        1,
        "only the open segment stays"
    );
    assert_eq!(b.unacked_bytes(), 0);
    assert_eq!(
        metric(&reg, "lookout_agent_buffer_appended_items_total"),
        200.0
    );
}

#[tokio::test]
async fn a_crash_replays_exactly_what_was_not_acked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _, _) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
        for i in 0..50 {
            b.append(entry(i, 2000)).await.unwrap();
        }
        let got = read_all(&mut b.reader());
        b.ack(got[19].1);
        b.flush_ack().unwrap();
        // Acked in memory only: lost with the crash, so shipped again.
        b.ack(got[29].1);
        // No close: the process "dies" here.
    }
    let (b, rec, _) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
    assert_eq!(rec.unacked_records, 30);
    assert_eq!(rec.unacked_items[1], 60);
    assert_eq!(rec.positions.get(&42), Some(&4900));
    let got = read_all(&mut b.reader());
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        (20..50).collect::<Vec<_>>()
    );
    // New appends continue after the old ones.
    b.append(entry(50, 10)).await.unwrap();
    let mut r = b.reader();
    assert_eq!(read_all(&mut r).last().unwrap().0, 50);
}

#[tokio::test]
async fn torn_tail_is_truncated_and_damage_in_the_middle_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _, _) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
        for i in 0..10 {
            b.append(entry(i, 1000)).await.unwrap();
        }
    }
    let segs = scan::list_segments(dir.path()).unwrap();
    let path = &segs[0].1;
    let mut data = fs::read(path).unwrap();
    let rec_len = data.len() / 10;
    // Flip a bit inside record 3, and tear a half-written record onto the end.
    data[3 * rec_len + 40] ^= 0x10;
    let torn = data[..rec_len / 2].to_vec();
    data.extend_from_slice(&torn);
    fs::write(path, &data).unwrap();

    let (b, rec, reg) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
    assert_eq!(rec.damaged, 2);
    assert_eq!(rec.unacked_records, 9);
    let got: Vec<u32> = read_all(&mut b.reader()).iter().map(|g| g.0).collect();
    assert_eq!(got, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        fs::metadata(path).unwrap().len() as usize,
        rec_len * 10,
        "torn tail truncated"
    );
    assert!(metric(&reg, "lookout_agent_buffer_corrupt_records_total") >= 2.0);
    // verify --repair rewrites the segment without the damage.
    let repaired = scan::repair_segment(segs[0].0, path).unwrap();
    assert!(repaired.damage.is_empty());
    assert_eq!(repaired.records, 9);
}

#[tokio::test]
async fn a_full_buffer_blocks_or_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, reg) = open(dir.path(), opts(256 << 10, 64 << 10, WhenFull::Block));
    let mut n = 0;
    let err = loop {
        match b.append(entry(n, 8000)).await {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 1000);
    };
    assert!(matches!(err, SinkError::Full(_)), "{err}");
    assert!(err.to_string().contains("disk buffer is full"));
    assert_eq!(
        metric(&reg, "lookout_agent_buffer_refused_appends_total"),
        1.0
    );
    // Shipping frees room.
    let got = read_all(&mut b.reader());
    b.ack(got.last().unwrap().1);
    b.flush_ack().unwrap();
    b.append(entry(n, 8000)).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (b, _, reg) = open(dir.path(), opts(256 << 10, 64 << 10, WhenFull::DropOldest));
    let mut reader = b.reader();
    for i in 0..100 {
        b.append(entry(i, 8000)).await.unwrap();
    }
    let dropped = metric(&reg, "lookout_agent_buffer_dropped_items_total");
    assert!(dropped > 0.0);
    let got: Vec<u32> = read_all(&mut reader).iter().map(|g| g.0).collect();
    assert_eq!(*got.last().unwrap(), 99);
    assert_eq!(
        got.len() as f64 * 2.0 + dropped,
        200.0,
        "every item is read or counted as dropped"
    );
    assert!(fs::read_dir(dir.path()).unwrap().count() <= 6);
}

#[tokio::test]
async fn a_reader_waits_for_new_data_and_sees_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _, _) = open(dir.path(), opts(1 << 20, 64 << 10, WhenFull::Block));
    let mut r = b.reader();
    let t = std::thread::spawn(move || {
        let mut ids = Vec::new();
        loop {
            match r.next(Duration::from_secs(5)).unwrap() {
                Read::Record(rec, _) => ids.push(id(&rec)),
                Read::Idle => panic!("idle"),
                Read::Closed => return ids,
            }
        }
    });
    for i in 0..5 {
        b.append(entry(i, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.close();
    assert_eq!(t.join().unwrap(), [0, 1, 2, 3, 4]);
    assert!(b.append(entry(9, 10)).await.is_err());
}

/// Captured log lines of the calling thread (warnings and errors).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(sub, f)
    }
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const PAYLOAD: usize = 100;
/// Bytes of one record of [`write_segments`].
const REC: usize = format::FRAME_LEN + format::FIXED_BODY_LEN + 16 + PAYLOAD;
/// Offset of the payload in a record.
const PAYLOAD_AT: usize = format::FRAME_LEN + format::FIXED_BODY_LEN + 16;

/// Three segments of three records each: sequence numbers 1..=9, ids 0..=8.
fn write_segments(dir: &Path) -> Vec<PathBuf> {
    (0..3u64)
        .map(|s| {
            let mut out = Vec::new();
            for r in 0..3u64 {
                let i = s * 3 + r;
                let e = entry(i as u32, PAYLOAD);
                format::encode(
                    &mut out,
                    i + 1,
                    7,
                    e.signal,
                    e.items,
                    &e.positions,
                    &e.payload,
                );
            }
            assert_eq!(out.len(), 3 * REC);
            let path = dir.join(scan::segment_name(s + 1));
            fs::write(&path, out).unwrap();
            path
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Hit {
    /// Cut the segment in the middle of the record's payload.
    TornPayload,
    /// Cut the segment in the middle of the record's frame.
    TornFrame,
    /// Flip one payload byte.
    Flip,
    /// Length field far too large.
    LenHuge,
    /// Length field zero.
    LenZero,
    /// Length field pointing past the end of the segment.
    LenPastEnd,
    /// The frame and fixed body overwritten with garbage.
    Garbage,
    /// A valid checksum over a body with an unknown signal tag.
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

fn damage(path: &Path, r: usize, hit: Hit) {
    let mut d = fs::read(path).unwrap();
    let at = r * REC;
    let body = at + format::FRAME_LEN;
    match hit {
        Hit::TornPayload => d.truncate(at + PAYLOAD_AT + PAYLOAD / 2),
        Hit::TornFrame => d.truncate(at + 5),
        Hit::Flip => d[at + PAYLOAD_AT + 50] ^= 0x20,
        Hit::LenHuge => d[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()),
        Hit::LenZero => d[at..at + 4].copy_from_slice(&0u32.to_le_bytes()),
        Hit::LenPastEnd => {
            let past = (d.len() - at) as u32 + 1000;
            d[at..at + 4].copy_from_slice(&past.to_le_bytes());
        }
        Hit::Garbage => {
            for (i, b) in d[at..at + PAYLOAD_AT].iter_mut().enumerate() {
                *b = [0xde, 0xad, 0xbe, 0xef][i % 4];
            }
        }
        Hit::BadTag => {
            d[body + 16] = 0x7f;
            let crc = crc32fast::hash(&d[body..at + REC]);
            d[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        Hit::ZeroRecord => d[at..at + REC].fill(0),
        Hit::ZeroFrom => d[at..].fill(0),
        Hit::ZeroTail => d.extend_from_slice(&[0; 4096]),
        Hit::Missing => return fs::remove_file(path).unwrap(),
        Hit::Empty => d.clear(),
    }
    fs::write(path, d).unwrap();
}

fn kind_count(reg: &Registry, kind: &str) -> f64 {
    reg.gather()
        .iter()
        .filter(|f| f.name() == "lookout_agent_buffer_corruptions_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == kind))
        .map(|m| m.get_counter().value())
        .sum()
}

/// Open the buffer in `dir` and read everything: the ids read, what recovery reported,
/// the registry, and the warning/error lines logged while opening and reading.
fn open_and_read(dir: &Path) -> (Buffer, Vec<u32>, Recovery, Registry, Vec<String>) {
    let logs = Logs::default();
    let (b, rec, reg, ids) = logs.capture(|| {
        let (b, rec, reg) = open(dir, opts(1 << 20, 3 * REC as u64, WhenFull::Block));
        let ids = read_all(&mut b.reader()).iter().map(|g| g.0).collect();
        (b, rec, reg, ids)
    });
    (b, ids, rec, reg, logs.lines())
}

/// (damage, segment, record, ids lost, kinds counted, end of the buffer cut off)
type Case = (
    Hit,
    usize,
    usize,
    &'static [u32],
    &'static [scan::DamageKind],
    bool,
);

/// The corruption matrix of the buffer: every kind of damage at the first record of the
/// first segment, a middle record of the middle segment, the last record of the last
/// segment, and at segment boundaries. Opening never fails; every record but the damaged
/// ones is read back in order (later ones in the same segment included); each damaged
/// stretch is counted once by kind (at start-up, not again by the reader) and logged on
/// one line; damaged ends are truncated; and the buffer appends and reopens cleanly.
#[tokio::test]
async fn corruption_matrix() {
    use scan::DamageKind::{BadHeader, BadLength, Checksum, MissingSegment, Torn, Zeroed};
    use Hit::*;
    // (damage, segment, record, ids lost, kinds counted, end of the buffer cut off)
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (TornPayload, 0, 0, &[0, 1, 2], &[Torn], false),
        (TornPayload, 1, 1, &[4, 5], &[Torn], false),
        (TornPayload, 2, 2, &[8], &[Torn], true),
        (TornFrame, 0, 2, &[2], &[Torn], false),
        (TornFrame, 2, 2, &[8], &[Torn], true),
        (Flip, 0, 0, &[0], &[Checksum], false),
        (Flip, 0, 2, &[2], &[Checksum], false),
        (Flip, 1, 1, &[4], &[Checksum], false),
        (Flip, 2, 0, &[6], &[Checksum], false),
        (Flip, 2, 2, &[8], &[Checksum], true),
        (LenHuge, 0, 0, &[0], &[BadLength], false),
        (LenHuge, 1, 1, &[4], &[BadLength], false),
        (LenHuge, 2, 2, &[8], &[BadLength], true),
        (LenZero, 0, 0, &[0], &[BadLength], false),
        (LenZero, 1, 1, &[4], &[BadLength], false),
        (LenZero, 2, 2, &[8], &[BadLength], true),
        (LenPastEnd, 0, 0, &[0], &[BadLength], false),
        (LenPastEnd, 1, 1, &[4], &[BadLength], false),
        (LenPastEnd, 2, 2, &[8], &[Torn], true),
        (Garbage, 0, 0, &[0], &[BadLength], false),
        (Garbage, 1, 1, &[4], &[BadLength], false),
        (Garbage, 2, 2, &[8], &[BadLength], true),
        (BadTag, 0, 0, &[0], &[BadHeader], false),
        (BadTag, 1, 1, &[4], &[BadHeader], false),
        (BadTag, 2, 2, &[8], &[BadHeader], true),
        (ZeroRecord, 0, 0, &[0], &[Zeroed], false),
        (ZeroRecord, 1, 1, &[4], &[Zeroed], false),
        (ZeroRecord, 2, 2, &[8], &[Zeroed], true),
        (ZeroFrom, 0, 1, &[1, 2], &[Zeroed], false),
        (ZeroFrom, 2, 1, &[7, 8], &[Zeroed], true),
        (ZeroTail, 0, 0, &[], &[Zeroed], false),
        (ZeroTail, 1, 0, &[], &[Zeroed], false),
        (ZeroTail, 2, 0, &[], &[Zeroed], true),
        // Without an ack.pos, the oldest segment gone looks like one shipped, and the
        // newest gone like records never written. A middle one is found.
        (Missing, 0, 0, &[0, 1, 2], &[], false),
        (Missing, 1, 0, &[3, 4, 5], &[MissingSegment], false),
        (Missing, 2, 0, &[6, 7, 8], &[], false),
        (Empty, 0, 0, &[0, 1, 2], &[], false),
        (Empty, 1, 0, &[3, 4, 5], &[MissingSegment], false),
        (Empty, 2, 0, &[6, 7, 8], &[], false),
    ];
    for &(hit, seg, rec, lost, kinds, cut) in cases {
        let case = format!("{hit:?} at segment {seg} record {rec}");
        let dir = tempfile::tempdir().unwrap();
        let paths = write_segments(dir.path());
        damage(&paths[seg], rec, hit);
        let size_before = fs::metadata(&paths[seg]).map(|m| m.len()).ok();

        let (b, got, recovery, reg, lines) = open_and_read(dir.path());
        let want: Vec<u32> = (0..9).filter(|i| !lost.contains(i)).collect();
        assert_eq!(got, want, "{case}: records read");
        assert_eq!(recovery.damaged, kinds.len() as u64, "{case}");
        for kind in scan::DamageKind::ALL {
            let n = kinds.iter().filter(|k| **k == kind).count() as f64;
            assert_eq!(kind_count(&reg, kind.as_str()), n, "{case}: {kind:?}");
        }
        assert_eq!(
            metric(&reg, "lookout_agent_buffer_corrupt_records_total"),
            kinds.len() as f64,
            "{case}: counted once, not again by the reader"
        );
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
        let size_after = fs::metadata(&paths[seg]).map(|m| m.len()).ok();
        assert_eq!(
            size_after < size_before,
            cut,
            "{case}: cut ({size_before:?} -> {size_after:?})"
        );
        b.append(entry(100, PAYLOAD)).await.unwrap();
        b.close();

        let (b, again, recovery, _, _) = open_and_read(dir.path());
        let mut want = want;
        want.push(100);
        assert_eq!(again, want, "{case}: second open");
        let left = if cut { 0 } else { kinds.len() as u64 };
        assert_eq!(recovery.damaged, left, "{case}: damage left");
        b.close();
    }
}

/// Segments between the persisted ack position and the first one left were never
/// acknowledged: their absence is damage.
#[tokio::test]
async fn unacknowledged_segments_missing_at_the_front_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_segments(dir.path());
    write_ack(
        dir.path(),
        Pos {
            seg: 1,
            offset: (3 * REC) as u64,
        },
    )
    .unwrap();
    fs::remove_file(&paths[1]).unwrap();
    let (b, got, recovery, reg, lines) = open_and_read(dir.path());
    assert_eq!(got, [6, 7, 8]);
    assert_eq!(recovery.damaged, 1);
    assert_eq!(kind_count(&reg, "missing_segment"), 1.0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(!paths[0].exists(), "the acknowledged segment is deleted");
    b.close();
}

/// A large zero-filled stretch followed by random bytes is skipped in about one read
/// of it, and the record after it is found.
#[test]
fn resync_over_a_large_damaged_stretch_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(scan::segment_name(1));
    let mut out = Vec::new();
    let e = entry(0, PAYLOAD);
    format::encode(&mut out, 1, 7, e.signal, e.items, &e.positions, &e.payload);
    out.extend(std::iter::repeat_n(0u8, 8 << 20));
    let mut x = 0x1234_5678u32;
    out.extend((0..(8 << 20)).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let e = entry(1, PAYLOAD);
    format::encode(&mut out, 2, 7, e.signal, e.items, &e.positions, &e.payload);
    fs::write(&path, &out).unwrap();
    let t = Instant::now();
    let s = scan::scan_segment(1, &path, Pos::default()).unwrap();
    assert_eq!(s.records, 2);
    assert_eq!(s.damage.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

/// Damage that appears after start-up (bit rot under a running agent) is found by the
/// reader, counted and logged once, and skipped.
#[tokio::test]
async fn damage_appearing_while_running_is_skipped_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_segments(dir.path());
    let (b, _, reg) = open(dir.path(), opts(1 << 20, 3 * REC as u64, WhenFull::Block));
    damage(&paths[1], 1, Hit::Flip);
    let got: Vec<u32> = read_all(&mut b.reader()).iter().map(|g| g.0).collect();
    assert_eq!(got, [0, 1, 2, 3, 5, 6, 7, 8]);
    assert_eq!(kind_count(&reg, "checksum"), 1.0);
    // A second reader steps over it without counting it again.
    let got: Vec<u32> = read_all(&mut b.reader()).iter().map(|g| g.0).collect();
    assert_eq!(got, [0, 1, 2, 3, 5, 6, 7, 8]);
    assert_eq!(
        metric(&reg, "lookout_agent_buffer_corrupt_records_total"),
        1.0
    );
    b.close();
}

#[tokio::test]
async fn delivered_stretches_hold_only_against_the_ack_they_were_written_with() {
    let dir = tempfile::tempdir().unwrap();
    let o = || opts(1 << 20, 64 << 10, WhenFull::Block);
    let ranges;
    {
        let (b, _, _) = open(dir.path(), o());
        for i in 0..10 {
            b.append(entry(i, 100)).await.unwrap();
        }
        let got = read_all(&mut b.reader());
        // Records 0-1 acknowledged; 4-5 and 7 delivered out of order behind 2-3.
        b.ack(got[1].1);
        b.flush_ack().unwrap();
        ranges = vec![
            Delivered {
                start: got[3].1,
                end: got[5].1,
                items: 4,
            },
            Delivered {
                start: got[6].1,
                end: got[7].1,
                items: 2,
            },
        ];
        b.write_delivered(&ranges).unwrap();
        assert!(ranges[0].holds(got[4].1) && ranges[0].holds(got[5].1));
        assert!(!ranges[0].holds(got[3].1) && !ranges[0].holds(got[6].1));
    }
    let path = dir.path().join(DELIVERED_FILE);
    let (b, _, _) = open(dir.path(), o());
    assert_eq!(b.read_delivered(), ranges, "same ack: the stretches hold");

    // Once the ack moves on, the file is stale: ignored and removed.
    let got = read_all(&mut b.reader());
    b.ack(got[0].1);
    b.flush_ack().unwrap();
    drop(b);
    let (b, _, _) = open(dir.path(), o());
    assert_eq!(b.read_delivered(), vec![]);
    assert!(!path.exists());

    // A damaged file is ignored (the records are shipped again, never skipped wrongly).
    b.write_delivered(&ranges[..1]).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(b.read_delivered(), vec![]);
    assert!(!path.exists());

    // Nothing delivered out of order: no file.
    b.write_delivered(&ranges[..1]).unwrap();
    assert!(path.exists());
    b.write_delivered(&[]).unwrap();
    assert!(!path.exists());
}

#[test]
fn delivered_file_decoding_refuses_every_malformed_shape() {
    let ack = Pos { seg: 3, offset: 40 };
    let r = Delivered {
        start: Pos { seg: 3, offset: 50 },
        end: Pos { seg: 4, offset: 0 },
        items: 9,
    };
    let good = encode_delivered(ack, &[r]);
    assert_eq!(decode_delivered(&good), Some((ack, vec![r])));
    for n in 0..good.len() {
        assert_eq!(decode_delivered(&good[..n]), None, "truncated at {n}");
    }
    // A count that does not match the ranges, with a valid checksum.
    let mut body = good[..good.len() - 4].to_vec();
    body[16] = 2;
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(decode_delivered(&body), None);
}
