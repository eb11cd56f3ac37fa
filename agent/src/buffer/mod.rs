//! The agent's disk buffer: everything received is appended here before it is
//! acknowledged, read back in order by the shipper, and deleted once the collector has
//! acknowledged it.
//!
//! Segments of checksummed records ([`format`], a [`lookout_ingest::seglog`] framing) are written by one thread that batches
//! concurrent appends into one write and, with `fsync = "always"`, one `fdatasync` (group
//! commit). The shipper reads with its own file handle, never past what was written, and
//! acknowledges positions; the acknowledged position is persisted in `ack.pos` and
//! segments wholly behind it are deleted. After a crash, start-up scans the segments:
//! torn tails are truncated, damaged stretches are skipped (resynchronising on the next
//! valid record) and counted, and the shipper resumes from `ack.pos`.
//!
//! Batches the collector acknowledged out of order, beyond a batch still in flight at
//! shutdown, are written to `delivered` with the `ack.pos` they lie beyond, so that the
//! next start skips them instead of sending them twice ([`Buffer::read_delivered`]).

pub mod format;
mod reader;
mod recover;
pub mod scan;
mod writer;

/// Subdirectory of the agent's `buffer_dir` that holds the segments and `ack.pos`.
pub const SUBDIR: &str = "buffer";

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lookout_config::{FsyncPolicy, WhenFull};
use parking_lot::{Condvar, Mutex};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::oneshot;

use crate::sink::{Entry, Sink, SinkError};
use format::FRAMING;
use lookout_ingest::fsutil;
use lookout_ingest::seglog::metrics::register as reg;
use lookout_ingest::seglog::{self, DamageCounters, Next, SegmentReader, SeqCursor};
pub use reader::{Read, Reader};
use recover::Recover;
use writer::BufferWriter;

/// A position in the buffer: segment number and byte offset. Ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Pos {
    /// Segment number.
    pub seg: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// Settings of the buffer.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// Most bytes of segment files.
    pub max_size: u64,
    /// Roll to a new segment past this size.
    pub segment_size: u64,
    /// What a full buffer does.
    pub when_full: WhenFull,
    /// When to `fdatasync`.
    pub fsync: FsyncPolicy,
    /// Period of [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
}

/// Errors opening the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// An I/O error on a buffer file.
    #[error("disk buffer i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<seglog::Error> for BufferError {
    fn from(e: seglog::Error) -> Self {
        match e {
            seglog::Error::Io { path, source } => BufferError::Io { path, source },
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Self-metrics of the buffer.
#[derive(Clone)]
pub struct BufferMetrics {
    /// Bytes of segment files on disk.
    pub bytes: IntGauge,
    /// Bytes not yet acknowledged by the collector.
    pub unacked_bytes: IntGauge,
    /// Segment files on disk.
    pub segments: IntGauge,
    /// Items appended, by signal.
    pub appended_items: IntCounterVec,
    /// Items deleted unshipped by `when_full = "drop_oldest"`, by signal.
    pub dropped_items: IntCounterVec,
    /// Appends refused, by reason (`full`, `io`, `closed`).
    pub refused_appends: IntCounterVec,
    /// Damaged stretches skipped while reading (`..._corrupt_records_total`), and damage
    /// found by kind (`..._corruptions_total{kind}`: `torn`, `checksum`, `bad_length`,
    /// `bad_header`, `zeroed`, `missing_segment`; see [`scan::DamageKind`]).
    pub damage: DamageCounters,
    /// Group commits (one write, maybe one fsync).
    pub commits: IntCounter,
}

impl BufferMetrics {
    /// Create and register on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let cv = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        Ok(Self {
            bytes: reg(
                registry,
                IntGauge::new("lookout_agent_buffer_bytes", "Bytes of buffer segments on disk.")?,
            )?,
            unacked_bytes: reg(
                registry,
                IntGauge::new(
                    "lookout_agent_buffer_unacked_bytes",
                    "Bytes in the buffer not yet acknowledged by the collector.",
                )?,
            )?,
            segments: reg(
                registry,
                IntGauge::new("lookout_agent_buffer_segments", "Buffer segment files on disk.")?,
            )?,
            appended_items: reg(
                registry,
                cv(
                    "lookout_agent_buffer_appended_items_total",
                    "Items written to the buffer, by signal.",
                    &["signal"],
                )?,
            )?,
            dropped_items: reg(
                registry,
                cv(
                    "lookout_agent_buffer_dropped_items_total",
                    "Items deleted unshipped because the buffer was full (when_full = drop_oldest).",
                    &["signal"],
                )?,
            )?,
            refused_appends: reg(
                registry,
                cv(
                    "lookout_agent_buffer_refused_appends_total",
                    "Appends refused, by reason (full, io, closed).",
                    &["reason"],
                )?,
            )?,
            damage: DamageCounters::register(
                registry,
                &FRAMING,
                (
                    "lookout_agent_buffer_corrupt_records_total",
                    "Damaged stretches of buffer segments skipped.",
                ),
                (
                    "lookout_agent_buffer_corruptions_total",
                    "Damage found in the buffer, by kind (torn, checksum, bad_length, bad_header, zeroed, missing_segment).",
                ),
            )?,
            commits: reg(
                registry,
                IntCounter::new(
                    "lookout_agent_buffer_commits_total",
                    "Group commits of the buffer writer.",
                )?,
            )?,
        })
    }
}

struct Seg {
    seq: u64,
    path: PathBuf,
    /// Bytes written (readable).
    len: u64,
    /// No more writes: the writer moved on.
    sealed: bool,
    /// Damaged stretches already reported, `(start, end)`: readers step over them.
    damage: Vec<(u64, u64)>,
}

struct State {
    segments: VecDeque<Seg>,
    /// Bytes of all segment files.
    total: u64,
    /// Bytes queued for the writer.
    reserved: u64,
    ack: Pos,
    ack_persisted: Pos,
    closed: bool,
}

impl State {
    fn unacked(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.seq >= self.ack.seg)
            .map(|s| {
                if s.seq == self.ack.seg {
                    s.len.saturating_sub(self.ack.offset)
                } else {
                    s.len
                }
            })
            .sum()
    }
}

struct Append {
    entry: Entry,
    size: u64,
    done: oneshot::Sender<Result<(), SinkError>>,
}

struct Inner {
    dir: PathBuf,
    opts: BufferOptions,
    state: Mutex<State>,
    data: Condvar,
    tx: Mutex<Option<mpsc::Sender<Append>>>,
    metrics: BufferMetrics,
}

/// What start-up found in the buffer.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records not yet acknowledged.
    pub unacked_records: u64,
    /// Their items, by signal (traces, logs, metrics).
    pub unacked_items: [u64; 3],
    /// Damaged stretches skipped.
    pub damaged: u64,
    /// Latest position of each tailed file found in the buffer.
    pub positions: HashMap<u64, u64>,
}

/// The disk buffer. Cloning shares it.
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

const ACK_FILE: &str = "ack.pos";

/// The acknowledged position persisted in `dir`, if readable.
pub fn read_ack_file(dir: &Path) -> Option<Pos> {
    read_ack(dir)
}

fn read_ack(dir: &Path) -> Option<Pos> {
    let b = fs::read(dir.join(ACK_FILE)).ok()?;
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32fast::hash(&b[..16]) != crc {
        return None;
    }
    let mut seg = [0u8; 8];
    let mut off = [0u8; 8];
    seg.copy_from_slice(&b[..8]);
    off.copy_from_slice(&b[8..16]);
    Some(Pos {
        seg: u64::from_le_bytes(seg),
        offset: u64::from_le_bytes(off),
    })
}

fn write_ack(dir: &Path, pos: Pos) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&pos.seg.to_le_bytes());
    b.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.pos.tmp");
    let mut f = fsutil::create_file(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(ACK_FILE))?;
    File::open(dir)?.sync_all()
}

const DELIVERED_FILE: &str = "delivered";

/// Records `(start, end]` the collector acknowledged beyond the ack position: a batch
/// that completed out of order, behind one still in flight at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// End of the record before the first one of the stretch.
    pub start: Pos,
    /// End of the stretch's last record.
    pub end: Pos,
    /// Items in the stretch.
    pub items: u64,
}

impl Delivered {
    /// Whether the record ending at `end` lies in this stretch.
    pub fn holds(&self, end: Pos) -> bool {
        self.start < end && end <= self.end
    }
}

/// `ack seg, ack offset, count, count × (start seg, start offset, end seg, end offset,
/// items)`, all u64 little-endian, then a CRC32 of those bytes.
fn encode_delivered(ack: Pos, ranges: &[Delivered]) -> Vec<u8> {
    let mut b = Vec::with_capacity(28 + ranges.len() * 40);
    for v in [ack.seg, ack.offset, ranges.len() as u64] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for r in ranges {
        for v in [
            r.start.seg,
            r.start.offset,
            r.end.seg,
            r.end.offset,
            r.items,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode_delivered(b: &[u8]) -> Option<(Pos, Vec<Delivered>)> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc || body.len() % 8 != 0 {
        return None;
    }
    let words: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| c.try_into().map(u64::from_le_bytes))
        .collect::<Result<_, _>>()
        .ok()?;
    let (head, rest) = words.split_at_checked(3)?;
    let n = usize::try_from(head[2]).ok()?;
    if rest.len() != n.checked_mul(5)? {
        return None;
    }
    let ack = Pos {
        seg: head[0],
        offset: head[1],
    };
    let ranges = rest
        .chunks_exact(5)
        .map(|w| Delivered {
            start: Pos {
                seg: w[0],
                offset: w[1],
            },
            end: Pos {
                seg: w[2],
                offset: w[3],
            },
            items: w[4],
        })
        .collect();
    Some((ack, ranges))
}

impl Buffer {
    /// Open (or create) the buffer in `dir`, recover what a crash left, and start the
    /// writer thread.
    pub fn open(
        dir: &Path,
        opts: BufferOptions,
        metrics: BufferMetrics,
    ) -> Result<(Buffer, Recovery), BufferError> {
        fsutil::create_dir_all(dir).map_err(io_err(dir))?;
        let ack_read = read_ack(dir);
        if ack_read.is_none() && dir.join(ACK_FILE).exists() {
            tracing::warn!(dir = %dir.display(), "the buffer's ack.pos is unreadable; every buffered record will be shipped again");
        }
        let ack = ack_read.unwrap_or_default();
        let listed = seglog::list_segments(&FRAMING, dir)?;
        let mut recover = Recover::new(&metrics, ack);
        // Segments are deleted oldest first, and only once acknowledged (or, with
        // when_full = drop_oldest, when the buffer is full): the ones left are contiguous,
        // and so are the sequence numbers of their records.
        let mut missing_before = false;
        if let (Some(a), Some(first)) = (ack_read, listed.first()) {
            if first.seq > a.seg.saturating_add(1) {
                recover.missing_data(&first.path, &format!("segments {}..={} were never acknowledged (deleted unshipped because the buffer was full, or lost)", a.seg + 1, first.seq - 1));
                missing_before = true;
            }
        }
        // A damaged end of the buffer is a torn write and is cut off; elsewhere it stays
        // (for `buffer verify`) and is stepped over.
        let cursor = SeqCursor::new(FRAMING.first_window);
        seglog::scan_log(&FRAMING, listed, cursor, missing_before, &mut recover)?;
        let Recover {
            recovery,
            mut segments,
            next_record_seq,
            ..
        } = recover;
        let next_seg = segments
            .back()
            .map_or(ack.seg.saturating_add(1), |s| s.seq.saturating_add(1))
            .max(1);
        let (file, path) = seglog::create_segment(&FRAMING, dir, next_seg)?;
        segments.push_back(Seg {
            seq: next_seg,
            path,
            len: 0,
            sealed: false,
            damage: Vec::new(),
        });
        // Everything before the first remaining segment is gone: the ack moves there.
        let first = segments.front().map_or(next_seg, |s| s.seq);
        let ack = if ack.seg < first {
            Pos {
                seg: first,
                offset: 0,
            }
        } else {
            ack
        };
        let total = segments.iter().map(|s| s.len).sum();
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            opts,
            state: Mutex::new(State {
                segments,
                total,
                reserved: 0,
                ack,
                ack_persisted: ack,
                closed: false,
            }),
            data: Condvar::new(),
            tx: Mutex::new(Some(tx)),
            metrics,
        });
        inner.update_gauges(&inner.state.lock());
        let writer = BufferWriter {
            inner: inner.clone(),
            file,
            next_record_seq,
            buf: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
        };
        std::thread::Builder::new()
            .name("lookout-buffer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        if recovery.unacked_records > 0 {
            tracing::info!(
                records = recovery.unacked_records,
                spans = recovery.unacked_items[0],
                log_records = recovery.unacked_items[1],
                data_points = recovery.unacked_items[2],
                "the disk buffer holds data not yet shipped; resuming"
            );
        }
        Ok((Buffer { inner }, recovery))
    }

    /// Append one entry; resolves once it is written (and fsync'd under
    /// `fsync = "always"`).
    pub fn append(&self, entry: Entry) -> BoxFuture<'static, Result<(), SinkError>> {
        let size = format::encoded_len(entry.positions.len(), entry.payload.len()) as u64;
        let admitted = self.admit(size);
        let tx = self.inner.tx.lock().clone();
        let metrics = self.inner.metrics.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            admitted?;
            let Some(tx) = tx else {
                inner.unreserve(size);
                metrics.refused_appends.with_label_values(&["closed"]).inc();
                return Err(SinkError::Unavailable("the agent is shutting down".into()));
            };
            let (done, rx) = oneshot::channel();
            if tx.send(Append { entry, size, done }).is_err() {
                inner.unreserve(size);
                return Err(SinkError::Unavailable(
                    "the buffer writer has stopped".into(),
                ));
            }
            rx.await
                .map_err(|_| SinkError::Unavailable("the buffer writer has stopped".into()))?
        })
    }

    fn admit(&self, size: u64) -> Result<(), SinkError> {
        let inner = &self.inner;
        let max = inner.opts.max_size;
        let mut st = inner.state.lock();
        if st.closed {
            inner
                .metrics
                .refused_appends
                .with_label_values(&["closed"])
                .inc();
            return Err(SinkError::Unavailable("the agent is shutting down".into()));
        }
        if st.total + st.reserved + size > max && inner.opts.when_full == WhenFull::DropOldest {
            while st.total + st.reserved + size > max {
                if !inner.drop_oldest(&mut st) {
                    break;
                }
            }
        }
        if st.total + st.reserved + size > max {
            inner
                .metrics
                .refused_appends
                .with_label_values(&["full"])
                .inc();
            return Err(SinkError::Full(format!(
                "the agent's disk buffer is full ({} of {} bytes; the collector is not keeping up or is down); retry later",
                st.total + st.reserved,
                max
            )));
        }
        st.reserved += size;
        Ok(())
    }

    /// A reader from the acknowledged position, for the shipper.
    pub fn reader(&self) -> Reader {
        let ack = self.inner.state.lock().ack;
        Reader {
            inner: self.inner.clone(),
            pos: ack,
            file: None,
            last_seq: 0,
        }
    }

    /// The collector has acknowledged everything up to `pos`.
    pub fn ack(&self, pos: Pos) {
        let mut st = self.inner.state.lock();
        if pos > st.ack {
            st.ack = pos;
            self.inner.update_gauges(&st);
        }
    }

    /// Persist the acknowledged position and delete segments wholly behind it.
    pub fn flush_ack(&self) -> Result<(), BufferError> {
        let inner = &self.inner;
        let ack = {
            let st = inner.state.lock();
            if st.ack == st.ack_persisted {
                return Ok(());
            }
            st.ack
        };
        write_ack(&inner.dir, ack).map_err(io_err(&inner.dir))?;
        let mut st = inner.state.lock();
        st.ack_persisted = ack;
        while let Some(front) = st.segments.front() {
            let done = front.sealed
                && (front.seq < ack.seg || (front.seq == ack.seg && ack.offset >= front.len));
            if !done {
                break;
            }
            let Some(seg) = st.segments.pop_front() else {
                break;
            };
            if let Err(e) = fs::remove_file(&seg.path) {
                tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete a shipped buffer segment");
            }
            st.total -= seg.len;
        }
        inner.update_gauges(&st);
        Ok(())
    }

    /// Persist the stretches the collector acknowledged beyond the persisted ack position
    /// (call after [`Self::flush_ack`]); none removes the file.
    pub fn write_delivered(&self, ranges: &[Delivered]) -> Result<(), BufferError> {
        let dir = &self.inner.dir;
        let path = dir.join(DELIVERED_FILE);
        if ranges.is_empty() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
                _ => Ok(()),
            };
        }
        let ack = self.inner.state.lock().ack_persisted;
        let tmp = dir.join("delivered.tmp");
        let write = || -> io::Result<()> {
            // The file holds only against this ack position, so it must be on disk too
            // (nothing acknowledged yet means no ack.pos so far).
            if read_ack(dir) != Some(ack) {
                write_ack(dir, ack)?;
            }
            let mut f = fsutil::create_file(&tmp)?;
            f.write_all(&encode_delivered(ack, ranges))?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(io_err(&path))
    }

    /// The stretches the last shutdown recorded as delivered, when they lie beyond the
    /// same `ack.pos` this buffer opened with. A stale, damaged or foreign file is
    /// ignored and removed: its records are then shipped again, never skipped wrongly.
    pub fn read_delivered(&self) -> Vec<Delivered> {
        let dir = &self.inner.dir;
        let path = dir.join(DELIVERED_FILE);
        let Ok(bytes) = fs::read(&path) else {
            return Vec::new();
        };
        let on_disk = read_ack(dir);
        let ack = self.inner.state.lock().ack;
        match decode_delivered(&bytes) {
            Some((at, ranges))
                if Some(at) == on_disk
                    && at == ack
                    && ranges.iter().all(|r| ack <= r.start && r.start < r.end) =>
            {
                ranges
            }
            found => {
                if found.is_none() {
                    tracing::warn!(file = %path.display(), "the buffer's delivered file is damaged; those records will be shipped again");
                }
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a stale delivered file");
                }
                Vec::new()
            }
        }
    }

    /// Bytes not yet acknowledged.
    pub fn unacked_bytes(&self) -> u64 {
        self.inner.state.lock().unacked()
    }

    /// Stop taking appends; the writer finishes what it has queued (and fsyncs) and the
    /// readers see the end once they have read everything.
    pub fn close(&self) {
        self.inner.tx.lock().take();
        self.inner.state.lock().closed = true;
        self.inner.data.notify_all();
    }
}

impl Sink for Buffer {
    fn append(&self, entry: Entry) -> BoxFuture<'static, Result<(), SinkError>> {
        Buffer::append(self, entry)
    }
}

impl Inner {
    fn unreserve(&self, size: u64) {
        let mut st = self.state.lock();
        st.reserved = st.reserved.saturating_sub(size);
    }

    /// Delete the oldest sealed segment, counting its unacknowledged items as dropped.
    fn drop_oldest(&self, st: &mut State) -> bool {
        let Some(front) = st.segments.front() else {
            return false;
        };
        if !front.sealed {
            return false;
        }
        let from = if front.seq == st.ack.seg {
            st.ack.offset
        } else {
            0
        };
        if let Ok(mut r) = SegmentReader::open(&FRAMING, &front.path, from) {
            while let Ok(Next::Record { body, .. }) = r.next(front.len) {
                let Ok(record) = format::decode(body) else {
                    break;
                };
                self.metrics
                    .dropped_items
                    .with_label_values(&[record.signal.as_str()])
                    .inc_by(u64::from(record.items));
            }
        }
        tracing::warn!(segment = %front.path.display(), "disk buffer full: deleting the oldest segment unshipped (when_full = drop_oldest)");
        if let Err(e) = fs::remove_file(&front.path) {
            tracing::warn!(segment = %front.path.display(), error = %e, "cannot delete a buffer segment");
        }
        let len = front.len;
        st.segments.pop_front();
        st.total -= len;
        if let Some(next) = st.segments.front() {
            let first = Pos {
                seg: next.seq,
                offset: 0,
            };
            if st.ack < first {
                st.ack = first;
            }
        }
        self.update_gauges(st);
        true
    }

    fn update_gauges(&self, st: &State) {
        self.metrics.bytes.set(st.total as i64);
        self.metrics.segments.set(st.segments.len() as i64);
        self.metrics.unacked_bytes.set(st.unacked() as i64);
    }
}

impl Inner {
    /// End of the damaged stretch of segment `seq` that starts at `offset`, if known.
    fn known_damage(&self, seq: u64, offset: u64) -> Option<u64> {
        let st = self.state.lock();
        let seg = st.segments.iter().find(|s| s.seq == seq)?;
        seg.damage
            .iter()
            .find(|(start, _)| *start == offset)
            .map(|(_, end)| *end)
    }

    /// Remember a damaged stretch found while reading, so that it is reported once.
    fn remember_damage(&self, seq: u64, start: u64, end: u64) {
        let mut st = self.state.lock();
        if let Some(seg) = st.segments.iter_mut().find(|s| s.seq == seq) {
            seg.damage.push((start, end));
        }
    }
}

#[cfg(test)]
mod tests;
