//! The agent's disk buffer: everything received is appended here before it is
//! acknowledged, read back in order by the shipper, and deleted once the collector has
//! acknowledged it.
//!
//! Segments of checksummed records ([`format`]) are written by one thread that batches
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
pub mod scan;

/// Subdirectory of the agent's `buffer_dir` that holds the segments and `ack.pos`.
pub const SUBDIR: &str = "buffer";

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
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
use format::{Next, Record, SegmentReader};
use lookout_ingest::fsutil;
use scan::DamageKind;

/// Most bytes written in one group commit.
const MAX_GROUP_BYTES: usize = 8 << 20;

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
    /// Damaged stretches skipped while reading.
    pub corrupt_records: IntCounter,
    /// Damage found, by kind (`torn`, `checksum`, `bad_length`, `bad_header`, `zeroed`,
    /// `missing_segment`); see [`scan::DamageKind`].
    pub corruptions: IntCounterVec,
    /// Group commits (one write, maybe one fsync).
    pub commits: IntCounter,
}

impl BufferMetrics {
    /// Create and register on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn reg<T: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            m: T,
        ) -> Result<T, prometheus::Error> {
            r.register(Box::new(m.clone()))?;
            Ok(m)
        }
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
            corrupt_records: reg(
                registry,
                IntCounter::new(
                    "lookout_agent_buffer_corrupt_records_total",
                    "Damaged stretches of buffer segments skipped.",
                )?,
            )?,
            corruptions: {
                let c = reg(
                    registry,
                    cv(
                        "lookout_agent_buffer_corruptions_total",
                        "Damage found in the buffer, by kind (torn, checksum, bad_length, bad_header, zeroed, missing_segment).",
                        &["kind"],
                    )?,
                )?;
                for k in DamageKind::ALL {
                    c.with_label_values(&[k.as_str()]);
                }
                c
            },
            commits: reg(
                registry,
                IntCounter::new(
                    "lookout_agent_buffer_commits_total",
                    "Group commits of the buffer writer.",
                )?,
            )?,
        })
    }

    /// Count one damaged stretch of `kind`.
    fn damaged(&self, kind: DamageKind) {
        self.corrupt_records.inc();
        self.corruptions.with_label_values(&[kind.as_str()]).inc();
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

fn create_segment(dir: &Path, seq: u64) -> Result<(File, PathBuf), BufferError> {
    let path = dir.join(scan::segment_name(seq));
    let f = fsutil::open_options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    Ok((f, path))
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
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut next_record_seq = 1u64;
        let listed = scan::list_segments(dir).map_err(io_err(dir))?;
        // The end of the buffer: past it every segment is empty. A damaged end there is a
        // torn write and is cut off; elsewhere it stays (for `buffer verify`) and is
        // stepped over.
        let mut last_nonempty = None;
        for (i, (_, path)) in listed.iter().enumerate() {
            if fs::metadata(path).map_err(io_err(path))?.len() > 0 {
                last_nonempty = Some(i);
            }
        }
        let missing = |recovery: &mut Recovery, path: &Path, what: String| {
            metrics.damaged(DamageKind::MissingSegment);
            recovery.damaged += 1;
            tracing::error!(segment = %path.display(), offset = 0, kind = DamageKind::MissingSegment.as_str(), "buffer data is missing before this segment: {what}; its records are lost");
        };
        // Segments are deleted oldest first, and only once acknowledged (or, with
        // when_full = drop_oldest, when the buffer is full): the ones left are contiguous,
        // and so are the sequence numbers of their records.
        let mut damage_since = false;
        if let (Some(a), Some((first, path))) = (ack_read, listed.first()) {
            if *first > a.seg.saturating_add(1) {
                missing(&mut recovery, path, format!("segments {}..={} were never acknowledged (deleted unshipped because the buffer was full, or lost)", a.seg + 1, first - 1));
                damage_since = true;
            }
        }
        let mut prev: Option<u64> = None;
        let mut prev_seq = 0u64;
        for (i, (seq, path)) in listed.into_iter().enumerate() {
            let end_of_buffer = last_nonempty.is_none_or(|l| i >= l);
            if let Some(p) = prev.filter(|p| seq > p.saturating_add(1)) {
                missing(
                    &mut recovery,
                    &path,
                    format!("segments {}..={} are gone", p + 1, seq - 1),
                );
                damage_since = true;
            }
            prev = Some(seq);
            let mut s =
                scan::scan_segment_after(seq, &path, ack, prev_seq).map_err(io_err(&path))?;
            match s.seq_range {
                Some((lo, hi)) => {
                    let head_damaged = s.damage.first().is_some_and(|d| d.offset == 0);
                    if prev_seq > 0
                        && lo > prev_seq.saturating_add(1)
                        && !damage_since
                        && !head_damaged
                    {
                        missing(
                            &mut recovery,
                            &path,
                            format!(
                                "records {}..={} (an empty or missing segment)",
                                prev_seq + 1,
                                lo - 1
                            ),
                        );
                    }
                    prev_seq = prev_seq.max(hi);
                    damage_since = s.damage.last().is_some_and(|d| d.tail);
                }
                None => damage_since |= !s.damage.is_empty(),
            }
            for d in &s.damage {
                metrics.damaged(d.kind);
                recovery.damaged += 1;
                let (offset, bytes, kind, reason) = (d.offset, d.len, d.kind.as_str(), d.reason);
                if d.tail && end_of_buffer {
                    tracing::warn!(segment = %path.display(), offset, bytes, kind, reason, "damaged end of the buffer (torn write from a crash, or zeros after a power loss); truncating it");
                } else if d.tail {
                    tracing::error!(segment = %path.display(), offset, bytes, kind, reason, "damaged end of a buffer segment; skipping the rest of it, reading on in the next segment (run `lookout-agent buffer verify --repair`)");
                } else {
                    tracing::error!(segment = %path.display(), offset, bytes, kind, reason, "damaged stretch in the buffer; skipping it, reading on from the next valid record (run `lookout-agent buffer verify --repair`)");
                }
            }
            if let Some(d) = s.damage.last().filter(|d| d.tail) {
                if end_of_buffer {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    f.set_len(d.offset).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                }
                // Readers stop where the damage starts.
                s.bytes = d.offset;
            }
            if let Some((_, hi)) = s.seq_range {
                next_record_seq = next_record_seq.max(hi.saturating_add(1));
            }
            for (k, v) in s.positions {
                let o = recovery.positions.entry(k).or_default();
                *o = (*o).max(v);
            }
            let acked = seq < ack.seg || (seq == ack.seg && ack.offset >= s.bytes);
            if acked {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            for (a, b) in recovery.unacked_items.iter_mut().zip(s.unacked_items) {
                *a += b;
            }
            recovery.unacked_records += s.unacked_records;
            segments.push_back(Seg {
                seq,
                path,
                len: s.bytes,
                sealed: true,
                damage: s
                    .damage
                    .iter()
                    .filter(|d| !d.tail)
                    .map(|d| (d.offset, d.offset + d.len))
                    .collect(),
            });
        }
        let next_seg = segments
            .back()
            .map_or(ack.seg.saturating_add(1), |s| s.seq.saturating_add(1))
            .max(1);
        let (file, path) = create_segment(dir, next_seg)?;
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
        let writer = Writer {
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
        if let Ok(mut r) = SegmentReader::open(&front.path, from) {
            while let Ok(Next::Record { record, .. }) = r.next(front.len) {
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

struct Writer {
    inner: Arc<Inner>,
    file: File,
    next_record_seq: u64,
    buf: Vec<u8>,
    dirty: bool,
    last_sync: Instant,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        let tick = match self.inner.opts.fsync {
            FsyncPolicy::Interval => self.inner.opts.fsync_interval,
            _ => Duration::from_secs(3600),
        };
        loop {
            let first = match rx.recv_timeout(tick) {
                Ok(a) => a,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.maybe_sync();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            let mut bytes = group[0].size as usize;
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(a) => {
                        bytes += a.size as usize;
                        group.push(a);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        if self.dirty && self.inner.opts.fsync != FsyncPolicy::Never {
            let _ = self.file.sync_data();
        }
        self.inner.state.lock().closed = true;
        self.inner.data.notify_all();
    }

    fn maybe_sync(&mut self) {
        if self.dirty
            && self.inner.opts.fsync == FsyncPolicy::Interval
            && self.last_sync.elapsed() >= self.inner.opts.fsync_interval
        {
            if let Err(e) = self.file.sync_data() {
                tracing::error!(error = %e, "buffer fsync failed");
            }
            self.dirty = false;
            self.last_sync = Instant::now();
        }
    }

    fn roll_if_full(&mut self) -> Result<(), BufferError> {
        let (len, seq) = {
            let st = self.inner.state.lock();
            let cur = st.segments.back();
            (cur.map_or(0, |s| s.len), cur.map_or(0, |s| s.seq))
        };
        if len < self.inner.opts.segment_size {
            return Ok(());
        }
        if self.inner.opts.fsync != FsyncPolicy::Never {
            let _ = self.file.sync_data();
        }
        let (file, path) = create_segment(&self.inner.dir, seq + 1)?;
        self.file = file;
        self.dirty = false;
        let mut st = self.inner.state.lock();
        if let Some(cur) = st.segments.back_mut() {
            cur.sealed = true;
        }
        st.segments.push_back(Seg {
            seq: seq + 1,
            path,
            len: 0,
            sealed: false,
            damage: Vec::new(),
        });
        self.inner.update_gauges(&st);
        drop(st);
        self.inner.data.notify_all();
        Ok(())
    }

    fn commit(&mut self, group: Vec<Append>) {
        let reserved: u64 = group.iter().map(|a| a.size).sum();
        let fail = |group: Vec<Append>, why: String, inner: &Inner| {
            inner
                .metrics
                .refused_appends
                .with_label_values(&["io"])
                .inc();
            for a in group {
                let _ = a.done.send(Err(SinkError::Unavailable(format!(
                    "cannot write the disk buffer: {why}"
                ))));
            }
        };
        if let Err(e) = self.roll_if_full() {
            self.inner.unreserve(reserved);
            fail(group, e.to_string(), &self.inner);
            return;
        }
        let time = lookout_ingest::clock::now_unix_nano();
        self.buf.clear();
        let first_seq = self.next_record_seq;
        for a in &group {
            let e = &a.entry;
            format::encode(
                &mut self.buf,
                self.next_record_seq,
                time,
                e.signal,
                e.items,
                &e.positions,
                &e.payload,
            );
            self.next_record_seq += 1;
        }
        let prev_len = self.inner.state.lock().segments.back().map_or(0, |s| s.len);
        let written = self.file.write_all(&self.buf).and_then(|()| {
            if self.inner.opts.fsync == FsyncPolicy::Always {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Leave no partial record behind; the senders retry.
            let _ = self.file.set_len(prev_len);
            self.next_record_seq = first_seq;
            self.inner.unreserve(reserved);
            tracing::error!(error = %e, "cannot write the disk buffer; refusing data until it works again");
            fail(group, e.to_string(), &self.inner);
            return;
        }
        self.dirty = self.inner.opts.fsync != FsyncPolicy::Always;
        if self.inner.opts.fsync == FsyncPolicy::Always {
            self.last_sync = Instant::now();
        }
        self.maybe_sync();
        let n = self.buf.len() as u64;
        {
            let mut st = self.inner.state.lock();
            if let Some(cur) = st.segments.back_mut() {
                cur.len += n;
            }
            st.total += n;
            st.reserved = st.reserved.saturating_sub(reserved);
            self.inner.update_gauges(&st);
        }
        self.inner.metrics.commits.inc();
        self.inner.data.notify_all();
        for a in group {
            self.inner
                .metrics
                .appended_items
                .with_label_values(&[a.entry.signal.as_str()])
                .inc_by(u64::from(a.entry.items));
            let _ = a.done.send(Ok(()));
        }
    }
}

/// Reads records in order from a position, never past what was written.
pub struct Reader {
    inner: Arc<Inner>,
    pos: Pos,
    file: Option<(u64, SegmentReader)>,
    last_seq: u64,
}

/// What [`Reader::next`] found.
#[derive(Debug)]
pub enum Read {
    /// A record, and the position just past it.
    Record(Record, Pos),
    /// Nothing new within the timeout.
    Idle,
    /// The buffer is closed and everything was read.
    Closed,
}

impl Reader {
    /// Where the next record is read from (the end of the last one read).
    pub fn position(&self) -> Pos {
        self.pos
    }

    /// The next record, waiting up to `timeout` for one.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Read> {
        let deadline = Instant::now() + timeout;
        loop {
            let (path, seg, limit, sealed) = {
                let mut st = self.inner.state.lock();
                // Segments dropped under us (drop_oldest): move to the oldest left.
                if let Some(front) = st.segments.front() {
                    if self.pos.seg < front.seq {
                        self.pos = Pos {
                            seg: front.seq,
                            offset: 0,
                        };
                        self.file = None;
                    }
                }
                let Some(s) = st.segments.iter().find(|s| s.seq >= self.pos.seg) else {
                    return Ok(Read::Closed);
                };
                if s.seq > self.pos.seg {
                    self.pos = Pos {
                        seg: s.seq,
                        offset: 0,
                    };
                    self.file = None;
                }
                let (path, seq, len, sealed) = (s.path.clone(), s.seq, s.len, s.sealed);
                if self.pos.offset >= len {
                    if sealed {
                        self.pos = Pos {
                            seg: seq + 1,
                            offset: 0,
                        };
                        self.file = None;
                        continue;
                    }
                    if st.closed {
                        return Ok(Read::Closed);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Read::Idle);
                    }
                    self.inner.data.wait_for(&mut st, deadline - now);
                    continue;
                }
                (path, seq, len, sealed)
            };
            let reader = match &mut self.file {
                Some((s, r)) if *s == seg && r.offset() == self.pos.offset => r,
                _ => {
                    let r = match SegmentReader::open(&path, self.pos.offset) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // Deleted under us by drop_oldest; the next turn moves on.
                            self.pos = Pos {
                                seg: seg + 1,
                                offset: 0,
                            };
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    &mut self.file.insert((seg, r)).1
                }
            };
            match reader.next(limit)? {
                Next::Record { record, end } => {
                    self.pos.offset = end;
                    self.last_seq = record.seq;
                    return Ok(Read::Record(record, self.pos));
                }
                Next::End => continue,
                Next::Corrupt(reason) => {
                    let offset = self.pos.offset;
                    // Damage found at start-up was reported then: step over it quietly.
                    if let Some(end) = self.inner.known_damage(seg, offset) {
                        reader.seek(end)?;
                        self.pos.offset = end;
                        continue;
                    }
                    match reader.resync(limit, self.last_seq)? {
                        Some(at) => {
                            let kind = scan::classify(reader, offset, at, reason, false)?;
                            self.inner.metrics.damaged(kind);
                            self.inner.remember_damage(seg, offset, at);
                            tracing::error!(segment = %path.display(), offset, bytes = at - offset, kind = kind.as_str(), reason, "damaged stretch in the buffer; skipping it");
                            self.pos.offset = at;
                        }
                        None => {
                            let kind = scan::classify(reader, offset, limit, reason, true)?;
                            self.inner.metrics.damaged(kind);
                            tracing::error!(segment = %path.display(), offset, bytes = limit - offset, kind = kind.as_str(), reason, "damaged end of a buffer segment; skipping the rest of it");
                            if sealed {
                                self.pos = Pos {
                                    seg: seg + 1,
                                    offset: 0,
                                };
                                self.file = None;
                            } else {
                                self.pos.offset = limit;
                                self.file = None;
                            }
                        }
                    }
                }
            }
        }
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
