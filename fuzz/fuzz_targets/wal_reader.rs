//! The collector's write-ahead log start-up: segment listing, record parsing, checksum
//! checks, torn-tail truncation and replay (`wal::Wal::open`), on arbitrary segment files.
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
use lookout_ingest::batch::Batch;
use lookout_collector::metrics::Metrics;
use lookout_ingest::signal::Signal;
use lookout_collector::wal::{Checkpoints, Record, Wal, WalError, WalOptions};
use lookout_fuzz::{runtime, Input};

fn metrics() -> Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Metrics::new().expect("metrics")))
        .clone()
}

/// Where the temporary WAL directories go: tmpfs when there is one.
fn temp_root() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        Path::new("/tmp")
    }
}

/// One record as the WAL writes it: `len | crc32 | lsn | tag | payload`.
fn encode_record(out: &mut Vec<u8>, lsn: u64, tag: u8, payload: &[u8], break_crc: bool) {
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(&[tag]);
    h.update(payload);
    let crc = h.finalize() ^ u32::from(break_crc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(tag);
    out.extend_from_slice(payload);
}

fn segments(mut input: Input<'_>, sel: u8) -> Vec<Vec<u8>> {
    if sel & 1 == 0 {
        let n = 1 + usize::from(sel >> 1) % 3;
        let mut segs = Vec::new();
        for _ in 1..n {
            let len = usize::from(input.u16());
            segs.push(input.take(len).to_vec());
        }
        segs.push(input.rest().to_vec());
        return segs;
    }
    let mut segs = vec![Vec::new()];
    let mut lsn = 0u64;
    while !input.is_empty() {
        let ctl = input.byte();
        lsn = if ctl & 0x10 != 0 {
            input.u64()
        } else {
            lsn.wrapping_add(1)
        };
        let tag = match ctl & 3 {
            0 => input.byte(),
            t => t,
        };
        let len = usize::from(input.u16());
        let payload = input.take(len);
        if ctl & 8 != 0 && segs.len() < 4 {
            segs.push(Vec::new());
        }
        let seg = segs.last_mut().expect("a segment");
        if payload.len() < len {
            // Not enough input for the whole record: a torn tail.
            let mut rec = Vec::new();
            encode_record(&mut rec, lsn, tag, payload, false);
            seg.extend_from_slice(&rec[..rec.len() - 1]);
            break;
        }
        encode_record(seg, lsn, tag, payload, ctl & 4 != 0);
    }
    segs
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
    let segs = segments(input, sel);

    // The WAL in a subdirectory, so whatever the WAL puts beside it (a quarantine of
    // damaged records) stays inside this run's temporary directory.
    let root = tempfile::Builder::new()
        .prefix("lookout-fuzz-wal")
        .tempdir_in(temp_root())
        .expect("temp dir");
    let dir = root.path().join("wal");
    std::fs::create_dir(&dir).expect("mkdir");
    for (i, seg) in segs.iter().enumerate() {
        let path = dir.join(format!("{:020}.wal", i + 1));
        std::fs::write(path, seg).expect("write segment");
    }

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
        0,
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
