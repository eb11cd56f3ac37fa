//! Write-ahead log: a success response means the batch is in here, fsync'd.
//!
//! Records are appended by one writer thread that batches concurrent appends into one
//! write and one `fdatasync` (group commit), then hands the records to the stores in log
//! order. Each store remembers, in its own durable commit, the highest log sequence number
//! (LSN) of its signal that it has made durable; segments are deleted oldest first, once
//! every store has committed every record of its signal in them. At start-up the records
//! past each store's checkpoint are replayed.
//!
//! Record layout, little-endian:
//! `len: u32 | crc32: u32 | lsn: u64 | tag: u8 | payload: [u8; len]`, where the CRC covers
//! `lsn | tag | payload`. LSNs increase by one per record over the whole log, and the
//! remaining segments are contiguous (only the oldest are ever deleted), so start-up can
//! tell damage from data that was never written.
//!
//! Damage found at start-up (see [`DamageKind`]) never stops replay: each damaged stretch
//! is logged on one line (segment, offset, bytes, kind), counted on
//! `lookout_wal_corruptions_total{kind}`, and skipped; reading resumes at the next valid
//! record of the segment (one with a valid checksum, a known tag and a higher LSN), and
//! the next segments are read as usual. A damaged end of the log — a torn record from a
//! crash in the middle of a write, or zeros after a power loss — is truncated. A whole
//! segment missing, or empty while the LSNs around it show records were there, is counted
//! as `missing_segment`.
//!
//! A record with a valid checksum that cannot be used (an unknown tag here, or a payload the
//! stores cannot decode or apply, see [`Record::quarantine`]) is a *poison* record: its
//! bytes are copied to the quarantine directory (`DATA_DIR/quarantine/`, one file per
//! record named after its WAL position), it is counted on
//! `lookout_wal_quarantined_records_total` and logged, its LSN counts as done (so its
//! segment is deleted in due course), and replay goes on.

pub mod sink;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use lookout_ingest::batch::Batch;
use lookout_ingest::fsutil;
use lookout_ingest::signal::Signal;

const HEADER_LEN: usize = 17;
/// A record larger than this is corruption, not data.
const MAX_RECORD_LEN: u32 = 1 << 30;
/// Most bytes written in one group commit.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// Name of the quarantine directory, beside the WAL directory (`DATA_DIR/quarantine`).
pub const QUARANTINE_DIR: &str = "quarantine";

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
    /// The log's sequence numbers are used up: only a damaged or forged log gets near
    /// 2^64 records.
    #[error("write-ahead log sequence numbers are exhausted (last {0}); the log is damaged, move it aside")]
    Exhausted(u64),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What kind of damage start-up found: the fixed values of the `kind` label of
/// `lookout_wal_corruptions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DamageKind {
    /// A record cut short by the end of its segment (a crash in the middle of a write).
    Torn,
    /// A record of consistent length whose checksum does not match (flipped bits).
    Checksum,
    /// A length field out of range, or not leading to the next record (a damaged header).
    BadLength,
    /// A stretch of zero bytes (a preallocated or half-written file after a power loss).
    Zeroed,
    /// Segments missing from the sequence, or records missing between two segments.
    MissingSegment,
}

impl DamageKind {
    /// Every kind, in label order.
    pub const ALL: [DamageKind; 5] = [
        DamageKind::Torn,
        DamageKind::Checksum,
        DamageKind::BadLength,
        DamageKind::Zeroed,
        DamageKind::MissingSegment,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Torn => "torn",
            DamageKind::Checksum => "checksum",
            DamageKind::BadLength => "bad_length",
            DamageKind::Zeroed => "zeroed",
            DamageKind::MissingSegment => "missing_segment",
        }
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

/// Where a record sits in the log: segment number and byte offset of its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalPos {
    /// Segment number (the file `{segment:020}.wal`).
    pub segment: u64,
    /// Byte offset of the record in the segment.
    pub offset: u64,
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
    /// Where the record is in the log.
    pub pos: WalPos,
    /// Where [`Record::quarantine`] sets the record aside; `None` only for records made
    /// outside the WAL (tests).
    pub quarantine: Option<Arc<Quarantine>>,
}

impl Record {
    /// The protobuf payload: kept, or read back from the log when the writer handed the
    /// decoded batch instead.
    pub fn payload_bytes(&self) -> io::Result<Bytes> {
        if !self.payload.is_empty() || self.batch.is_none() {
            return Ok(self.payload.clone());
        }
        match &self.quarantine {
            Some(q) => q.read_back(self.pos, self.lsn).map(Bytes::from),
            None => Ok(Bytes::from(
                self.batch
                    .as_ref()
                    .map(Batch::encode_protobuf)
                    .unwrap_or_default(),
            )),
        }
    }

    /// Set this record aside as poison — its checksum is valid but a store cannot decode
    /// or apply it: copy its bytes (the payload; else the encoded batch; else, when both
    /// were consumed, the record read back from its segment) to the quarantine directory,
    /// count it, and log it with `reason`. The caller skips the record. Returns the file
    /// written, if any.
    pub fn quarantine(&self, reason: &str) -> Option<PathBuf> {
        let Some(q) = &self.quarantine else {
            tracing::error!(lsn = self.lsn, signal = %self.signal, segment = self.pos.segment, offset = self.pos.offset, reason, "poison write-ahead log record skipped (no quarantine directory)");
            return None;
        };
        let what = self.signal.as_str();
        if !self.payload.is_empty() {
            return q.put(self.pos, self.lsn, what, &self.payload, reason);
        }
        if let Some(b) = &self.batch {
            return q.put(self.pos, self.lsn, what, &b.encode_protobuf(), reason);
        }
        match q.read_back(self.pos, self.lsn) {
            Ok(bytes) => q.put(self.pos, self.lsn, what, &bytes, reason),
            Err(e) => {
                q.metrics.wal_quarantined_records.inc();
                tracing::error!(lsn = self.lsn, signal = what, segment = self.pos.segment, offset = self.pos.offset, reason, error = %e, "poison write-ahead log record skipped; its bytes could not be read back for the quarantine");
                None
            }
        }
    }
}

/// The quarantine directory of poison records, and its counter.
pub struct Quarantine {
    dir: PathBuf,
    wal_dir: PathBuf,
    metrics: Arc<Metrics>,
}

impl Quarantine {
    /// Poison records of the WAL in `wal_dir` go to `dir` (created when the first one
    /// arrives).
    pub fn new(dir: PathBuf, wal_dir: PathBuf, metrics: Arc<Metrics>) -> Self {
        Self {
            dir,
            wal_dir,
            metrics,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// File name of the record at `pos`: `{segment:020}-{offset:010}-lsn{lsn:020}.{what}`.
    /// Only numbers and `what` (a signal name or `tag{N}`) go into it.
    pub fn file_name(pos: WalPos, lsn: u64, what: &str) -> String {
        format!("{:020}-{:010}-lsn{lsn:020}.{what}", pos.segment, pos.offset)
    }

    /// Write `bytes` of the record at `pos` to the quarantine directory, count and log it.
    /// Naming by position makes this idempotent: a record quarantined again after a
    /// restart overwrites its own file.
    pub fn put(
        &self,
        pos: WalPos,
        lsn: u64,
        what: &str,
        bytes: &[u8],
        reason: &str,
    ) -> Option<PathBuf> {
        self.metrics.wal_quarantined_records.inc();
        let path = self.dir.join(Self::file_name(pos, lsn, what));
        let written =
            fsutil::create_dir_all(&self.dir).and_then(|()| fsutil::write_atomic(&path, bytes));
        match written {
            Ok(()) => {
                tracing::error!(file = %path.display(), lsn, segment = pos.segment, offset = pos.offset, bytes = bytes.len(), reason, "poison write-ahead log record (valid checksum, unusable content) copied to quarantine; skipping it");
                Some(path)
            }
            Err(e) => {
                tracing::error!(file = %path.display(), lsn, segment = pos.segment, offset = pos.offset, reason, error = %e, "poison write-ahead log record skipped; it could not be copied to quarantine");
                None
            }
        }
    }

    /// The payload of the record with `lsn` at `pos`, read from its segment.
    /// The payload of record `lsn` at `pos`, read back from its segment.
    pub fn read_back(&self, pos: WalPos, lsn: u64) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = File::open(segment_path(&self.wal_dir, pos.segment))?;
        f.seek(SeekFrom::Start(pos.offset))?;
        let mut header = [0u8; HEADER_LEN];
        f.read_exact(&mut header)?;
        let len = u32_at(&header, 0);
        if len > MAX_RECORD_LEN || u64_at(&header, 8) != lsn {
            return Err(io::Error::other("no such record at this position"));
        }
        let mut record = header.to_vec();
        record.resize(HEADER_LEN + len as usize, 0);
        f.read_exact(&mut record[HEADER_LEN..])?;
        let (_, _, payload, _) = parse_at(&record).map_err(|e| {
            io::Error::other(format!("record read back is damaged: {}", e.as_str()))
        })?;
        Ok(payload.to_vec())
    }
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

/// The quarantine directory of a WAL in `dir`: `quarantine` beside it.
pub fn default_quarantine_dir(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) => p.join(QUARANTINE_DIR),
        None => dir.join(QUARANTINE_DIR),
    }
}

impl Wal {
    /// Open the WAL in `dir`, replay every record past `checkpoints` into `dispatch`, and
    /// start the writer thread. Returns once replay is complete. Poison records go to
    /// [`default_quarantine_dir`] (`DATA_DIR/quarantine` for the WAL in `DATA_DIR/wal`).
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        checkpoints: Arc<Checkpoints>,
        metrics: Arc<Metrics>,
        dispatch: Dispatch,
    ) -> Result<(Wal, std::thread::JoinHandle<()>), WalError> {
        let quarantine = default_quarantine_dir(dir);
        Self::open_with_quarantine(dir, &quarantine, opts, checkpoints, metrics, dispatch)
    }

    /// [`Wal::open`] with poison records going to `quarantine_dir`.
    pub fn open_with_quarantine(
        dir: &Path,
        quarantine_dir: &Path,
        opts: WalOptions,
        checkpoints: Arc<Checkpoints>,
        metrics: Arc<Metrics>,
        mut dispatch: Dispatch,
    ) -> Result<(Wal, std::thread::JoinHandle<()>), WalError> {
        fsutil::create_dir_all(dir).map_err(io_err(dir))?;
        for kind in DamageKind::ALL {
            metrics.wal_corruptions.with_label_values(&[kind.as_str()]);
        }
        let quarantine = Arc::new(Quarantine::new(
            quarantine_dir.to_path_buf(),
            dir.to_path_buf(),
            metrics.clone(),
        ));
        let mut segments = list_segments(dir)?;
        let started = Instant::now();
        let mut replay = Replay {
            checkpoints: &checkpoints,
            metrics: &metrics,
            quarantine: &quarantine,
            dispatch: &mut dispatch,
            last_lsn: 0,
            damage_since_record: false,
            replayed: 0,
            crc_budget: 0,
        };
        replay.run(&mut segments)?;
        // After the log emptied (every segment committed and deleted), numbering goes on
        // past the stores' checkpoints: a reused LSN at or below a checkpoint would be
        // skipped by replay and trimmed before it is committed.
        let committed = Signal::ALL
            .iter()
            .map(|s| checkpoints.get(*s))
            .max()
            .unwrap_or(0);
        let (next_lsn, replayed) = (
            replay.last_lsn.max(committed).saturating_add(1),
            replay.replayed,
        );
        if replayed > 0 || !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
        }
        let next_seq = segments.last().map_or(1, |s| s.seq.saturating_add(1));
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
            quarantine,
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

/// One damaged stretch found by replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Damage {
    offset: usize,
    len: usize,
    kind: DamageKind,
    reason: &'static str,
    /// Nothing valid follows it in its segment.
    tail: bool,
}

/// State of start-up replay over all segments.
struct Replay<'a> {
    checkpoints: &'a Checkpoints,
    metrics: &'a Metrics,
    quarantine: &'a Arc<Quarantine>,
    dispatch: &'a mut Dispatch,
    /// Highest LSN of a valid record so far.
    last_lsn: u64,
    /// Damage was reported after the last valid record (it explains an LSN gap).
    damage_since_record: bool,
    replayed: u64,
    /// Bytes the resynchronisation may still checksum in the current segment.
    crc_budget: usize,
}

impl Replay<'_> {
    fn run(&mut self, segments: &mut [Segment]) -> Result<(), WalError> {
        // The end of the log: past it, every segment is empty. Damage that reaches the end
        // of the segment there is a torn write, and is cut off.
        let mut sizes = Vec::with_capacity(segments.len());
        for seg in segments.iter() {
            sizes.push(fs::metadata(&seg.path).map_err(io_err(&seg.path))?.len());
        }
        let last_nonempty = sizes.iter().rposition(|&n| n > 0);
        let mut prev_seq: Option<u64> = None;
        for (i, seg) in segments.iter_mut().enumerate() {
            if let Some(prev) = prev_seq {
                if seg.seq > prev.saturating_add(1) {
                    self.missing(
                        seg,
                        format_args!(
                            "segments {:020}..={:020} are missing",
                            prev + 1,
                            seg.seq - 1
                        ),
                    );
                }
            }
            prev_seq = Some(seg.seq);
            let end_of_log = last_nonempty.is_none_or(|l| i >= l);
            self.segment(seg, end_of_log)?;
        }
        Ok(())
    }

    fn missing(&mut self, seg: &Segment, what: std::fmt::Arguments<'_>) {
        self.damage_since_record = true;
        self.metrics.wal_corrupt_records.inc();
        self.metrics
            .wal_corruptions
            .with_label_values(&[DamageKind::MissingSegment.as_str()])
            .inc();
        tracing::error!(segment = %seg.path.display(), offset = 0, kind = DamageKind::MissingSegment.as_str(), "write-ahead log is missing data before this segment: {what}; their records are lost");
    }

    fn segment(&mut self, seg: &mut Segment, end_of_log: bool) -> Result<(), WalError> {
        let data = fs::read(&seg.path).map_err(io_err(&seg.path))?;
        self.crc_budget = data.len().saturating_mul(2).saturating_add(1 << 20);
        let mut first = true;
        let mut pos = 0usize;
        let mut len = data.len();
        while pos < data.len() {
            let err = match parse_at(&data[pos..]) {
                Ok((lsn, tag, payload, used)) => {
                    if first
                        && !self.damage_since_record
                        && self.last_lsn > 0
                        && lsn > self.last_lsn.saturating_add(1)
                    {
                        self.missing(
                            seg,
                            format_args!(
                                "records {}..={} (an empty or missing segment)",
                                self.last_lsn + 1,
                                lsn - 1
                            ),
                        );
                    }
                    first = false;
                    self.record(seg, pos, lsn, tag, payload);
                    pos += used;
                    continue;
                }
                Err(e) => e,
            };
            // LSNs the next record may have: past the last one, or, before any record,
            // around the checkpoints.
            let lsns = if self.last_lsn > 0 {
                (self.last_lsn, self.last_lsn.saturating_add(MAX_LSN_JUMP))
            } else {
                let cp = Signal::ALL
                    .iter()
                    .map(|s| self.checkpoints.get(*s))
                    .max()
                    .unwrap_or(0);
                (
                    cp.saturating_sub(MAX_LSN_JUMP),
                    cp.saturating_add(MAX_LSN_JUMP),
                )
            };
            let damage = match resync(&data, pos, lsns, &mut self.crc_budget) {
                Some(next) => Damage {
                    offset: pos,
                    len: next - pos,
                    kind: classify(&data, pos, next, err, false),
                    reason: err.as_str(),
                    tail: false,
                },
                None => Damage {
                    offset: pos,
                    len: data.len() - pos,
                    kind: classify(&data, pos, data.len(), err, true),
                    reason: err.as_str(),
                    tail: true,
                },
            };
            self.damage_since_record = true;
            self.metrics.wal_corrupt_records.inc();
            self.metrics
                .wal_corruptions
                .with_label_values(&[damage.kind.as_str()])
                .inc();
            let path = seg.path.display();
            let (offset, bytes, kind, reason) = (
                damage.offset,
                damage.len,
                damage.kind.as_str(),
                damage.reason,
            );
            if !damage.tail {
                tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged stretch in the write-ahead log; skipping it, reading on from the next valid record");
                pos += damage.len;
                continue;
            }
            if end_of_log {
                tracing::warn!(segment = %path, offset, bytes, kind, reason, "damaged end of the write-ahead log (torn write from a crash or power loss); truncating it");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(io_err(&seg.path))?;
                f.set_len(pos as u64).map_err(io_err(&seg.path))?;
                f.sync_all().map_err(io_err(&seg.path))?;
                len = pos;
            } else {
                tracing::error!(segment = %path, offset, bytes, kind, reason, "damaged end of a write-ahead log segment; skipping the rest of it, reading on in the next segment");
            }
            break;
        }
        seg.len = len as u64;
        Ok(())
    }

    fn record(&mut self, seg: &mut Segment, offset: usize, lsn: u64, tag: u8, payload: &[u8]) {
        self.damage_since_record = false;
        self.last_lsn = self.last_lsn.max(lsn);
        let pos = WalPos {
            segment: seg.seq,
            offset: offset as u64,
        };
        let Some(signal) = Signal::from_tag(tag) else {
            self.quarantine.put(
                pos,
                lsn,
                &format!("tag{tag}"),
                payload,
                "unknown record tag",
            );
            return;
        };
        seg.max_lsn[signal.index()] = seg.max_lsn[signal.index()].max(lsn);
        if lsn > self.checkpoints.get(signal) {
            (self.dispatch)(Record {
                lsn,
                signal,
                payload: Bytes::copy_from_slice(payload),
                batch: None,
                charge: 0,
                pos,
                quarantine: Some(self.quarantine.clone()),
            });
            self.replayed += 1;
            self.metrics.wal_replayed_records.inc();
        }
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
    quarantine: Arc<Quarantine>,
    last_truncate: Instant,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Append>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut offsets: Vec<u64> = Vec::new();
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
            offsets.clear();
            if self.next_lsn.checked_add(group.len() as u64).is_none() {
                let e = Arc::new(WalError::Exhausted(self.next_lsn));
                tracing::error!(error = %e, "refusing the batch");
                for a in group.drain(..) {
                    let _ = a.done.send(Err(e.clone()));
                }
                continue;
            }
            let first_lsn = self.next_lsn;
            let base = self.current.0.len;
            for (i, a) in group.iter().enumerate() {
                offsets.push(base + buf.len() as u64);
                encode_record(&mut buf, first_lsn + i as u64, a.signal.tag(), &a.payload);
            }
            match self.write_group(&buf) {
                Ok(()) => {
                    self.next_lsn += group.len() as u64;
                    self.metrics.wal_records.inc_by(group.len() as u64);
                    let segment = self.current.0.seq;
                    for ((i, a), offset) in group.drain(..).enumerate().zip(offsets.iter()) {
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
                            pos: WalPos {
                                segment,
                                offset: *offset,
                            },
                            quarantine: Some(self.quarantine.clone()),
                        });
                        let _ = a.done.send(Ok(lsn));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "write-ahead log append failed; refusing the batch");
                    // Leave no partial record behind: the LSNs of the refused records are
                    // used again, and must not also be in the log with the refused data.
                    if let Err(e) = self.current.1.set_len(self.current.0.len) {
                        tracing::error!(segment = %self.current.0.path.display(), error = %e, "cannot cut a failed write off the write-ahead log; start-up will skip it as damage");
                    }
                    let e = Arc::new(e);
                    for a in group.drain(..) {
                        let _ = a.done.send(Err(e.clone()));
                    }
                    // The file may still hold a partial write; continue in a fresh segment.
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

    /// Delete the oldest closed segments whose every record is durable in its store. Only
    /// the oldest: the segments left stay contiguous, so a missing one is damage.
    fn maybe_truncate(&mut self, force: bool) {
        if !force && self.last_truncate.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_truncate = Instant::now();
        let cps = Signal::ALL.map(|s| self.checkpoints.get(s));
        let mut removed = 0;
        for seg in &self.segments {
            let durable = Signal::ALL
                .iter()
                .all(|s| seg.max_lsn[s.index()] <= cps[s.index()]);
            if !durable {
                break;
            }
            if let Err(e) = fs::remove_file(&seg.path) {
                tracing::warn!(segment = %seg.path.display(), error = %e, "cannot remove write-ahead log segment");
                break;
            }
            tracing::debug!(segment = %seg.path.display(), "removed durable write-ahead log segment");
            removed += 1;
        }
        if removed > 0 {
            self.segments.drain(..removed);
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
    let file = fsutil::open_options()
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

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParseError {
    IncompleteHeader,
    LengthOutOfRange,
    IncompletePayload,
    Checksum,
}

impl ParseError {
    fn as_str(self) -> &'static str {
        match self {
            ParseError::IncompleteHeader => "incomplete header",
            ParseError::LengthOutOfRange => "record length out of range",
            ParseError::IncompletePayload => "incomplete payload",
            ParseError::Checksum => "checksum mismatch",
        }
    }
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Parse one record at the start of `data`: `(lsn, tag, payload, bytes used)`, or why
/// it is not one (for tools and fuzzing; start-up replay uses the same parser).
pub fn parse_record(data: &[u8]) -> Result<(u64, u8, &[u8], usize), &'static str> {
    parse_at(data).map_err(ParseError::as_str)
}

fn parse_at(data: &[u8]) -> Result<(u64, u8, &[u8], usize), ParseError> {
    if data.len() < HEADER_LEN {
        return Err(ParseError::IncompleteHeader);
    }
    let len = u32_at(data, 0);
    let crc = u32_at(data, 4);
    let lsn = u64_at(data, 8);
    let tag = data[16];
    if len > MAX_RECORD_LEN {
        return Err(ParseError::LengthOutOfRange);
    }
    let end = HEADER_LEN + len as usize;
    if data.len() < end {
        return Err(ParseError::IncompletePayload);
    }
    let payload = &data[HEADER_LEN..end];
    let mut h = crc32fast::Hasher::new();
    h.update(&data[8..HEADER_LEN]);
    h.update(payload);
    if h.finalize() != crc {
        return Err(ParseError::Checksum);
    }
    Ok((lsn, tag, payload, end))
}

/// Widest LSN jump accepted when resynchronising: far more records than any disk holds,
/// yet a random 8-byte field falls in the window only once in 2^24 tries.
const MAX_LSN_JUMP: u64 = 1 << 40;

/// After damage at `from`, the offset of the next record that is valid (checksum), has a
/// known tag and an LSN in `(after_lsn, most]`, or `None` when nothing valid follows.
/// Headers that cannot be right are passed over without checksumming; `budget` caps the
/// bytes checksummed (per segment), so crafted data cannot make this quadratic.
fn resync(
    data: &[u8],
    from: usize,
    (after_lsn, most): (u64, u64),
    budget: &mut usize,
) -> Option<usize> {
    let mut at = from + 1;
    while at + HEADER_LEN <= data.len() {
        let len = u32_at(data, at) as usize;
        let lsn = u64_at(data, at + 8);
        if len <= MAX_RECORD_LEN as usize
            && len <= data.len() - at - HEADER_LEN
            && Signal::from_tag(data[at + 16]).is_some()
            && lsn > after_lsn
            && lsn <= most
        {
            let cost = HEADER_LEN + len;
            if *budget < cost {
                return None;
            }
            *budget -= cost;
            if parse_at(&data[at..]).is_ok() {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

/// What kind of damage the bytes `data[offset..end]` are, `err` being what parsing found
/// at `offset` and `tail` whether nothing valid follows.
fn classify(data: &[u8], offset: usize, end: usize, err: ParseError, tail: bool) -> DamageKind {
    if data[offset..end].iter().all(|&b| b == 0) {
        return DamageKind::Zeroed;
    }
    match err {
        ParseError::IncompleteHeader | ParseError::IncompletePayload if tail => DamageKind::Torn,
        ParseError::IncompleteHeader
        | ParseError::IncompletePayload
        | ParseError::LengthOutOfRange => DamageKind::BadLength,
        ParseError::Checksum => {
            // The header's length leads exactly to the next record (or the end): the
            // length is right and other bytes are damaged.
            if offset + HEADER_LEN + u32_at(data, offset) as usize == end {
                DamageKind::Checksum
            } else {
                DamageKind::BadLength
            }
        }
    }
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

    /// Found by the `wal_reader` fuzz target (W1): an emptied log restarted numbering at 1,
    /// below the checkpoints, so the next crash skipped and trimmed those records.
    #[tokio::test]
    async fn an_emptied_log_numbers_on_past_the_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Arc::new(Checkpoints::default());
        cps.advance(Signal::Logs, 5);
        let (wal, h, _) = open(dir.path(), cps.clone());
        let lsn = wal
            .append(Signal::Traces, Bytes::from(vec![9]), None, 0)
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

    /// Captured log lines of the calling thread.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

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
    const REC: usize = HEADER_LEN + PAYLOAD;

    /// Three segments of three log records each: LSNs 1..=9, payload `[lsn; 100]`.
    fn write_log(dir: &Path) -> Vec<PathBuf> {
        (0..3u64)
            .map(|s| {
                let mut buf = Vec::new();
                for r in 0..3u64 {
                    let lsn = s * 3 + r + 1;
                    encode_record(&mut buf, lsn, Signal::Logs.tag(), &[lsn as u8; PAYLOAD]);
                }
                let path = segment_path(dir, s + 1);
                fs::write(&path, buf).unwrap();
                path
            })
            .collect()
    }

    #[derive(Debug, Clone, Copy)]
    enum Hit {
        /// Cut the segment in the middle of the record's payload.
        TornPayload,
        /// Cut the segment in the middle of the record's header.
        TornHeader,
        /// Flip one payload byte.
        Flip,
        /// Length field far too large.
        LenHuge,
        /// Length field zero.
        LenZero,
        /// Length field pointing past the end of the segment.
        LenPastEnd,
        /// The 17 header bytes overwritten with garbage.
        Garbage,
        /// The whole record zero-filled.
        ZeroRecord,
        /// The record and everything after it in its segment zero-filled.
        ZeroFrom,
        /// 4 KiB of zeros after the segment's last record (preallocation after a power
        /// loss); the record index is ignored.
        ZeroTail,
        /// The segment deleted; the record index is ignored.
        Missing,
        /// The segment emptied; the record index is ignored.
        Empty,
    }

    fn damage(path: &Path, r: usize, hit: Hit) {
        let mut d = fs::read(path).unwrap();
        let at = r * REC;
        match hit {
            Hit::TornPayload => d.truncate(at + HEADER_LEN + PAYLOAD / 2),
            Hit::TornHeader => d.truncate(at + 9),
            Hit::Flip => d[at + HEADER_LEN + 50] ^= 0x20,
            Hit::LenHuge => d[at..at + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()),
            Hit::LenZero => d[at..at + 4].copy_from_slice(&0u32.to_le_bytes()),
            Hit::LenPastEnd => {
                let past = (d.len() - at) as u32 + 1000;
                d[at..at + 4].copy_from_slice(&past.to_le_bytes());
            }
            Hit::Garbage => {
                for (i, b) in d[at..at + HEADER_LEN].iter_mut().enumerate() {
                    *b = [0xde, 0xad, 0xbe, 0xef][i % 4];
                }
            }
            Hit::ZeroRecord => d[at..at + REC].fill(0),
            Hit::ZeroFrom => d[at..].fill(0),
            Hit::ZeroTail => d.extend_from_slice(&[0; 4096]),
            Hit::Missing => return fs::remove_file(path).unwrap(),
            Hit::Empty => d.clear(),
        }
        fs::write(path, d).unwrap();
    }

    fn metric_count(m: &Metrics, name: &str, label: Option<&str>) -> u64 {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|x| label.is_none_or(|l| x.get_label().iter().any(|p| p.value() == l)))
            .map(|x| x.get_counter().value() as u64)
            .sum()
    }

    /// Open the WAL in `dir` with fresh metrics; what replay dispatched, the metrics, and
    /// the warning/error lines logged during replay.
    fn replay(
        dir: &Path,
        cps: Arc<Checkpoints>,
    ) -> (
        Wal,
        std::thread::JoinHandle<()>,
        Vec<u64>,
        Arc<Metrics>,
        Vec<String>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let metrics = Arc::new(Metrics::new().unwrap());
        let logs = Logs::default();
        let (wal, h) = logs.capture(|| {
            Wal::open(
                dir,
                WalOptions {
                    segment_size: 1 << 20,
                    fsync: false,
                },
                cps,
                metrics.clone(),
                Box::new(move |r: Record| {
                    assert_eq!(&r.payload[..], &[r.lsn as u8; PAYLOAD][..], "lsn {}", r.lsn);
                    s.lock().unwrap().push(r.lsn)
                }),
            )
            .unwrap()
        });
        let got = seen.lock().unwrap().clone();
        (wal, h, got, metrics, logs.lines())
    }

    /// (damage, segment, record, LSNs lost, kinds counted, end of log cut off)
    type Case = (
        Hit,
        usize,
        usize,
        &'static [u64],
        &'static [DamageKind],
        bool,
    );

    /// The corruption matrix: every kind of damage at the first record of the first
    /// segment, a middle record of the middle segment, the last record of the last segment,
    /// and at the segment boundaries. Replay never fails, recovers every record but the
    /// damaged ones (later segments included), counts each damaged stretch by kind, logs it
    /// on one line, truncates it when it is the end of the log, and leaves a WAL that
    /// appends and reopens cleanly.
    #[test]
    fn corruption_matrix() {
        use DamageKind::{BadLength, Checksum, MissingSegment, Torn, Zeroed};
        use Hit::*;
        // (damage, segment, record, LSNs lost, kinds counted, end of log cut off)
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (TornPayload, 0, 0, &[1, 2, 3], &[Torn], false),
            (TornPayload, 1, 1, &[5, 6], &[Torn], false),
            (TornPayload, 2, 2, &[9], &[Torn], true),
            (TornPayload, 2, 0, &[7, 8, 9], &[Torn], true),
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
            (ZeroRecord, 0, 0, &[1], &[Zeroed], false),
            (ZeroRecord, 1, 1, &[5], &[Zeroed], false),
            (ZeroRecord, 2, 2, &[9], &[Zeroed], true),
            (ZeroFrom, 0, 1, &[2, 3], &[Zeroed], false),
            (ZeroFrom, 2, 1, &[8, 9], &[Zeroed], true),
            (ZeroTail, 0, 0, &[], &[Zeroed], false),
            (ZeroTail, 1, 0, &[], &[Zeroed], false),
            (ZeroTail, 2, 0, &[], &[Zeroed], true),
            // The oldest segment gone looks like one deleted once durable, the newest gone
            // like records never written: neither is detectable. A middle one is.
            (Missing, 0, 0, &[1, 2, 3], &[], false),
            (Missing, 1, 0, &[4, 5, 6], &[MissingSegment], false),
            (Missing, 2, 0, &[7, 8, 9], &[], false),
            (Empty, 0, 0, &[1, 2, 3], &[], false),
            (Empty, 1, 0, &[4, 5, 6], &[MissingSegment], false),
            (Empty, 2, 0, &[7, 8, 9], &[], false),
        ];
        for &(hit, seg, rec, lost, kinds, cut) in cases {
            let case = format!("{hit:?} at segment {seg} record {rec}");
            let dir = tempfile::tempdir().unwrap();
            let paths = write_log(dir.path());
            damage(&paths[seg], rec, hit);
            let size_before = fs::metadata(&paths[seg]).map(|m| m.len()).ok();
            let cps = Arc::new(Checkpoints::default());

            let (wal, h, got, metrics, lines) = replay(dir.path(), cps.clone());
            let want: Vec<u64> = (1..=9).filter(|l| !lost.contains(l)).collect();
            assert_eq!(got, want, "{case}: records replayed");
            for kind in DamageKind::ALL {
                let n = kinds.iter().filter(|k| **k == kind).count() as u64;
                let label = Some(kind.as_str());
                assert_eq!(
                    metric_count(&metrics, "lookout_wal_corruptions_total", label),
                    n,
                    "{case}: {kind:?}"
                );
            }
            assert_eq!(
                metric_count(&metrics, "lookout_wal_corrupt_records_total", None),
                kinds.len() as u64,
                "{case}"
            );
            assert_eq!(
                metric_count(&metrics, "lookout_wal_quarantined_records_total", None),
                0,
                "{case}"
            );
            // One line per damaged stretch, naming the file, the offset and the kind.
            assert_eq!(lines.len(), kinds.len(), "{case}: {lines:#?}");
            for (line, kind) in lines.iter().zip(kinds) {
                assert!(
                    line.contains(&format!("kind=\"{}\"", kind.as_str()))
                        || line.contains(&format!("kind={}", kind.as_str())),
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
                "{case}: truncated ({size_before:?} -> {size_after:?})"
            );
            // The log goes on from the highest LSN found.
            let next = want.last().map_or(1, |l| l + 1);
            let lsn = futures::executor::block_on(wal.append(
                Signal::Logs,
                Bytes::from(vec![next as u8; PAYLOAD]),
                None,
                0,
            ))
            .unwrap();
            assert_eq!(lsn, next, "{case}");
            drop(wal);
            h.join().unwrap();

            // Again: the same records plus the new one; damage cut off is gone for good.
            let (_wal, _h, again, metrics, _) = replay(dir.path(), cps);
            let mut want = want;
            want.push(next);
            assert_eq!(again, want, "{case}: second replay");
            let left = metric_count(&metrics, "lookout_wal_corrupt_records_total", None);
            assert_eq!(
                left,
                if cut { 0 } else { kinds.len() as u64 },
                "{case}: damage left"
            );
        }
    }

    /// Damage in front of a segment whose own records are all fine, and several damaged
    /// stretches in one segment: each is skipped on its own.
    #[test]
    fn several_damaged_stretches_in_one_segment_are_each_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        for lsn in 1..=9u64 {
            encode_record(&mut buf, lsn, Signal::Logs.tag(), &[lsn as u8; PAYLOAD]);
        }
        buf[REC + HEADER_LEN + 3] ^= 1; // lsn 2: checksum
        buf[4 * REC..5 * REC].fill(0); // lsn 5: zeros
        buf[6 * REC..6 * REC + 4].copy_from_slice(&0u32.to_le_bytes()); // lsn 7: length
        fs::write(segment_path(dir.path(), 1), &buf).unwrap();
        let (_wal, _h, got, metrics, lines) = replay(dir.path(), Arc::new(Checkpoints::default()));
        assert_eq!(got, [1, 3, 4, 6, 8, 9]);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        for k in ["checksum", "zeroed", "bad_length"] {
            assert_eq!(
                metric_count(&metrics, "lookout_wal_corruptions_total", Some(k)),
                1,
                "{k}"
            );
        }
    }

    /// A large zero-filled or random stretch is skipped in linear time (no quadratic
    /// rescans), and a record after it is still found.
    #[test]
    fn resync_over_a_large_damaged_stretch_is_fast() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, Signal::Logs.tag(), &[1; PAYLOAD]);
        buf.extend(std::iter::repeat_n(0u8, 8 << 20));
        let mut x = 0x1234_5678u32;
        buf.extend((0..(8 << 20)).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        encode_record(&mut buf, 2, Signal::Logs.tag(), &[2; PAYLOAD]);
        fs::write(segment_path(dir.path(), 1), &buf).unwrap();
        let t = Instant::now();
        let (_wal, _h, got, metrics, _) = replay(dir.path(), Arc::new(Checkpoints::default()));
        assert_eq!(got, [1, 2]);
        assert_eq!(
            metric_count(&metrics, "lookout_wal_corrupt_records_total", None),
            1
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    /// A record with a valid checksum and an unknown tag is poison: quarantined under its
    /// position, counted, and the records after it (same segment) are replayed.
    #[test]
    fn unknown_tag_is_quarantined_and_replay_goes_on() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wal");
        fs::create_dir(&dir).unwrap();
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, Signal::Logs.tag(), &[1; PAYLOAD]);
        encode_record(&mut buf, 2, 0x7f, &[2; PAYLOAD]);
        encode_record(&mut buf, 3, Signal::Logs.tag(), &[3; PAYLOAD]);
        fs::write(segment_path(&dir, 1), &buf).unwrap();
        let (_wal, _h, got, metrics, lines) = replay(&dir, Arc::new(Checkpoints::default()));
        assert_eq!(got, [1, 3]);
        assert_eq!(
            metric_count(&metrics, "lookout_wal_quarantined_records_total", None),
            1
        );
        assert_eq!(
            metric_count(&metrics, "lookout_wal_corrupt_records_total", None),
            0
        );
        let q = root.path().join(QUARANTINE_DIR);
        let file = q.join(Quarantine::file_name(
            WalPos {
                segment: 1,
                offset: REC as u64,
            },
            2,
            "tag127",
        ));
        assert_eq!(fs::read(&file).unwrap(), [2; PAYLOAD], "{file:?}");
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].contains("quarantine"), "{}", lines[0]);
    }

    /// Stores call [`Record::quarantine`] on records they cannot use: with the payload at
    /// hand (replay), with only the decoded batch, and with neither (read back from the
    /// segment).
    #[tokio::test]
    async fn records_quarantine_their_bytes_from_wherever_they_are() {
        let root = tempfile::tempdir().unwrap();
        let wal_dir = root.path().join("wal");
        let q = root.path().join("q");
        let batch = Batch::Logs(Default::default());
        let metrics = Arc::new(Metrics::new().unwrap());
        let files = Arc::new(Mutex::new(Vec::new()));
        let f = files.clone();
        let (wal, h) = Wal::open_with_quarantine(
            &wal_dir,
            &q,
            WalOptions {
                segment_size: 1 << 20,
                fsync: false,
            },
            Arc::new(Checkpoints::default()),
            metrics.clone(),
            Box::new(move |mut r: Record| {
                if r.lsn == 2 {
                    r.batch = None; // consumed by a store that then failed
                }
                f.lock().unwrap().push(r.quarantine("test"));
            }),
        )
        .unwrap();
        wal.append(Signal::Logs, Bytes::from_static(b"raw"), None, 0)
            .await
            .unwrap();
        wal.append(
            Signal::Logs,
            Bytes::from_static(b"\x0a\x00"),
            Some(batch.clone()),
            0,
        )
        .await
        .unwrap();
        wal.append(
            Signal::Metrics,
            Bytes::from_static(b"\x0a\x00"),
            Some(batch),
            0,
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
            metric_count(&metrics, "lookout_wal_quarantined_records_total", None),
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
