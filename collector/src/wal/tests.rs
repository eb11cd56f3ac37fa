#![allow(clippy::unwrap_used)]
use std::fs::{self, OpenOptions};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use lookout_ingest::seglog::testkit::{self, Logs, Opened, Subject};
use prometheus::Registry;

use super::writer::encode_record;
use super::*;

type Seen = Arc<Mutex<Vec<(u64, Signal, Vec<u8>)>>>;

fn wal_metrics() -> WalMetrics {
    WalMetrics::register(&Registry::new()).unwrap()
}

fn open(dir: &Path, cps: Arc<Checkpoints>) -> (Wal, std::thread::JoinHandle<()>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let (wal, h) = Wal::open(
        dir,
        WalOptions {
            segment_size: 1 << 20,
            fsync: true,
            reserve: 0,
        },
        cps,
        wal_metrics(),
        Box::new(move |r: Record| {
            s.lock()
                .unwrap()
                .push((r.lsn, r.signal, r.payload.to_vec()))
        }),
    )
    .unwrap();
    (wal, h, seen)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(seglog::segment_name(&FRAMING, seq))
}

fn list_segments(dir: &Path) -> Vec<seglog::SegmentFile> {
    seglog::list_segments(&FRAMING, dir).unwrap()
}

/// Found by the `wal_reader` fuzz target (W1): an emptied log restarted numbering at 1,
/// below the checkpoints, so the next crash skipped and trimmed those records.
#[tokio::test]
async fn an_emptied_log_numbers_on_past_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cps = Arc::new(Checkpoints::default());
    cps.advance(Signal::Logs, 5);
    let (wal, h, _) = open(dir.path(), cps.clone());
    let lsn = wal
        .append(Signal::Traces, Bytes::from(vec![9]), None, None)
        .await
        .unwrap();
    assert_eq!(lsn, 6);
    drop(wal);
    h.join().unwrap();
    // The record is past every checkpoint, so a restart replays it.
    let (_wal, _h, seen) = open(dir.path(), cps);
    let replayed = seen.lock().unwrap().clone();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].0, 6);
}

#[tokio::test]
async fn appends_are_replayed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cps = Arc::new(Checkpoints::default());
    let (wal, h, seen) = open(dir.path(), cps.clone());
    for i in 0..100u32 {
        let lsn = wal
            .append(
                Signal::Logs,
                Bytes::from(i.to_le_bytes().to_vec()),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(lsn, u64::from(i) + 1);
    }
    assert_eq!(seen.lock().unwrap().len(), 100);
    drop(wal);
    h.join().unwrap();
    cps.advance(Signal::Logs, 40);
    let (wal, h, seen) = open(dir.path(), cps);
    let replayed = seen.lock().unwrap().clone();
    assert_eq!(replayed.len(), 60);
    assert_eq!(replayed[0].0, 41);
    assert_eq!(replayed[0].2, 40u32.to_le_bytes().to_vec());
    assert_eq!(
        wal.append(Signal::Traces, Bytes::from(vec![1]), None, None)
            .await
            .unwrap(),
        101
    );
    drop(wal);
    h.join().unwrap();
}

#[tokio::test]
async fn torn_tail_is_truncated_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let cps = Arc::new(Checkpoints::default());
    let (wal, h, _) = open(dir.path(), cps.clone());
    for _ in 0..3 {
        wal.append(Signal::Traces, Bytes::from(vec![7; 100]), None, None)
            .await
            .unwrap();
    }
    drop(wal);
    h.join().unwrap();
    // Simulate a crash in the middle of the last record.
    let seg = list_segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg.path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg.path).unwrap();
    f.set_len(len - 30).unwrap();
    let (wal, h, seen) = open(dir.path(), cps.clone());
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        wal.append(Signal::Traces, Bytes::from(vec![1]), None, None)
            .await
            .unwrap(),
        3
    );
    drop(wal);
    h.join().unwrap();
    // Flipped bit: checksum mismatch on the last record of the newest segment.
    let seg = list_segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg.path).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&seg.path, data).unwrap();
    let (_wal, _h, seen) = open(dir.path(), cps);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "the corrupt record is skipped"
    );
}

fn metric_count(registry: &Registry, name: &str, label: Option<&str>) -> u64 {
    testkit::counter(registry, name, label)
}

/// Open the WAL in `dir` with fresh metrics (no checkpoints), checking that each record's
/// payload is [`testkit::payload`] of its LSN: the WAL, its writer thread, the LSNs
/// replayed, the registry, and the warning/error lines logged during replay.
fn replay(
    dir: &Path,
) -> (
    Wal,
    std::thread::JoinHandle<()>,
    Vec<u64>,
    Registry,
    Vec<String>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let registry = Registry::new();
    let metrics = WalMetrics::register(&registry).unwrap();
    let logs = Logs::default();
    let (wal, h) = logs.capture(|| {
        Wal::open(
            dir,
            WalOptions {
                segment_size: 1 << 20,
                fsync: false,
                reserve: 0,
            },
            Arc::new(Checkpoints::default()),
            metrics,
            Box::new(move |r: Record| {
                assert_eq!(r.payload[..], testkit::payload(r.lsn), "lsn {}", r.lsn);
                s.lock().unwrap().push(r.lsn)
            }),
        )
        .unwrap()
    });
    let got = seen.lock().unwrap().clone();
    (wal, h, got, registry, logs.lines())
}

/// The write-ahead log under the shared corruption tests of the segment log: replayed
/// through [`Wal::open`] with fresh metrics, each record's payload checked against its
/// LSN, damage read from `lookout_wal_corruptions_total{kind}` and
/// `lookout_wal_corrupt_records_total`, and nothing quarantined.
struct WalSubject;

impl Subject for WalSubject {
    type Log = (Wal, std::thread::JoinHandle<()>);
    fn framing(&self) -> &'static seglog::Framing {
        &FRAMING
    }
    fn encode(&self, out: &mut Vec<u8>, seq: u64) {
        encode_record(out, seq, Signal::Logs.tag(), &testkit::payload(seq));
    }
    fn payload_at(&self) -> usize {
        seglog::framings::WAL_HEADER_LEN
    }
    fn tag_at(&self) -> usize {
        seglog::FRAME_LEN + 8
    }
    fn open(&self, dir: &Path) -> (Self::Log, Opened) {
        let (wal, h, seqs, registry, lines) = replay(dir);
        assert_eq!(
            metric_count(&registry, "lookout_wal_quarantined_records_total", None),
            0
        );
        let opened = Opened {
            seqs,
            kinds: testkit::kind_counts(&registry, "lookout_wal_corruptions_total"),
            stretches: vec![(
                "lookout_wal_corrupt_records_total",
                metric_count(&registry, "lookout_wal_corrupt_records_total", None),
            )],
            lines: Some(lines),
        };
        ((wal, h), opened)
    }
    fn append_and_close(&self, (wal, h): Self::Log, seq: u64) {
        let lsn = futures::executor::block_on(wal.append(
            Signal::Logs,
            Bytes::from(testkit::payload(seq)),
            None,
            None,
        ))
        .unwrap();
        assert_eq!(lsn, seq, "the log goes on from the highest LSN found");
        drop(wal);
        h.join().unwrap();
    }
}

/// The shared corruption matrix, several stretches in one segment, and a large damaged
/// stretch, through start-up replay: never fatal, every record but the damaged ones
/// replayed, each stretch counted by kind and logged on one line, a damaged end of the
/// log truncated, and the WAL appending and reopening cleanly.
#[test]
fn corruption_tests() {
    testkit::run_all(&WalSubject);
}

/// The WAL's metrics have exactly five damage kinds, all exposed from the start.
#[test]
fn corruption_kinds_are_the_five_of_the_wal() {
    let registry = Registry::new();
    let _metrics = WalMetrics::register(&registry).unwrap();
    let family = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "lookout_wal_corruptions_total")
        .unwrap();
    let mut kinds: Vec<String> = family
        .get_metric()
        .iter()
        .flat_map(|m| m.get_label().iter().map(|l| l.value().to_owned()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "bad_length",
            "checksum",
            "missing_segment",
            "torn",
            "zeroed"
        ]
    );
}

/// A record with a valid checksum and an unknown tag is poison: quarantined under its
/// position, counted, and the records after it (same segment) are replayed.
#[test]
fn unknown_tag_is_quarantined_and_replay_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    fs::create_dir(&dir).unwrap();
    let mut buf = Vec::new();
    encode_record(&mut buf, 1, Signal::Logs.tag(), &testkit::payload(1));
    encode_record(&mut buf, 2, 0x7f, &testkit::payload(2));
    encode_record(&mut buf, 3, Signal::Logs.tag(), &testkit::payload(3));
    fs::write(segment_path(&dir, 1), &buf).unwrap();
    let (_wal, _h, got, registry, lines) = replay(&dir);
    assert_eq!(got, [1, 3]);
    assert_eq!(
        metric_count(&registry, "lookout_wal_quarantined_records_total", None),
        1
    );
    assert_eq!(
        metric_count(&registry, "lookout_wal_corrupt_records_total", None),
        0
    );
    let q = root.path().join(QUARANTINE_DIR);
    let record_len = seglog::framings::WAL_HEADER_LEN + testkit::PAYLOAD;
    let file = q.join(Quarantine::file_name(
        WalPos {
            segment: 1,
            offset: record_len as u64,
        },
        2,
        "tag127",
    ));
    assert_eq!(fs::read(&file).unwrap(), testkit::payload(2), "{file:?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("quarantine"), "{}", lines[0]);
}

/// Stores call [`Quarantine::set_aside`] on records they cannot use: with the payload at
/// hand (replay), with only the decoded batch, and with neither (read back from the
/// segment).
#[tokio::test]
async fn records_quarantine_their_bytes_from_wherever_they_are() {
    let root = tempfile::tempdir().unwrap();
    let wal_dir = root.path().join("wal");
    let q = root.path().join("q");
    let batch = Batch::Logs(Default::default());
    let registry = Registry::new();
    let metrics = WalMetrics::register(&registry).unwrap();
    let files = Arc::new(Mutex::new(Vec::new()));
    let f = files.clone();
    let quarantine = Arc::new(Quarantine::new(q.clone(), wal_dir.clone(), metrics.clone()));
    let set_aside = quarantine.clone();
    let (wal, h) = Wal::open_with_quarantine(
        &wal_dir,
        &quarantine,
        WalOptions {
            segment_size: 1 << 20,
            fsync: false,
            reserve: 0,
        },
        Arc::new(Checkpoints::default()),
        metrics,
        Box::new(move |mut r: Record| {
            if r.lsn == 2 {
                r.batch = None; // consumed by a store that then failed
            }
            f.lock().unwrap().push(set_aside.set_aside(&r, "test"));
        }),
    )
    .unwrap();
    wal.append(Signal::Logs, Bytes::from_static(b"raw"), None, None)
        .await
        .unwrap();
    wal.append(
        Signal::Logs,
        Bytes::from_static(b"\x0a\x00"),
        Some(batch.clone()),
        None,
    )
    .await
    .unwrap();
    wal.append(
        Signal::Metrics,
        Bytes::from_static(b"\x0a\x00"),
        Some(batch),
        None,
    )
    .await
    .unwrap();
    drop(wal);
    h.join().unwrap();
    let files: Vec<PathBuf> = files
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.clone().unwrap())
        .collect();
    assert_eq!(fs::read(&files[0]).unwrap(), b"raw");
    assert_eq!(
        fs::read(&files[1]).unwrap(),
        b"\x0a\x00",
        "read back from the segment"
    );
    assert_eq!(
        fs::read(&files[2]).unwrap(),
        Batch::Logs(Default::default()).encode_protobuf()
    );
    assert!(files[2].to_string_lossy().ends_with(".metrics"));
    assert_eq!(
        metric_count(&registry, "lookout_wal_quarantined_records_total", None),
        3
    );
    for p in &files {
        assert_eq!(p.parent(), Some(q.as_path()));
    }
}

#[tokio::test]
async fn durable_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cps = Arc::new(Checkpoints::default());
    let (wal, h, _) = open(dir.path(), cps.clone());
    // 3 MiB across 1 MiB segments.
    let mut last = 0;
    for _ in 0..48 {
        last = wal
            .append(Signal::Logs, Bytes::from(vec![0; 64 << 10]), None, None)
            .await
            .unwrap();
    }
    assert!(list_segments(dir.path()).len() >= 3);
    cps.advance(Signal::Logs, last);
    // A rotation triggers truncation.
    for _ in 0..17 {
        wal.append(Signal::Metrics, Bytes::from(vec![0; 64 << 10]), None, None)
            .await
            .unwrap();
    }
    cps.advance(Signal::Metrics, u64::MAX);
    wal.append(Signal::Metrics, Bytes::from(vec![0; 1 << 20]), None, None)
        .await
        .unwrap();
    // The writer rotates after answering; the next append is served after that.
    wal.append(Signal::Metrics, Bytes::from(vec![0]), None, None)
        .await
        .unwrap();
    let left = list_segments(dir.path()).len();
    assert!(left <= 2, "{left} segments left");
    drop(wal);
    h.join().unwrap();
}

/// A writer over segment 1 of `dir` with `file` as its open handle, dispatching nowhere.
fn writer_over(dir: &Path, segment: writer::Segment, file: fs::File) -> writer::WalWriter {
    writer::WalWriter {
        dir: dir.to_path_buf(),
        opts: WalOptions {
            segment_size: 1 << 20,
            fsync: true,
            reserve: 0,
        },
        segments: Vec::new(),
        current: (segment, file),
        next_lsn: 1,
        checkpoints: Arc::new(Checkpoints::default()),
        metrics: wal_metrics(),
        dispatch: Box::new(|_| {}),
        last_truncate: Instant::now(),
        torn: false,
        origins: Default::default(),
        room: room::Room::of_dir(dir, 0, wal_metrics()),
    }
}

/// Commit one record of `payload` through `w`: its LSN, or the error.
fn commit_one(w: &mut writer::WalWriter, payload: &'static [u8]) -> Result<u64, Arc<WalError>> {
    let (done, mut rx) = oneshot::channel();
    let mut group = vec![writer::Append {
        origin: None,
        signal: Signal::Logs,
        payload: Bytes::from_static(payload),
        batch: None,
        charge: None,
        done,
    }];
    w.commit(&mut group, &mut Vec::new());
    rx.try_recv().unwrap()
}

/// Issue 19: every refused batch of a full disk used to start a new segment file (4,870
/// in 90 s). A failed append now leaves the log as it was — what it may have left in the
/// file is cut off — and the next append goes to the same segment, with the LSN the
/// failed one would have had.
#[tokio::test]
async fn a_failed_append_is_cut_off_and_the_next_goes_to_the_same_segment() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (segment, file) = writer::create_segment(dir.path(), 1).unwrap();
    let path = segment.path.clone();
    drop(file);
    // A handle that cannot write (nor truncate): appends fail, as on a full disk.
    let mut w = writer_over(dir.path(), segment, fs::File::open(&path).unwrap());
    for _ in 0..3 {
        let e = commit_one(&mut w, b"refused").unwrap_err();
        assert!(matches!(*e, WalError::Io { .. }), "{e}");
    }
    assert_eq!(list_segments(dir.path()).len(), 1, "no segment per failure");
    // Part of a failed write reached the file.
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&[0xab; 7])
        .unwrap();
    // The disk has room again.
    w.current.1 = OpenOptions::new().append(true).open(&path).unwrap();
    assert_eq!(commit_one(&mut w, b"kept").unwrap(), 1);
    drop(w);
    assert_eq!(list_segments(dir.path()).len(), 1);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        (seglog::framings::WAL_HEADER_LEN + b"kept".len()) as u64,
        "the partial write is cut off"
    );
    let (_wal, _h, seen) = open(dir.path(), Arc::new(Checkpoints::default()));
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![(1, Signal::Logs, b"kept".to_vec())]
    );
}

/// A group that would leave less than `wal.reserve` free is refused without touching the
/// log, and counted; once the stores have freed space, the next takes its LSN.
#[tokio::test]
async fn a_group_that_would_eat_into_the_reserve_is_refused_and_the_log_left_as_it_was() {
    use lookout_ingest::fsutil::FsSpace;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let (segment, file) = writer::create_segment(dir.path(), 1).unwrap();
    let path = segment.path.clone();
    let mut w = writer_over(dir.path(), segment, file);
    let free = Arc::new(AtomicU64::new((8 << 20) + 10));
    let f = free.clone();
    w.room = room::Room::with_probe(
        dir.path(),
        8 << 20,
        w.metrics.clone(),
        Box::new(move || {
            Ok(FsSpace {
                available: f.load(Ordering::Relaxed),
                total: 1 << 30,
            })
        }),
    );
    let e = commit_one(&mut w, b"refused").unwrap_err();
    assert!(matches!(*e, WalError::Reserve { .. }), "{e}");
    assert_eq!(w.metrics.reserve_refusals.get(), 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    free.store(16 << 20, Ordering::Relaxed);
    std::thread::sleep(room::LOOK_AGAIN);
    assert_eq!(commit_one(&mut w, b"kept").unwrap(), 1);
    assert_eq!(list_segments(dir.path()).len(), 1);
}

/// In cluster mode the log must tell after a restart which messages of each partition it
/// holds (the records still in it), exactly; records replayed or read back are the export
/// requests alone.
#[tokio::test]
async fn consumed_messages_are_known_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cps = Arc::new(Checkpoints::default());
    let (wal, h, seen) = open(dir.path(), cps.clone());
    let at = |partition, sequence| Origin {
        partition,
        sequence,
    };
    for seq in (2..=40u64).step_by(2) {
        wal.submit_from(
            Signal::Logs,
            Bytes::from(vec![seq as u8; 1024]),
            None,
            None,
            Some(at((seq % 4 / 2) as u32, seq)),
        )
        .unwrap()
        .await
        .unwrap();
    }
    let check = |o: &Origins| {
        assert!(o.holds(at(0, 4)) && o.holds(at(1, 2)) && o.holds(at(0, 40)));
        assert!(
            !o.holds(at(0, 3)),
            "a sequence below the highest that was never written"
        );
        assert!(!o.holds(at(1, 4)) && !o.holds(at(2, 4)));
    };
    check(wal.origins());
    assert_eq!(
        seen.lock().unwrap()[0].2,
        vec![2u8; 1024],
        "dispatched without its origin"
    );
    drop(wal);
    h.join().unwrap();

    let (wal, h, seen) = open(dir.path(), cps);
    check(wal.origins());
    assert_eq!(seen.lock().unwrap().len(), 20);
    assert_eq!(
        seen.lock().unwrap()[0].2,
        vec![2u8; 1024],
        "replayed without its origin"
    );
    drop(wal);
    h.join().unwrap();
}
