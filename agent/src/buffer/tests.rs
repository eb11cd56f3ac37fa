#![allow(clippy::unwrap_used, clippy::panic)]

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
