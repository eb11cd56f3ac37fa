//! Write-ahead log: a success response means the batch is in here, fsync'd.
//!
//! Records are appended by one writer thread that batches concurrent appends into one
//! write and one `fdatasync` (group commit), then hands the records to the stores in log
//! order. Each store remembers, in its own durable commit, the highest log sequence number
//! (LSN) of its signal that it has made durable; a segment is deleted once every store has
//! committed every record of its signal in it. At start-up the records past each store's
//! checkpoint are replayed.
//!
//! Record layout, little-endian:
//! `len: u32 | crc32: u32 | lsn: u64 | tag: u8 | payload: [u8; len]`, where the CRC covers
//! `lsn | tag | payload`. A record that runs past the end of the last segment or fails its
//! checksum is a torn write from a crash: it is logged, the segment is truncated there, and
//! start-up goes on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::batch::Batch;
use crate::metrics::Metrics;
use crate::signal::Signal;

const HEADER_LEN: usize = 17;
/// A record larger than this is corruption, not data.
const MAX_RECORD_LEN: u32 = 1 << 30;
/// Most bytes written in one group commit.
const MAX_GROUP_BYTES: usize = 16 << 20;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error on a WAL file.
    #[error("write-ahead log i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The writer thread is gone (shutting down).
    #[error("write-ahead log is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Per-signal durable checkpoints: the highest LSN of each signal that its store has made
/// durable on its own. LSNs start at 1; 0 means nothing.
#[derive(Debug, Default)]
pub struct Checkpoints([AtomicU64; 3]);

impl Checkpoints {
    /// The checkpoint of `signal`.
    pub fn get(&self, signal: Signal) -> u64 {
        self.0[signal.index()].load(Ordering::Acquire)
    }
    /// Raise the checkpoint of `signal` to `lsn` (never lowers it).
    pub fn advance(&self, signal: Signal, lsn: u64) {
        self.0[signal.index()].fetch_max(lsn, Ordering::AcqRel);
    }
}

/// A record handed to the stores, in LSN order.
pub struct Record {
    /// Log sequence number.
    pub lsn: u64,
    /// Signal of the payload.
    pub signal: Signal,
    /// Protobuf export request; empty when `batch` is given.
    pub payload: Bytes,
    /// The decoded request, when the writer had it (not during replay).
    pub batch: Option<Batch>,
    /// Bytes of ingest budget to release once the record is applied.
    pub charge: u64,
}

/// Receives records in LSN order, once durable (or while replaying).
pub type Dispatch = Box<dyn FnMut(Record) + Send>;

struct Append {
    signal: Signal,
    payload: Bytes,
    batch: Option<Batch>,
    charge: u64,
    done: oneshot::Sender<Result<u64, Arc<WalError>>>,
}

/// Options of the WAL.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment past this size.
    pub segment_size: u64,
    /// `fdatasync` before acknowledging.
    pub fsync: bool,
}

/// Handle to the write-ahead log. Cloning shares the writer.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Append>,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
    /// Highest LSN of each signal in this segment.
    max_lsn: [u64; 3],
}

impl Wal {
    /// Open the WAL in `dir`, replay every record past `checkpoints` into `dispatch`, and
    /// start the writer thread. Returns once replay is complete.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        checkpoints: Arc<Checkpoints>,
        metrics: Arc<Metrics>,
        mut dispatch: Dispatch,
    ) -> Result<(Wal, std::thread::JoinHandle<()>), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = list_segments(dir)?;
        let mut next_lsn = 1u64;
        let last_index = segments.len().checked_sub(1);
        let started = Instant::now();
        let mut replayed = 0u64;
        for (i, seg) in segments.iter_mut().enumerate() {
            let data = fs::read(&seg.path).map_err(io_err(&seg.path))?;
            let mut pos = 0usize;
            while pos < data.len() {
                match parse_record(&data[pos..]) {
                    Ok((lsn, tag, payload, used)) => {
                        let Some(signal) = Signal::from_tag(tag) else {
                            tracing::error!(segment = %seg.path.display(), offset = pos, tag, "unknown record tag; skipping the rest of the segment");
                            metrics.wal_corrupt_records.inc();
                            break;
                        };
                        seg.max_lsn[signal.index()] = seg.max_lsn[signal.index()].max(lsn);
                        next_lsn = next_lsn.max(lsn + 1);
                        if lsn > checkpoints.get(signal) {
                            dispatch(Record {
                                lsn,
                                signal,
                                payload: Bytes::copy_from_slice(payload),
                                batch: None,
                                charge: 0,
                            });
                            replayed += 1;
                            metrics.wal_replayed_records.inc();
                        }
                        pos += used;
                    }
                    Err(reason) => {
                        metrics.wal_corrupt_records.inc();
                        if Some(i) == last_index {
                            tracing::warn!(segment = %seg.path.display(), offset = pos, reason, "torn record at the end of the write-ahead log (crash during write); truncating it");
                            let f = OpenOptions::new()
                                .write(true)
                                .open(&seg.path)
                                .map_err(io_err(&seg.path))?;
                            f.set_len(pos as u64).map_err(io_err(&seg.path))?;
                            f.sync_all().map_err(io_err(&seg.path))?;
                        } else {
                            tracing::error!(segment = %seg.path.display(), offset = pos, reason, "corrupt record inside the write-ahead log; the rest of this segment is lost");
                        }
                        break;
                    }
                }
            }
            seg.len = pos as u64;
        }
        if replayed > 0 || !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
        }
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let current = create_segment(dir, next_seq)?;
        let (tx, rx) = mpsc::channel::<Append>();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            opts,
            segments,
            current,
            next_lsn,
            checkpoints,
            metrics,
            dispatch,
            last_truncate: Instant::now(),
        };
        writer.update_gauges();
        let handle = std::thread::Builder::new()
            .name("lookout-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((Wal { tx }, handle))
    }

    /// Append one batch; resolves with its LSN once durable. `payload` is the protobuf
    /// export request of `signal`; `batch`, if given, is the same request decoded, handed
    /// to the stores so they need not decode it again; `charge` travels with the record.
    pub async fn append(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: Option<Batch>,
        charge: u64,
    ) -> Result<u64, Arc<WalError>> {
        self.submit(signal, payload, batch, charge)?.await
    }

    /// Queue one batch for the writer now (synchronously), and return a future of its LSN.
    /// Once this returns `Ok`, the record reaches the stores even if the future is dropped.
    pub fn submit(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: Option<Batch>,
        charge: u64,
    ) -> Result<impl std::future::Future<Output = Result<u64, Arc<WalError>>>, Arc<WalError>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Append {
                signal,
                payload,
                batch,
                charge,
                done,
            })
            .map_err(|_| Arc::new(WalError::Closed))?;
        Ok(async move { rx.await.map_err(|_| Arc::new(WalError::Closed))? })
    }
}

struct Writer {
    dir: PathBuf,
    opts: WalOptions,
    /// Closed segments, oldest first.
    segments: Vec<Segment>,
    current: (Segment, File),
    next_lsn: u64,
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<Metrics>,
    dispatch: Dispatch,
    last_truncate: Instant,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Append>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut group: Vec<Append> = Vec::new();
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(a) => a,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maybe_truncate(false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut bytes = first.payload.len();
            group.push(first);
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.payload.len();
                        group.push(a);
                    }
                    Err(_) => break,
                }
            }
            buf.clear();
            let first_lsn = self.next_lsn;
            for (i, a) in group.iter().enumerate() {
                encode_record(&mut buf, first_lsn + i as u64, a.signal.tag(), &a.payload);
            }
            match self.write_group(&buf) {
                Ok(()) => {
                    self.next_lsn += group.len() as u64;
                    self.metrics.wal_records.inc_by(group.len() as u64);
                    for (i, a) in group.drain(..).enumerate() {
                        let lsn = first_lsn + i as u64;
                        let idx = a.signal.index();
                        self.current.0.max_lsn[idx] = self.current.0.max_lsn[idx].max(lsn);
                        let payload = if a.batch.is_some() {
                            Bytes::new()
                        } else {
                            a.payload
                        };
                        (self.dispatch)(Record {
                            lsn,
                            signal: a.signal,
                            payload,
                            batch: a.batch,
                            charge: a.charge,
                        });
                        let _ = a.done.send(Ok(lsn));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log append failed; refusing the batch");
                    let e = Arc::new(e);
                    for a in group.drain(..) {
                        let _ = a.done.send(Err(e.clone()));
                    }
                    // The file may hold a partial write; continue in a fresh segment.
                    if let Err(e) = self.rotate() {
                        tracing::error!(error = %e, "cannot start a new write-ahead log segment");
                    }
                }
            }
            if self.current.0.len >= self.opts.segment_size {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot start a new write-ahead log segment");
                }
            }
            self.maybe_truncate(false);
        }
        if let Err(e) = self.current.1.sync_all() {
            tracing::error!(error = %e, "write-ahead log final sync failed");
        }
        tracing::debug!("write-ahead log writer stopped");
    }

    fn write_group(&mut self, buf: &[u8]) -> Result<(), WalError> {
        let path = self.current.0.path.clone();
        self.current.1.write_all(buf).map_err(io_err(&path))?;
        if self.opts.fsync {
            let t = Instant::now();
            self.current.1.sync_data().map_err(io_err(&path))?;
            self.metrics
                .wal_fsync_seconds
                .observe(t.elapsed().as_secs_f64());
        }
        self.current.0.len += buf.len() as u64;
        self.metrics.wal_commits.inc();
        self.metrics.wal_bytes.add(buf.len() as i64);
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let seq = self.current.0.seq + 1;
        let next = create_segment(&self.dir, seq)?;
        let old = std::mem::replace(&mut self.current, next);
        old.1.sync_all().map_err(io_err(&old.0.path))?;
        self.segments.push(old.0);
        self.update_gauges();
        self.maybe_truncate(true);
        Ok(())
    }

    /// Delete closed segments whose every record is durable in its store.
    fn maybe_truncate(&mut self, force: bool) {
        if !force && self.last_truncate.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_truncate = Instant::now();
        let cps = Signal::ALL.map(|s| self.checkpoints.get(s));
        let before = self.segments.len();
        self.segments.retain(|seg| {
            let durable = Signal::ALL
                .iter()
                .all(|s| seg.max_lsn[s.index()] <= cps[s.index()]);
            if durable {
                if let Err(e) = fs::remove_file(&seg.path) {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "cannot remove write-ahead log segment");
                    return true;
                }
                tracing::debug!(segment = %seg.path.display(), "removed durable write-ahead log segment");
            }
            !durable
        });
        if self.segments.len() != before {
            self.update_gauges();
        }
    }

    fn update_gauges(&self) {
        let bytes: u64 = self.segments.iter().map(|s| s.len).sum::<u64>() + self.current.0.len;
        self.metrics
            .wal_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .wal_segments
            .set(self.segments.len() as i64 + 1);
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn create_segment(dir: &Path, seq: u64) -> Result<(Segment, File), WalError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // Make the new file's directory entry durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok((
        Segment {
            seq,
            path,
            len: 0,
            max_lsn: [0; 3],
        },
        file,
    ))
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            seq,
            path: entry.path(),
            len: 0,
            max_lsn: [0; 3],
        });
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

fn encode_record(buf: &mut Vec<u8>, lsn: u64, tag: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(&[tag]);
    h.update(payload);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&h.finalize().to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.push(tag);
    buf.extend_from_slice(payload);
}

/// Parse one record at the start of `data`: `(lsn, tag, payload, bytes used)`.
fn parse_record(data: &[u8]) -> Result<(u64, u8, &[u8], usize), &'static str> {
    if data.len() < HEADER_LEN {
        return Err("incomplete header");
    }
    let word = |r: std::ops::Range<usize>| -> [u8; 4] {
        let mut w = [0u8; 4];
        w.copy_from_slice(&data[r]);
        w
    };
    let len = u32::from_le_bytes(word(0..4));
    let crc = u32::from_le_bytes(word(4..8));
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&data[8..16]);
    let lsn = u64::from_le_bytes(lsn_bytes);
    let tag = data[16];
    if len > MAX_RECORD_LEN {
        return Err("record length out of range");
    }
    let end = HEADER_LEN + len as usize;
    if data.len() < end {
        return Err("incomplete payload");
    }
    let payload = &data[HEADER_LEN..end];
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn_bytes);
    h.update(&[tag]);
    h.update(payload);
    if h.finalize() != crc {
        return Err("checksum mismatch");
    }
    Ok((lsn, tag, payload, end))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    type Seen = Arc<Mutex<Vec<(u64, Signal, Vec<u8>)>>>;

    fn open(dir: &Path, cps: Arc<Checkpoints>) -> (Wal, std::thread::JoinHandle<()>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let (wal, h) = Wal::open(
            dir,
            WalOptions {
                segment_size: 1 << 20,
                fsync: true,
            },
            cps,
            Arc::new(Metrics::new().unwrap()),
            Box::new(move |r: Record| {
                s.lock()
                    .unwrap()
                    .push((r.lsn, r.signal, r.payload.to_vec()))
            }),
        )
        .unwrap();
        (wal, h, seen)
    }

    #[tokio::test]
    async fn appends_are_replayed_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Arc::new(Checkpoints::default());
        let (wal, h, seen) = open(dir.path(), cps.clone());
        for i in 0..100u32 {
            let lsn = wal
                .append(Signal::Logs, Bytes::from(i.to_le_bytes().to_vec()), None, 0)
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
            wal.append(Signal::Traces, Bytes::from(vec![1]), None, 0)
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
            wal.append(Signal::Traces, Bytes::from(vec![7; 100]), None, 0)
                .await
                .unwrap();
        }
        drop(wal);
        h.join().unwrap();
        // Simulate a crash in the middle of the last record.
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&seg.path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg.path).unwrap();
        f.set_len(len - 30).unwrap();
        let (wal, h, seen) = open(dir.path(), cps.clone());
        assert_eq!(seen.lock().unwrap().len(), 2);
        assert_eq!(
            wal.append(Signal::Traces, Bytes::from(vec![1]), None, 0)
                .await
                .unwrap(),
            3
        );
        drop(wal);
        h.join().unwrap();
        // Flipped bit: checksum mismatch on the last record of the newest segment.
        let seg = list_segments(dir.path()).unwrap().pop().unwrap();
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

    #[tokio::test]
    async fn durable_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Arc::new(Checkpoints::default());
        let (wal, h, _) = open(dir.path(), cps.clone());
        // 3 MiB across 1 MiB segments.
        let mut last = 0;
        for _ in 0..48 {
            last = wal
                .append(Signal::Logs, Bytes::from(vec![0; 64 << 10]), None, 0)
                .await
                .unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() >= 3);
        cps.advance(Signal::Logs, last);
        // A rotation triggers truncation.
        for _ in 0..17 {
            wal.append(Signal::Metrics, Bytes::from(vec![0; 64 << 10]), None, 0)
                .await
                .unwrap();
        }
        cps.advance(Signal::Metrics, u64::MAX);
        wal.append(Signal::Metrics, Bytes::from(vec![0; 1 << 20]), None, 0)
            .await
            .unwrap();
        // The writer rotates after answering; the next append is served after that.
        wal.append(Signal::Metrics, Bytes::from(vec![0]), None, 0)
            .await
            .unwrap();
        let left = list_segments(dir.path()).unwrap().len();
        assert!(left <= 2, "{left} segments left");
        drop(wal);
        h.join().unwrap();
    }
}
