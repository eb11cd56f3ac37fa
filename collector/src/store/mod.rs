//! Storage of logs and spans: time-partitioned tantivy indexes fed from the WAL by one
//! indexing thread per signal, with a commit policy by documents, bytes and time.

pub mod logs;
pub mod partition;
pub mod spans;
pub mod traces;
pub mod values;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_config::IndexConfig;
use tantivy::{IndexWriter, TantivyDocument};

use crate::batch::Batch;
use crate::ingest::Budget;
use crate::metrics::Metrics;
use crate::traces::tracker::CheckpointGate;
use crate::wal::{Checkpoints, Record};
use partition::{meta_for_writing, Partition, PartitionMeta, PartitionedIndex};

/// Turns batches into documents of one signal's index.
pub trait DocMapper: Send + 'static {
    /// Add the documents of `batch` to `writer`, widening `meta`'s time range; returns the
    /// number of documents and their approximate size in bytes.
    fn add(
        &mut self,
        batch: &Batch,
        writer: &IndexWriter<TantivyDocument>,
        meta: &mut PartitionMeta,
    ) -> tantivy::Result<(u64, u64)>;

    /// Hand the record on once applied (the span mapper feeds the trace tracker); `replay`
    /// is set for records replayed from the WAL at start-up.
    fn forward(&mut self, _lsn: u64, _replay: bool, _batch: Batch) {}
}

/// Shared pieces every indexer needs.
#[derive(Clone)]
pub struct IndexerContext {
    /// Where durable progress is published for WAL truncation.
    pub checkpoints: Arc<Checkpoints>,
    /// Released as records are applied.
    pub budget: Arc<Budget>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Commit policy and writer sizing.
    pub cfg: IndexConfig,
    /// Partitions older than this are removed.
    pub retention: Duration,
    /// When set, commits are published through it (the traces signal's checkpoint is
    /// shared with the trace tracker).
    pub gate: Option<Arc<CheckpointGate>>,
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

struct Active {
    part: Arc<Partition>,
    writer: IndexWriter<TantivyDocument>,
    meta: PartitionMeta,
    docs: u64,
    bytes: u64,
    since: Option<Instant>,
}

/// Start the indexing thread of `index`. Records sent to the returned channel must arrive
/// in WAL order; the thread commits on its policy and on channel close.
pub fn spawn_indexer<M: DocMapper>(
    index: Arc<PartitionedIndex>,
    mapper: M,
    ctx: IndexerContext,
) -> std::io::Result<(mpsc::Sender<Record>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Record>();
    let name = format!("lookout-index-{}", index.signal);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        Indexer {
            skip_through: index.checkpoint(),
            index,
            mapper,
            ctx,
            active: None,
            last_maintenance: None,
        }
        .run(rx)
    })?;
    Ok((tx, handle))
}

struct Indexer<M> {
    /// Records through this WAL position are already committed in the index (replay
    /// still forwards them).
    skip_through: u64,
    index: Arc<PartitionedIndex>,
    mapper: M,
    ctx: IndexerContext,
    active: Option<Active>,
    last_maintenance: Option<Instant>,
}

impl<M: DocMapper> Indexer<M> {
    fn run(mut self, rx: mpsc::Receiver<Record>) {
        let signal = self.index.signal;
        self.maintenance();
        loop {
            let timeout = match self.active.as_ref().and_then(|a| a.since) {
                Some(since) => self
                    .ctx
                    .cfg
                    .commit_interval
                    .get()
                    .saturating_sub(since.elapsed()),
                None => Duration::from_secs(5),
            };
            match rx.recv_timeout(timeout) {
                Ok(rec) => {
                    let charge = rec.charge;
                    self.apply(rec);
                    self.ctx.budget.release(charge);
                    self.ctx
                        .metrics
                        .receiver
                        .pending_bytes
                        .set(self.ctx.budget.used() as i64);
                    if self.active.as_ref().is_some_and(|a| {
                        a.docs >= self.ctx.cfg.commit_docs
                            || a.bytes >= self.ctx.cfg.commit_bytes.get()
                    }) {
                        self.commit();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.commit();
                    if let Some(a) = self.active.take() {
                        if let Err(e) = a.writer.wait_merging_threads() {
                            tracing::warn!(%signal, error = %e, "index merge did not finish cleanly");
                        }
                    }
                    tracing::debug!(%signal, "indexer stopped");
                    return;
                }
            }
            if self
                .active
                .as_ref()
                .and_then(|a| a.since)
                .is_some_and(|s| s.elapsed() >= self.ctx.cfg.commit_interval.get())
            {
                self.commit();
            }
            if self
                .last_maintenance
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.maintenance();
            }
        }
    }

    fn apply(&mut self, rec: Record) {
        let signal = self.index.signal;
        let replay = rec.batch.is_none();
        let lsn = rec.lsn;
        let batch = match rec.batch {
            Some(b) => b,
            None => match Batch::decode_protobuf(signal, &rec.payload) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(%signal, lsn = rec.lsn, error = %e, "undecodable WAL record; skipping it");
                    return;
                }
            },
        };
        if lsn <= self.skip_through {
            self.mapper.forward(lsn, replay, batch);
            return;
        }
        self.add(lsn, &batch);
        self.mapper.forward(lsn, replay, batch);
    }

    fn add(&mut self, lsn: u64, batch: &Batch) {
        let signal = self.index.signal;
        let key = self.index.key_for(unix_secs());
        if self.active.as_ref().is_some_and(|a| a.part.start != key) {
            // A new time partition: seal the old one.
            self.commit();
            self.active = None;
        }
        if self.active.is_none() {
            match self.index.writer(
                key,
                self.ctx.cfg.writer_memory.as_usize(),
                self.ctx.cfg.writer_threads,
            ) {
                Ok((part, writer)) => {
                    let meta = meta_for_writing(&part);
                    self.active = Some(Active {
                        part,
                        writer,
                        meta,
                        docs: 0,
                        bytes: 0,
                        since: None,
                    });
                }
                Err(e) => {
                    tracing::error!(%signal, error = %e, "cannot open index partition; the record stays in the WAL");
                    return;
                }
            }
        }
        let Some(a) = self.active.as_mut() else {
            return;
        };
        match self.mapper.add(batch, &a.writer, &mut a.meta) {
            Ok((docs, bytes)) => {
                a.docs += docs;
                a.bytes += bytes;
                a.meta.lsn = a.meta.lsn.max(lsn);
                a.since.get_or_insert_with(Instant::now);
                self.ctx
                    .metrics
                    .index_uncommitted_docs
                    .with_label_values(&[signal.as_str()])
                    .set(i64::try_from(a.docs).unwrap_or(i64::MAX));
            }
            Err(e) => {
                tracing::error!(%signal, lsn, error = %e, "indexing failed; the record stays in the WAL");
            }
        }
    }

    fn commit(&mut self) {
        let signal = self.index.signal;
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.since.is_none() {
            return;
        }
        let started = Instant::now();
        match self.index.commit(&a.part, &mut a.writer, a.meta) {
            Ok(()) => {
                match &self.ctx.gate {
                    Some(g) => g.spans_committed(a.meta.lsn, &self.ctx.checkpoints),
                    None => self.ctx.checkpoints.advance(signal, a.meta.lsn),
                }
                let m = &self.ctx.metrics;
                m.index_commits.with_label_values(&[signal.as_str()]).inc();
                m.index_uncommitted_docs
                    .with_label_values(&[signal.as_str()])
                    .set(0);
                tracing::debug!(%signal, docs = a.docs, elapsed_ms = started.elapsed().as_millis() as u64, "index commit");
                a.docs = 0;
                a.bytes = 0;
                a.since = None;
            }
            Err(e) => {
                tracing::error!(%signal, error = %e, "index commit failed; the WAL keeps the data");
            }
        }
    }

    fn maintenance(&mut self) {
        self.last_maintenance = Some(Instant::now());
        let signal = self.index.signal;
        let retention = i64::try_from(self.ctx.retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = unix_secs().saturating_sub(retention);
        let keep = self.active.as_ref().map(|a| a.part.start);
        let removed = self.index.remove_older_than(cutoff, keep);
        if removed > 0 {
            if keep.is_none() {
                self.active = None;
            }
            self.ctx
                .metrics
                .retention_removed_partitions
                .with_label_values(&[signal.as_str()])
                .inc_by(removed as u64);
        }
        let (docs, bytes) = self.index.stats();
        let m = &self.ctx.metrics;
        let l = [signal.as_str()];
        m.index_docs
            .with_label_values(&l)
            .set(i64::try_from(docs).unwrap_or(i64::MAX));
        m.index_bytes
            .with_label_values(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        m.index_partitions
            .with_label_values(&l)
            .set(self.index.len() as i64);
    }
}

/// Metrics are not indexed here: each record is applied to `store` (the OTLP metrics
/// exposed on `/metrics`), and kept in the WAL for `window` so a restart rebuilds the
/// recent state, then released.
pub fn spawn_metrics_window(
    window: Duration,
    ctx: IndexerContext,
    store: Arc<parking_lot::Mutex<crate::prom::MetricStore>>,
) -> std::io::Result<(mpsc::Sender<Record>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Record>();
    let handle = std::thread::Builder::new()
        .name("lookout-metrics".into())
        .spawn(move || {
            let mut held: std::collections::VecDeque<(u64, Instant)> = Default::default();
            let mut last_expiry = Instant::now();
            loop {
                let r = rx.recv_timeout(Duration::from_secs(1));
                match r {
                    Ok(rec) => {
                        apply_metrics_record(&rec, &store, &ctx.metrics);
                        held.push_back((rec.lsn, Instant::now()));
                        ctx.budget.release(rec.charge);
                        ctx.metrics
                            .receiver
                            .pending_bytes
                            .set(ctx.budget.used() as i64);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if last_expiry.elapsed() >= Duration::from_secs(1) {
                    last_expiry = Instant::now();
                    let mut s = store.lock();
                    let expired = s.expire(crate::ingest::now_unix_nano());
                    ctx.metrics.otlp_series_expired.inc_by(expired);
                    ctx.metrics
                        .otlp_series
                        .set(i64::try_from(s.series_count()).unwrap_or(i64::MAX));
                }
                while let Some((lsn, at)) = held.front().copied() {
                    if at.elapsed() < window {
                        break;
                    }
                    ctx.checkpoints.advance(crate::signal::Signal::Metrics, lsn);
                    held.pop_front();
                }
            }
        })?;
    Ok((tx, handle))
}

/// Apply one metrics record to the store (decoding its payload when replayed).
fn apply_metrics_record(
    rec: &Record,
    store: &parking_lot::Mutex<crate::prom::MetricStore>,
    metrics: &Metrics,
) {
    let now = crate::ingest::now_unix_nano();
    let report = match &rec.batch {
        Some(Batch::Metrics(req)) => store.lock().apply(req, now),
        Some(other) => {
            tracing::error!(lsn = rec.lsn, signal = %other.signal(), "non-metrics batch sent to the metrics thread; skipping it");
            return;
        }
        None => match Batch::decode_protobuf(crate::signal::Signal::Metrics, &rec.payload) {
            Ok(Batch::Metrics(req)) => store.lock().replay(&req, now),
            Ok(_) => return,
            Err(e) => {
                tracing::error!(lsn = rec.lsn, error = %e, "undecodable metrics WAL record; skipping it");
                return;
            }
        },
    };
    report.publish(metrics);
    let series = store.lock().series_count();
    metrics
        .otlp_series
        .set(i64::try_from(series).unwrap_or(i64::MAX));
}
