#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use lookout_config::{FsyncPolicy, WhenFull};
use prometheus::Registry;

use lookout_ingest::seglog::testkit::{self, Logs, Opened, Subject};

use super::format::Record;
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

/// Sequence numbers of every record read (each with the payload of its sequence number).
fn read_seqs(reader: &mut Reader) -> Vec<u64> {
    let mut out = Vec::new();
    while let Read::Record(r, _) = reader.next(Duration::from_millis(50)).unwrap() {
        assert_eq!(r.payload[..], testkit::payload(r.seq), "seq {}", r.seq);
        out.push(r.seq);
    }
    out
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

const PAYLOAD: usize = testkit::PAYLOAD;
/// Bytes of one record of [`write_segments`].
const REC: usize = format::FRAME_LEN + format::FIXED_BODY_LEN + 16 + PAYLOAD;

/// The entry of record `seq` of the shared corruption tests: id `seq - 1`, payload
/// [`testkit::payload`].
fn seq_entry(seq: u64) -> Entry {
    Entry {
        payload: Bytes::from(testkit::payload(seq)),
        ..entry((seq - 1) as u32, PAYLOAD)
    }
}

/// Three segments of three records each: sequence numbers 1..=9.
fn write_segments(dir: &Path) -> Vec<PathBuf> {
    testkit::write_log(&BufferSubject, dir)
}

fn kind_count(reg: &Registry, kind: &str) -> f64 {
    testkit::counter(reg, "lookout_agent_buffer_corruptions_total", Some(kind)) as f64
}

/// Open the buffer in `dir` and read everything: the sequence numbers read, what recovery
/// reported, the registry, and the warning/error lines logged while opening and reading.
fn open_and_read(dir: &Path) -> (Buffer, Vec<u64>, Recovery, Registry, Vec<String>) {
    let logs = Logs::default();
    let (b, rec, reg, records) = logs.capture(|| {
        let (b, rec, reg) = open(dir, opts(1 << 20, 3 * REC as u64, WhenFull::Block));
        let seqs = read_seqs(&mut b.reader());
        (b, rec, reg, seqs)
    });
    (b, records, rec, reg, logs.lines())
}

/// The disk buffer under the shared corruption tests of the segment log: opened with
/// fresh metrics and read through [`Buffer::reader`], each record's payload checked
/// against its sequence number, damage read from
/// `lookout_agent_buffer_corruptions_total{kind}`, `..._corrupt_records_total` (counted at
/// start-up, not again by the reader) and [`Recovery::damaged`].
struct BufferSubject;

impl Subject for BufferSubject {
    type Log = Buffer;
    fn framing(&self) -> &'static seglog::Framing {
        &format::FRAMING
    }
    fn encode(&self, out: &mut Vec<u8>, seq: u64) {
        let e = seq_entry(seq);
        format::encode(out, seq, 7, e.signal, e.items, &e.positions, &e.payload);
    }
    fn payload_at(&self) -> usize {
        REC - PAYLOAD
    }
    fn tag_at(&self) -> usize {
        format::FRAME_LEN + 16
    }
    fn open(&self, dir: &Path) -> (Buffer, Opened) {
        let (b, seqs, recovery, reg, lines) = open_and_read(dir);
        let opened = Opened {
            seqs,
            kinds: testkit::kind_counts(&reg, "lookout_agent_buffer_corruptions_total"),
            stretches: vec![
                ("recovery.damaged", recovery.damaged),
                (
                    "lookout_agent_buffer_corrupt_records_total",
                    metric(&reg, "lookout_agent_buffer_corrupt_records_total") as u64,
                ),
            ],
            lines: Some(lines),
        };
        (b, opened)
    }
    fn append_and_close(&self, b: Buffer, seq: u64) {
        futures::executor::block_on(b.append(seq_entry(seq))).unwrap();
        b.close();
    }
}

/// The shared corruption matrix, several stretches in one segment, and a large damaged
/// stretch, through start-up recovery and the reader: opening never fails; every record
/// but the damaged ones is read back in order; each damaged stretch is counted once by
/// kind (at start-up, not again by the reader) and logged on one line; damaged ends are
/// truncated; and the buffer appends and reopens cleanly.
#[test]
fn corruption_tests() {
    testkit::run_all(&BufferSubject);
}

/// The buffer's metrics have all six damage kinds, exposed from the start.
#[test]
fn corruption_kinds_are_the_six_of_the_buffer() {
    let registry = Registry::new();
    let _m = BufferMetrics::new(&registry).unwrap();
    for kind in scan::DamageKind::ALL {
        assert_eq!(kind_count(&registry, kind.as_str()), 0.0);
    }
    let family = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "lookout_agent_buffer_corruptions_total")
        .unwrap();
    assert_eq!(family.get_metric().len(), 6);
}

/// A valid checksum over a body with an unknown signal tag is `bad_header` damage.
#[tokio::test]
async fn a_record_with_an_unknown_tag_is_bad_header_damage() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_segments(dir.path());
    testkit::damage(&BufferSubject, &paths[1], 1, testkit::Hit::BadTag);
    let (b, seqs, recovery, reg, _) = open_and_read(dir.path());
    assert_eq!(seqs, [1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(recovery.damaged, 1);
    assert_eq!(kind_count(&reg, "bad_header"), 1.0);
    b.close();
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
    assert_eq!(got, [7, 8, 9]);
    assert_eq!(recovery.damaged, 1);
    assert_eq!(kind_count(&reg, "missing_segment"), 1.0);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(!paths[0].exists(), "the acknowledged segment is deleted");
    b.close();
}

/// Damage that appears after start-up (bit rot under a running agent) is found by the
/// reader, counted and logged once, and skipped.
#[tokio::test]
async fn damage_appearing_while_running_is_skipped_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_segments(dir.path());
    let (b, _, reg) = open(dir.path(), opts(1 << 20, 3 * REC as u64, WhenFull::Block));
    testkit::damage(&BufferSubject, &paths[1], 1, testkit::Hit::Flip);
    let got = read_seqs(&mut b.reader());
    assert_eq!(got, [1, 2, 3, 4, 6, 7, 8, 9]);
    assert_eq!(kind_count(&reg, "checksum"), 1.0);
    // A second reader steps over it without counting it again.
    let got = read_seqs(&mut b.reader());
    assert_eq!(got, [1, 2, 3, 4, 6, 7, 8, 9]);
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
