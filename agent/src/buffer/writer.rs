//! The writer thread: group commit of appends, segment roll-over and the fsync policy.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_config::FsyncPolicy;
use lookout_ingest::seglog::{self, Wait};

use super::error::BufferError;
use super::format::{self, FRAMING};
use super::state::{Append, Inner, Seg};
use crate::sink::SinkError;

/// Most bytes written in one group commit.
const MAX_GROUP_BYTES: usize = 8 << 20;

/// The buffer's writer thread: group commit of appends to the open segment, rolling to a
/// new segment when it is full, and the fsync policy.
pub(super) struct BufferWriter {
    pub inner: Arc<Inner>,
    pub file: File,
    pub next_record_seq: u64,
    pub buf: Vec<u8>,
    /// Written since the last fsync.
    pub dirty: bool,
    pub last_sync: Instant,
}

impl BufferWriter {
    pub fn run(mut self, rx: mpsc::Receiver<Append>) {
        let tick = match self.inner.opts.fsync {
            FsyncPolicy::Interval => self.inner.opts.fsync_interval,
            _ => Duration::from_secs(3600),
        };
        loop {
            let mut group = Vec::new();
            match seglog::next_group(&rx, tick, MAX_GROUP_BYTES, |a| a.size as usize, &mut group) {
                Wait::Group => self.commit(group),
                Wait::Idle => self.maybe_sync(),
                Wait::Closed => break,
            }
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
        let (file, path) = seglog::create_segment(&FRAMING, &self.inner.dir, seq + 1)?;
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
