//! The collector's write-ahead log start-up: segment listing, record parsing, checksum
//! checks, torn-tail truncation (`lookout_ingest::seglog` in the WAL framing) and replay
//! (`wal::Wal::open`), on arbitrary segment files.
//!
//! Input: a selector byte, three checkpoint bytes (per signal), then segment data.
//! - selector bit 0 clear, raw: up to `1 + (sel >> 1) % 3` segments, each but the last
//!   prefixed by a little-endian u16 length; the bytes are written as they are.
//! - selector bit 0 set, structured: records built by the harness with correct checksums
//!   (so the fuzzer gets past them), each as `ctl: u8 [lsn: u64] [tag: u8] len: u16
//!   payload`; `ctl` bits 0-1 pick the tag (0: an explicit tag byte follows), bit 2 breaks
//!   the checksum, bit 3 starts a new segment, bit 4 gives an explicit LSN (otherwise the
//!   previous one plus one). Bytes left over after the last whole record are a torn tail.
//!
//! Checks, beyond no panic: replayed records are past their signal's checkpoint; a record
//! appended after opening gets an LSN above every replayed or quarantined one and every
//! checkpoint (finding W1), or is refused with `WalError::Exhausted` when those reach `u64::MAX`
//! (W2); and opening again replays the same records plus the appended one (the first open
//! cut torn tails for good).
#![no_main]

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lookout_collector::wal::{Checkpoints, Record, Wal, WalError, WalMetrics, WalOptions, FRAMING};
use lookout_fuzz::{runtime, segments, write_logs, Encoded, Input, RecordHead};
use lookout_ingest::batch::Batch;
use lookout_ingest::signal::Signal;

fn metrics() -> WalMetrics {
    static M: OnceLock<WalMetrics> = OnceLock::new();
    M.get_or_init(|| WalMetrics::register(&prometheus::Registry::new()).expect("metrics"))
        .clone()
}

/// One record as the WAL writes it: `len | crc32 | lsn | tag | payload`.
fn encode_record(lsn: u64, tag: u8, payload: &[u8], break_crc: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let start = FRAMING.begin(&mut out);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(payload);
    FRAMING.finish(&mut out, start);
    out[4] ^= u8::from(break_crc);
    out
}

/// The structured records of this target: `len: u16 payload` after the head.
fn encode(head: RecordHead, input: &mut Input<'_>) -> Encoded {
    let len = usize::from(input.u16());
    let payload = input.take(len);
    let whole = payload.len() == len;
    Encoded {
        bytes: encode_record(head.seq, head.tag, payload, whole && head.ctl & 4 != 0),
        whole,
    }
}

/// LSNs of the records in the quarantine directory, from their file names
/// (`{segment}-{offset}-lsn{lsn}.{what}`).
fn quarantined_lsns(dir: &Path) -> impl Iterator<Item = u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (_, rest) = name.split_once("-lsn")?;
            rest.split('.').next()?.parse().ok()
        })
}

type Seen = Arc<Mutex<Vec<(u64, Signal, usize)>>>;

fn open(dir: &Path, cps: &Arc<Checkpoints>) -> (Wal, std::thread::JoinHandle<()>, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let (wal, handle) = Wal::open(
        dir,
        WalOptions {
            segment_size: 1 << 20,
            fsync: false,
            reserve: 0,
        },
        cps.clone(),
        metrics(),
        Box::new(move |r: Record| {
            // What the stores do first with a replayed record.
            if r.batch.is_none() {
                let _ = Batch::decode_protobuf(r.signal, &r.payload);
            }
            s.lock()
                .expect("lock")
                .push((r.lsn, r.signal, r.payload.len()));
        }),
    )
    .expect("open the WAL");
    (wal, handle, seen)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sel = input.byte();
    let cps = Arc::new(Checkpoints::default());
    for s in Signal::ALL {
        cps.advance(s, u64::from(input.byte() % 8));
    }
    let segs = segments(input, sel, encode);

    // The WAL in a subdirectory, so whatever the WAL puts beside it (a quarantine of
    // damaged records) stays inside this run's temporary directory.
    let root = write_logs("lookout-fuzz-wal", &FRAMING, &["wal"], &segs);
    let dir = root.path().join("wal");

    let (wal, handle, seen) = open(&dir, &cps);
    let first: Vec<(u64, Signal, usize)> = seen.lock().expect("lock").clone();
    for &(lsn, signal, _) in &first {
        assert!(lsn > cps.get(signal), "replayed a checkpointed record");
    }
    let max_seen = first.iter().map(|r| r.0).max().unwrap_or(0);
    let max_cp = Signal::ALL.iter().map(|s| cps.get(*s)).max().unwrap_or(0);
    // A quarantined record (valid checksum, unusable content) used its LSN too.
    let max_quarantined = quarantined_lsns(&root.path().join("quarantine"))
        .max()
        .unwrap_or(0);
    let floor = max_seen.max(max_cp).max(max_quarantined);
    let appended = match runtime().block_on(wal.append(
        Signal::Logs,
        Bytes::from_static(b"\x0a\x00"),
        None,
        None,
    )) {
        Ok(lsn) => {
            // W1: at or below a checkpoint, replay would skip the record.
            assert!(
                lsn > floor,
                "appended record got LSN {lsn}, not above {floor} (replayed {max_seen}, checkpoints {max_cp}, quarantined {max_quarantined})"
            );
            Some(lsn)
        }
        // W2: the LSNs are used up (only a damaged or forged log gets there): the append
        // is refused, never numbered with a used LSN or a wrapped one.
        Err(e) if matches!(*e, WalError::Exhausted(_)) && floor >= u64::MAX - 1 => None,
        Err(e) => panic!(
            "append failed: {e} (replayed up to {max_seen}, checkpoints {max_cp}, quarantined {max_quarantined})"
        ),
    };
    drop(wal);
    handle.join().expect("WAL writer thread");

    let (wal, handle, seen) = open(&dir, &cps);
    let second: Vec<(u64, Signal, usize)> = seen.lock().expect("lock").clone();
    drop(wal);
    handle.join().expect("WAL writer thread");
    let mut expected = first;
    if let Some(lsn) = appended {
        expected.push((lsn, Signal::Logs, 2));
    }
    assert_eq!(second, expected, "a second start-up replays something else");
});
