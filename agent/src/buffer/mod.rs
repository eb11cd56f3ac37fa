//! The agent's disk buffer: everything received is appended here before it is
//! acknowledged, read back in order by the shipper, and deleted once the collector has
//! acknowledged it.
//!
//! Segments of checksummed records ([`format`](mod@format), a [`lookout_ingest::seglog`] framing) are written by one thread that batches
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

mod ack;
mod error;
pub mod format;
mod metrics;
mod options;
mod pos;
mod reader;
mod recover;
pub mod scan;
mod state;
mod writer;

/// Subdirectory of the agent's `buffer_dir` that holds the segments and `ack.pos`.
pub const SUBDIR: &str = "buffer";

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use lookout_config::WhenFull;
use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::sink::{Entry, Sink, SinkError};
use ack::{decode_delivered, encode_delivered, read_ack, write_ack, ACK_FILE, DELIVERED_FILE};
pub use ack::{read_ack_file, Delivered};
use error::io_err;
pub use error::BufferError;
use format::FRAMING;
use lookout_ingest::fsutil;
use lookout_ingest::seglog::{self, SeqCursor};
pub use metrics::BufferMetrics;
pub use options::BufferOptions;
pub use pos::Pos;
pub use reader::{Read, Reader};
use recover::Recover;
pub use recover::Recovery;
use state::{Append, Inner, Seg, State};
use writer::BufferWriter;

/// The disk buffer. Cloning shares it.
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
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

#[cfg(test)]
mod tests;
