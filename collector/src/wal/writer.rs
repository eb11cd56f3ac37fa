//! The writer thread: group commit of appends, dispatch to the stores, segment rotation
//! and deletion of durable segments.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lookout_ingest::batch::Batch;
use lookout_ingest::seglog::{self, Wait};
use lookout_ingest::signal::Signal;
use lookout_ingest::Charge;
use tokio::sync::oneshot;

use super::checkpoints::Checkpoints;
use super::error::{io_err, WalError};
use super::metrics::WalMetrics;
use super::origins::{Origin, Origins, ORIGIN};
use super::record::{Dispatch, Record, WalPos, FRAMING};
use super::room::Room;

/// Options of the WAL.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Start a new segment past this size.
    pub segment_size: u64,
    /// `fdatasync` before acknowledging.
    pub fsync: bool,
    /// Refuse a group while writing it would leave less than this free on the log's file
    /// system (`wal.reserve`).
    pub reserve: u64,
}

/// Most bytes written in one group commit.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// How often durable segments are looked for (and at every rotation).
const TRUNCATE_EVERY: Duration = Duration::from_secs(5);
/// How often while batches are refused for want of space.
const TRUNCATE_EVERY_WHILE_REFUSING: Duration = Duration::from_millis(250);

/// One append waiting for the writer.
pub(super) struct Append {
    pub signal: Signal,
    pub payload: Bytes,
    pub batch: Option<Batch>,
    pub charge: Option<Charge>,
    /// The stream message it was consumed from, in cluster mode.
    pub origin: Option<Origin>,
    pub done: oneshot::Sender<Result<u64, Arc<WalError>>>,
}

/// A segment of the log.
pub(super) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    pub len: u64,
    /// Highest LSN of each signal in this segment.
    pub max_lsn: [u64; 3],
}

/// Create segment `seq` in `dir`.
pub(super) fn create_segment(dir: &Path, seq: u64) -> Result<(Segment, File), WalError> {
    let (file, path) = seglog::create_segment(&FRAMING, dir, seq)?;
    let segment = Segment {
        seq,
        path,
        len: 0,
        max_lsn: [0; 3],
    };
    Ok((segment, file))
}

/// Append the record `lsn | tag | payload` to `buf`, framed.
pub(super) fn encode_record(buf: &mut Vec<u8>, lsn: u64, tag: u8, payload: &[u8]) {
    encode_record_parts(buf, lsn, tag, &[payload]);
}

/// [`encode_record`] of a payload in parts.
fn encode_record_parts(buf: &mut Vec<u8>, lsn: u64, tag: u8, parts: &[&[u8]]) {
    let start = FRAMING.begin(buf);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.push(tag);
    for p in parts {
        buf.extend_from_slice(p);
    }
    FRAMING.finish(buf, start);
}

/// Answer every append of `group` with `e`; their charges go back with them.
fn refuse(group: &mut Vec<Append>, e: &Arc<WalError>) {
    for a in group.drain(..) {
        let _ = a.done.send(Err(e.clone()));
    }
}

/// The WAL's writer thread: owns the open segment and the list of closed ones.
pub(super) struct WalWriter {
    pub dir: PathBuf,
    pub opts: WalOptions,
    /// Closed segments, oldest first.
    pub segments: Vec<Segment>,
    pub current: (Segment, File),
    pub next_lsn: u64,
    pub checkpoints: Arc<Checkpoints>,
    pub metrics: WalMetrics,
    pub dispatch: Dispatch,
    pub last_truncate: Instant,
    /// A write failed and the open segment may hold part of it past `current.0.len`:
    /// cut it off before the next write.
    pub torn: bool,
    /// Free space of the log's file system, held against `wal.reserve`.
    pub room: Room,
    /// Highest stream sequence written, per partition (cluster mode).
    pub origins: Arc<Origins>,
}

impl WalWriter {
    pub fn run(&mut self, rx: mpsc::Receiver<Append>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut group: Vec<Append> = Vec::new();
        loop {
            let tick = if self.room.refusing() {
                TRUNCATE_EVERY_WHILE_REFUSING
            } else {
                Duration::from_secs(1)
            };
            match seglog::next_group(&rx, tick, MAX_GROUP_BYTES, |a| a.payload.len(), &mut group) {
                Wait::Group => {}
                Wait::Idle => {
                    self.maybe_truncate(false);
                    self.room.refresh();
                    continue;
                }
                Wait::Closed => break,
            }
            self.commit(&mut group, &mut buf);
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

    /// Write `group` as one write (and fsync), then hand its records to the stores and
    /// answer each append; on failure, or when writing it would eat into `wal.reserve`,
    /// answer each with the error.
    pub(super) fn commit(&mut self, group: &mut Vec<Append>, buf: &mut Vec<u8>) {
        buf.clear();
        if self.next_lsn.checked_add(group.len() as u64).is_none() {
            let e = Arc::new(WalError::Exhausted(self.next_lsn));
            tracing::error!(error = %e, "refusing the batch");
            refuse(group, &e);
            return;
        }
        let first_lsn = self.next_lsn;
        let base = self.current.0.len;
        let mut offsets = Vec::with_capacity(group.len());
        for (i, a) in group.iter().enumerate() {
            offsets.push(base + buf.len() as u64);
            let lsn = first_lsn + i as u64;
            match a.origin {
                None => encode_record(buf, lsn, a.signal.tag(), &a.payload),
                Some(o) => encode_record_parts(
                    buf,
                    lsn,
                    ORIGIN | a.signal.tag(),
                    &[&o.encode(), &a.payload],
                ),
            }
        }
        if let Err(e) = self.room.admit(buf.len() as u64, group.len() as u64) {
            // Logged by `room` when refusals start, not per batch.
            refuse(group, &Arc::new(e));
            return;
        }
        if let Err(e) = self.cut_failed_write().and_then(|()| self.write_group(buf)) {
            tracing::error!(error = %e, "write-ahead log append failed; refusing the batch");
            // Leave no partial record behind: the LSNs of the refused records are used
            // again, and must not also be in the log with the refused data. The next
            // group goes to the same segment, after the last record acknowledged.
            self.torn = true;
            if let Err(e) = self.cut_failed_write() {
                tracing::error!(segment = %self.current.0.path.display(), error = %e, "cannot cut a failed write off the write-ahead log; it is cut before the next write, or skipped as damage at start-up");
            }
            refuse(group, &Arc::new(e));
            return;
        }
        self.room.wrote(buf.len() as u64);
        self.next_lsn += group.len() as u64;
        self.metrics.records.inc_by(group.len() as u64);
        let segment = self.current.0.seq;
        for ((i, a), offset) in group.drain(..).enumerate().zip(offsets) {
            let lsn = first_lsn + i as u64;
            let idx = a.signal.index();
            self.current.0.max_lsn[idx] = self.current.0.max_lsn[idx].max(lsn);
            if let Some(o) = a.origin {
                self.origins.note(o);
            }
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
                pos: WalPos { segment, offset },
            });
            let _ = a.done.send(Ok(lsn));
        }
    }

    fn write_group(&mut self, buf: &[u8]) -> Result<(), WalError> {
        let path = self.current.0.path.clone();
        self.current.1.write_all(buf).map_err(io_err(&path))?;
        if self.opts.fsync {
            let t = Instant::now();
            self.current.1.sync_data().map_err(io_err(&path))?;
            self.metrics
                .fsync_seconds
                .observe(t.elapsed().as_secs_f64());
        }
        self.current.0.len += buf.len() as u64;
        self.metrics.commits.inc();
        self.metrics.bytes.add(buf.len() as i64);
        Ok(())
    }

    /// After a failed write, cut the open segment back to its last acknowledged record
    /// (a failed write may have left part of a group behind); nothing to do otherwise.
    fn cut_failed_write(&mut self) -> Result<(), WalError> {
        if self.torn {
            let (segment, file) = &self.current;
            file.set_len(segment.len).map_err(io_err(&segment.path))?;
            self.torn = false;
        }
        Ok(())
    }

    /// Close the open segment and start the next one. On failure the open segment stays
    /// open, and whole: it is closed only once durable, and only for a new one.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.current
            .1
            .sync_all()
            .map_err(io_err(&self.current.0.path))?;
        let next = create_segment(&self.dir, self.current.0.seq + 1)?;
        let old = std::mem::replace(&mut self.current, next);
        self.segments.push(old.0);
        self.update_gauges();
        self.maybe_truncate(true);
        Ok(())
    }

    /// Delete the oldest closed segments whose every record is durable in its store. Only
    /// the oldest: the segments left stay contiguous, so a missing one is damage.
    fn maybe_truncate(&mut self, force: bool) {
        // While the reserve refuses batches, deleted segments are what lets them in again.
        let every = if self.room.refusing() {
            TRUNCATE_EVERY_WHILE_REFUSING
        } else {
            TRUNCATE_EVERY
        };
        if !force && self.last_truncate.elapsed() < every {
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

    pub fn update_gauges(&self) {
        let bytes: u64 = self.segments.iter().map(|s| s.len).sum::<u64>() + self.current.0.len;
        self.metrics
            .bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics.segments.set(self.segments.len() as i64 + 1);
    }
}
