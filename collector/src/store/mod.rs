//! Storage of logs and spans: time-partitioned tantivy indexes fed from the WAL by one
//! indexing thread per signal, with a commit policy by documents, bytes and time.

pub mod logs;
pub mod partition;
pub mod spans;
pub mod traces;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lookout_config::IndexConfig;
use tantivy::{IndexWriter, TantivyDocument};

use crate::metrics::Metrics;
use crate::traces::tracker::CheckpointGate;
use crate::wal::{Checkpoints, Record};
use lookout_ingest::batch::Batch;
use lookout_ingest::Budget;
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
    /// Records in this writer since its last commit. A failed commit (a full disk) loses
    /// them from the writer, so they are kept until a commit succeeds and then written
    /// again to the next writer; the WAL cannot be trimmed past them meanwhile.
    pending: Vec<Kept>,
}

/// A record in a writer, or waiting for one after a failure: its payload when the record
/// came with one (replay), else where to read it back from the WAL.
struct Kept {
    lsn: u64,
    payload: bytes::Bytes,
    pos: crate::wal::WalPos,
    log: Option<Arc<crate::wal::Quarantine>>,
}

impl Kept {
    fn bytes(&self) -> std::io::Result<bytes::Bytes> {
        match &self.log {
            Some(log) if self.payload.is_empty() => {
                log.read_back(self.pos, self.lsn).map(bytes::Bytes::from)
            }
            _ => Ok(self.payload.clone()),
        }
    }
}

/// Longest wait before retrying a failed index write, so ingest resumes within seconds
/// of the disk having room again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(8);

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
            redo: Vec::new(),
            held: 0,
            retry_at: None,
            failures: 0,
            deferred_lsn: 0,
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
    /// Records of a failed writer or commit, written first into the next writer.
    redo: Vec<Kept>,
    /// Bytes of `redo` (and of those records once back in a writer) charged to the
    /// ingest budget until they are committed, so a long failure stops admission instead
    /// of growing memory.
    held: u64,
    /// No writer is opened before this, after a failure.
    retry_at: Option<Instant>,
    /// Failures in a row.
    failures: u32,
    /// Highest LSN skipped (poison) while records wait in `redo`; published with them.
    deferred_lsn: u64,
}

impl<M: DocMapper> Indexer<M> {
    fn run(mut self, rx: mpsc::Receiver<Record>) {
        let signal = self.index.signal;
        self.maintenance();
        loop {
            let timeout = match (self.active.as_ref().and_then(|a| a.since), self.retry_at) {
                (Some(since), _) => self
                    .ctx
                    .cfg
                    .commit_interval
                    .get()
                    .saturating_sub(since.elapsed()),
                (None, Some(at)) => at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
                (None, None) => Duration::from_secs(5),
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
                    self.retry();
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
            self.retry();
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

    /// Apply one record. A poison record — one that cannot be decoded, or whose
    /// application panics — is copied to the quarantine directory and skipped, so it
    /// neither stops this thread nor blocks replay; its LSN counts as done.
    fn apply(&mut self, mut rec: Record) {
        let signal = self.index.signal;
        let replay = rec.batch.is_none();
        let lsn = rec.lsn;
        let batch = match rec.batch.take() {
            Some(b) => b,
            None => match Batch::decode_protobuf(signal, &rec.payload) {
                Ok(b) => b,
                Err(e) => {
                    rec.quarantine(&format!("cannot decode the {signal} payload: {e}"));
                    self.skip(lsn);
                    return;
                }
            },
        };
        let kept = Kept {
            lsn,
            payload: rec.payload.clone(),
            pos: rec.pos,
            log: rec.quarantine.clone(),
        };
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if lsn > self.skip_through {
                self.add(&batch, kept);
            }
            self.mapper.forward(lsn, replay, batch);
        }));
        if let Err(panic) = applied {
            rec.quarantine(&format!(
                "applying it to the {signal} index panicked: {}",
                lookout_ingest::process::panic_message(panic.as_ref())
            ));
            self.skip(lsn);
        }
    }

    /// A poison record at `lsn` was skipped: it is done as far as this store goes, so the
    /// checkpoint may pass it (with the next commit, or now when nothing is pending).
    fn skip(&mut self, lsn: u64) {
        if lsn <= self.skip_through {
            return;
        }
        match self.active.as_mut() {
            Some(a) if a.since.is_some() => a.meta.lsn = a.meta.lsn.max(lsn),
            _ if !self.redo.is_empty() => self.deferred_lsn = self.deferred_lsn.max(lsn),
            _ => match &self.ctx.gate {
                Some(g) => g.spans_committed(lsn, &self.ctx.checkpoints),
                None => self.ctx.checkpoints.advance(self.index.signal, lsn),
            },
        }
    }

    fn add(&mut self, batch: &Batch, kept: Kept) {
        let signal = self.index.signal;
        let lsn = kept.lsn;
        let key = self.index.key_for(unix_secs());
        if self.active.as_ref().is_some_and(|a| a.part.start != key) {
            // A new time partition: seal the old one (on failure it is gone already and
            // its records wait in `redo`).
            self.commit();
            self.active = None;
        }
        if !self.open_writer(key) {
            self.hold(kept);
            return;
        }
        let Some(a) = self.active.as_mut() else {
            self.hold(kept);
            return;
        };
        match self.mapper.add(batch, &a.writer, &mut a.meta) {
            Ok((docs, bytes)) => {
                a.docs += docs;
                a.bytes += bytes;
                a.meta.lsn = a.meta.lsn.max(lsn);
                a.since.get_or_insert_with(Instant::now);
                a.pending.push(kept);
                self.ctx
                    .metrics
                    .index_uncommitted_docs
                    .with_label_values(&[signal.as_str()])
                    .set(i64::try_from(a.docs).unwrap_or(i64::MAX));
            }
            Err(e) => {
                self.fail("indexing", &e);
                self.hold(kept);
            }
        }
    }

    /// Keep a record that is in no writer for the next one.
    fn hold(&mut self, kept: Kept) {
        self.redo.push(kept);
        self.charge_held();
    }

    /// Charge the ingest budget with the bytes of `redo` (records leave it only into a
    /// writer, and are released with their commit).
    fn charge_held(&mut self) {
        let now: u64 = self.redo.iter().map(|k| k.payload.len() as u64).sum();
        if now > self.held {
            self.ctx.budget.take(now - self.held);
            self.held = now;
        }
    }

    /// Make sure a writer is open for partition `key`, with the records of failed writes
    /// in it first; `false` while waiting out a failure or when it cannot be opened.
    fn open_writer(&mut self, key: i64) -> bool {
        if self.active.is_some() {
            return true;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let signal = self.index.signal;
        let (part, writer) = match self.index.writer(
            key,
            self.ctx.cfg.writer_memory.as_usize(),
            self.ctx.cfg.writer_threads,
        ) {
            Ok(w) => w,
            Err(e) => {
                self.fail("opening a partition", &e);
                return false;
            }
        };
        let meta = meta_for_writing(&part);
        let mut a = Active {
            part,
            writer,
            meta,
            docs: 0,
            bytes: 0,
            since: None,
            pending: Vec::new(),
        };
        a.meta.lsn = a.meta.lsn.max(self.deferred_lsn);
        let redo = std::mem::take(&mut self.redo);
        let mut rest = redo.into_iter();
        for kept in rest.by_ref() {
            let batch = match kept.bytes() {
                // These decoded before they first reached a writer.
                Ok(bytes) => match Batch::decode_protobuf(signal, &bytes) {
                    Ok(b) => b,
                    Err(_) => continue,
                },
                Err(e) => {
                    // Its segment was readable moments ago: this is a failing disk.
                    tracing::error!(%signal, lsn = kept.lsn, segment = kept.pos.segment, offset = kept.pos.offset, error = %e, "cannot read a record back from the write-ahead log to index it again; it is missing from the index");
                    continue;
                }
            };
            match self.mapper.add(&batch, &a.writer, &mut a.meta) {
                Ok((docs, bytes)) => {
                    a.docs += docs;
                    a.bytes += bytes;
                    a.meta.lsn = a.meta.lsn.max(kept.lsn);
                    a.since.get_or_insert_with(Instant::now);
                    a.pending.push(kept);
                }
                Err(e) => {
                    a.pending.push(kept);
                    self.active = Some(a);
                    self.fail("indexing", &e);
                    self.redo.extend(rest);
                    return false;
                }
            }
        }
        self.deferred_lsn = 0;
        self.active = Some(a);
        true
    }

    /// After a failure, once its wait is over, write the kept records to a new writer and
    /// commit them.
    fn retry(&mut self) {
        if self.active.is_some() || self.redo.is_empty() {
            return;
        }
        if self.open_writer(self.index.key_for(unix_secs())) {
            self.commit();
        }
    }

    /// The writer failed while `what`: drop it (its uncommitted records go to `redo`) and
    /// wait before the next try, doubling up to [`MAX_RETRY_WAIT`].
    fn fail(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let signal = self.index.signal;
        if let Some(a) = self.active.take() {
            let mut pending = a.pending;
            pending.append(&mut self.redo);
            self.redo = pending;
            // Dropping the writer discards what it had not committed.
            drop(a.writer);
        }
        self.charge_held();
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(500)
            .saturating_mul(1u32 << self.failures.min(5).saturating_sub(1))
            .min(MAX_RETRY_WAIT);
        self.retry_at = Some(Instant::now() + wait);
        self.ctx
            .metrics
            .index_failures
            .with_label_values(&[signal.as_str()])
            .inc();
        self.ctx
            .metrics
            .index_uncommitted_docs
            .with_label_values(&[signal.as_str()])
            .set(0);
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::error!(%signal, error = %e, failures = self.failures, kept_records = self.redo.len(), retry_in_ms = wait.as_millis() as u64, "index write failed while {what}; the records are kept (and stay in the WAL) and written again after the wait");
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
                a.pending.clear();
                if self.failures > 0 {
                    tracing::info!(%signal, failures = self.failures, "index writes work again");
                }
                self.failures = 0;
                self.retry_at = None;
                self.ctx.budget.release(self.held);
                self.held = 0;
            }
            Err(e) => self.fail("committing", &e),
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
        self.index.close_idle_readers(partition::READER_IDLE, keep);
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
        let name = match signal {
            lookout_ingest::signal::Signal::Traces => "spans",
            other => other.as_str(),
        };
        m.index_open_readers
            .with_label_values(&[name])
            .set(self.index.open_readers() as i64);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::path::Path;

    use bytes::Bytes;
    use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use lookout_proto::otlp::common::v1::{any_value, AnyValue};
    use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    use super::logs::{LogFields, LogMapper};
    use super::*;
    use crate::wal::{Wal, WalMetrics, WalOptions, QUARANTINE_DIR};
    use lookout_ingest::signal::Signal;

    fn logs(body: &str) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(body.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// The log mapper, except that a log whose body is `boom` makes it panic (a bug
    /// that some data triggers).
    struct Touchy(LogMapper);

    impl DocMapper for Touchy {
        fn add(
            &mut self,
            batch: &Batch,
            writer: &IndexWriter<TantivyDocument>,
            meta: &mut PartitionMeta,
        ) -> tantivy::Result<(u64, u64)> {
            if let Batch::Logs(r) = batch {
                let body = &r.resource_logs[0].scope_logs[0].log_records[0].body;
                if let Some(AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                }) = body
                {
                    if s == "boom" {
                        panic!("the mapper cannot handle this record");
                    }
                }
            }
            self.0.add(batch, writer, meta)
        }
    }

    fn wal_opts() -> WalOptions {
        WalOptions {
            segment_size: 1 << 20,
            fsync: false,
        }
    }

    fn metric(m: &Metrics, name: &str) -> u64 {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|x| x.get_counter().value() as u64)
            .sum()
    }

    fn quarantined(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join(QUARANTINE_DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Poison records — a payload prost cannot decode, and one whose indexing panics —
    /// are quarantined (one file each, named by WAL position) and counted, on replay and
    /// live; the records around them are indexed, and the checkpoint passes them so the
    /// WAL can be truncated.
    #[tokio::test]
    async fn poison_records_are_quarantined_and_replay_goes_on() {
        let root = tempfile::tempdir().unwrap();
        let wal_dir = root.path().join("wal");
        let good1 = Bytes::from(logs("one").encode_to_vec());
        let garbage = Bytes::from_static(&[0xff; 8]);
        let boom = Bytes::from(logs("boom").encode_to_vec());
        let good2 = Bytes::from(logs("two").encode_to_vec());
        {
            let (wal, h) = Wal::open(
                &wal_dir,
                wal_opts(),
                Arc::new(Checkpoints::default()),
                WalMetrics::register(&prometheus::Registry::new()).unwrap(),
                Box::new(|_| {}),
            )
            .unwrap();
            for p in [&good1, &garbage, &boom, &good2] {
                wal.append(Signal::Logs, p.clone(), None, 0).await.unwrap();
            }
            drop(wal);
            h.join().unwrap();
        }

        let metrics = Arc::new(Metrics::new().unwrap());
        let checkpoints = Arc::new(Checkpoints::default());
        let fields = LogFields::new();
        let index = Arc::new(
            PartitionedIndex::open(
                &root.path().join("logs"),
                Signal::Logs,
                fields.schema.clone(),
                3600,
            )
            .unwrap(),
        );
        let ctx = IndexerContext {
            checkpoints: checkpoints.clone(),
            budget: Arc::new(Budget::new(1 << 30)),
            metrics: metrics.clone(),
            cfg: IndexConfig::default(),
            retention: Duration::from_secs(7 * 86400),
            gate: None,
        };
        let (tx, indexer) =
            spawn_indexer(index.clone(), Touchy(LogMapper::new(fields)), ctx).unwrap();
        let (wal, h) = Wal::open(
            &wal_dir,
            wal_opts(),
            checkpoints.clone(),
            WalMetrics::register(&metrics.registry).unwrap(),
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
        // Live: a decoded batch whose indexing panics; its bytes are read back from the WAL.
        let lsn = wal
            .append(
                Signal::Logs,
                boom.clone(),
                Some(Batch::Logs(logs("boom"))),
                0,
            )
            .await
            .unwrap();
        assert_eq!(lsn, 5);
        drop(wal);
        h.join().unwrap();
        indexer.join().unwrap();

        let files = quarantined(root.path());
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names[0].contains("-lsn00000000000000000002.logs"),
            "{names:?}"
        );
        assert!(
            names[1].contains("-lsn00000000000000000003.logs"),
            "{names:?}"
        );
        assert!(
            names[2].starts_with("00000000000000000002-0000000000-lsn00000000000000000005.logs"),
            "{names:?}"
        );
        assert_eq!(files[0].1, garbage);
        assert_eq!(files[1].1, boom);
        assert_eq!(files[2].1, boom);
        assert_eq!(metric(&metrics, "lookout_wal_quarantined_records_total"), 3);
        // The good records are indexed, and the checkpoint covers the poison ones.
        let docs: u64 = index
            .all()
            .iter()
            .map(|p| p.searcher().unwrap().num_docs())
            .sum();
        assert_eq!(docs, 2);
        assert_eq!(checkpoints.get(Signal::Logs), 5);
    }
}
