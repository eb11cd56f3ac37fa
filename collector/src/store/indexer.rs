//! The indexing thread of one index fed from the WAL.
//!
//! Records arrive in log order; replayed ones are decoded here (live ones come decoded).
//! A [`DocMapper`] turns each batch into documents, written through the
//! [`PartitionWriter`]; then the batch is handed on (the span index feeds the trace
//! tracker). A poison record (one that cannot be decoded, or whose mapping panics) is
//! copied to the quarantine directory and skipped: it neither stops the thread nor blocks
//! replay, and its LSN counts as done.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout_ingest::clock::now_unix_secs;
use lookout_ingest::{Batch, Budget, Signal};

use super::backlog::Backlog;
use super::metrics::IndexMetrics;
use super::progress::Progress;
use super::writer::{
    CommitPolicy, IndexLabels, ItemWriter, PartitionWriter, Partitions, WriteError, WriterSetup,
    Written,
};
use crate::wal::{Quarantine, Record, RecordReader, WalPos};

/// Turns batches into what one signal's store holds, written with `P`'s writer.
pub trait DocMapper<P: Partitions>: Send + 'static {
    /// Add what `batch` holds to `writer`; returns what was added.
    fn add(&mut self, batch: &Batch, writer: &mut P::Writer) -> Result<Written, WriteError>;

    /// Hand the record on once applied (the span mapper feeds the trace tracker); `replay`
    /// is set for records replayed from the WAL at start-up.
    fn forward(&mut self, _lsn: u64, _replay: bool, _batch: Batch) {}
}

/// What every indexing thread needs.
#[derive(Clone)]
pub struct IndexerContext {
    /// The ingest budget: records kept after a failed write stay charged to it.
    pub budget: Arc<Budget>,
    /// Where poison records go.
    pub quarantine: Arc<Quarantine>,
    /// Reads back a record to write it again after a failure.
    pub records: RecordReader,
    /// Index self-metrics.
    pub index_metrics: IndexMetrics,
    /// Partitions older than this are removed.
    pub retention: Duration,
    /// Counts the records applied.
    pub backlog: Arc<Backlog>,
}

/// A WAL record written into an index, kept until its commit: its payload when the record
/// came with one (replay), else where to read it back from the WAL.
pub struct IndexedRecord {
    lsn: u64,
    payload: bytes::Bytes,
    pos: WalPos,
}

/// Writes records' documents with a [`DocMapper`]: a record arriving now from its decoded
/// batch, a record written again after a failure from its bytes.
struct RecordWriter<M> {
    mapper: M,
    signal: Signal,
    records: RecordReader,
    /// The decoded batch of the record being applied, with its LSN.
    fresh: Option<(u64, Batch)>,
}

impl<M> RecordWriter<M> {
    fn bytes_of(&self, record: &IndexedRecord) -> std::io::Result<bytes::Bytes> {
        if record.payload.is_empty() {
            self.records
                .read_back(record.pos, record.lsn)
                .map(bytes::Bytes::from)
        } else {
            Ok(record.payload.clone())
        }
    }
}

impl<P: Partitions, M: DocMapper<P>> ItemWriter<P, IndexedRecord> for RecordWriter<M> {
    fn write(
        &mut self,
        w: &mut P::Writer,
        record: &mut IndexedRecord,
    ) -> Result<Written, WriteError> {
        let decoded;
        let batch = match &self.fresh {
            Some((lsn, batch)) if *lsn == record.lsn => batch,
            _ => {
                let bytes = self.bytes_of(record).map_err(|e| {
                    // Its segment was readable moments ago: this is a failing disk.
                    tracing::error!(signal = %self.signal, lsn = record.lsn, segment = record.pos.segment, offset = record.pos.offset, error = %e, "cannot read a record back from the write-ahead log to index it again; it is missing from the index");
                    WriteError::Dropped
                })?;
                // These decoded before they first reached a writer.
                decoded =
                    Batch::decode_protobuf(self.signal, &bytes).map_err(|_| WriteError::Dropped)?;
                &decoded
            }
        };
        self.mapper.add(batch, w)
    }

    fn held_bytes(&self, record: &IndexedRecord) -> u64 {
        record.payload.len() as u64
    }
}

/// What an indexing thread writes, and how.
pub struct IndexerSetup<P, M> {
    /// The records' signal.
    pub signal: Signal,
    /// The store.
    pub index: Arc<P>,
    /// Its metric labels.
    pub labels: IndexLabels,
    /// Turns batches into its documents.
    pub mapper: M,
    /// The index's durable progress.
    pub progress: Progress,
    /// When to commit.
    pub policy: CommitPolicy,
}

/// Start the indexing thread of `setup.index`. Records sent to the returned channel must
/// arrive in WAL order; the thread commits on its policy and on channel close.
pub fn spawn_indexer<P: Partitions, M: DocMapper<P>>(
    setup: IndexerSetup<P, M>,
    ctx: IndexerContext,
) -> std::io::Result<(mpsc::Sender<Record>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Record>();
    let signal = setup.signal;
    let name = format!("lookout-index-{signal}");
    let skip_through = setup.index.checkpoint();
    let writer = PartitionWriter::new(WriterSetup {
        store: setup.index,
        labels: setup.labels,
        metrics: ctx.index_metrics.clone(),
        policy: setup.policy,
        progress: setup.progress,
        retention: ctx.retention,
        held: Some(ctx.budget.charge(0)),
    });
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        Indexer {
            skip_through,
            signal,
            writer,
            records: RecordWriter {
                mapper: setup.mapper,
                signal,
                records: ctx.records.clone(),
                fresh: None,
            },
            ctx,
        }
        .run(rx)
    })?;
    Ok((tx, handle))
}

struct Indexer<P: Partitions, M> {
    /// Records through this WAL position are already committed in the index (replay
    /// still forwards them).
    skip_through: u64,
    signal: Signal,
    writer: PartitionWriter<P, IndexedRecord>,
    records: RecordWriter<M>,
    ctx: IndexerContext,
}

impl<P: Partitions, M: DocMapper<P>> Indexer<P, M> {
    fn run(mut self, rx: mpsc::Receiver<Record>) {
        self.writer.upkeep(now_unix_secs());
        loop {
            let timeout = self.writer.next_tick().map_or(Duration::from_secs(5), |t| {
                t.saturating_duration_since(Instant::now())
            });
            match rx.recv_timeout(timeout) {
                // The record's budget charge goes with it once applied.
                Ok(rec) => {
                    self.apply(rec);
                    self.ctx.backlog.applied(self.signal);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.writer.close(now_unix_secs(), 0, &mut self.records);
                    tracing::debug!(signal = %self.signal, "indexer stopped");
                    return;
                }
            }
            self.writer.tick(now_unix_secs(), &mut self.records);
        }
    }

    /// Apply one record; a poison record is quarantined and skipped.
    fn apply(&mut self, mut rec: Record) {
        let signal = self.signal;
        let replay = rec.batch.is_none();
        let lsn = rec.lsn;
        let batch = match rec.batch.take() {
            Some(b) => b,
            None => match Batch::decode_protobuf(signal, &rec.payload) {
                Ok(b) => b,
                Err(e) => {
                    self.ctx
                        .quarantine
                        .set_aside(&rec, &format!("cannot decode the {signal} payload: {e}"));
                    self.skip(lsn);
                    return;
                }
            },
        };
        let record = IndexedRecord {
            lsn,
            payload: rec.payload.clone(),
            pos: rec.pos,
        };
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.records.fresh = Some((lsn, batch));
            if lsn > self.skip_through {
                self.writer
                    .write(now_unix_secs(), record, lsn, &mut self.records);
            }
            if let Some((_, batch)) = self.records.fresh.take() {
                self.records.mapper.forward(lsn, replay, batch);
            }
        }));
        if let Err(panic) = applied {
            self.records.fresh = None;
            let reason = format!(
                "applying it to the {signal} index panicked: {}",
                lookout_ingest::process::panic_message(panic.as_ref())
            );
            self.ctx.quarantine.set_aside(&rec, &reason);
            self.skip(lsn);
        }
    }

    /// A poison record at `lsn` was skipped: it is done as far as this index goes.
    fn skip(&mut self, lsn: u64) {
        if lsn > self.skip_through {
            self.writer.skip(lsn);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use bytes::Bytes;
    use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use lookout_proto::otlp::common::v1::{any_value, AnyValue};
    use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    use lookout_config::IndexConfig;

    use super::*;
    use crate::store::logs::LogStore;
    use crate::store::partition::{PartitionedIndex, TantivyWriter, WriterOptions};
    use crate::testing::{counter, quarantined};
    use crate::wal::{Checkpoints, Wal, WalMetrics, WalOptions};

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
    struct Touchy(crate::store::logs::LogMapper);

    impl DocMapper<PartitionedIndex> for Touchy {
        fn add(
            &mut self,
            batch: &Batch,
            writer: &mut TantivyWriter,
        ) -> Result<Written, WriteError> {
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
            self.0.add(batch, writer)
        }
    }

    fn wal_opts() -> WalOptions {
        WalOptions {
            segment_size: 1 << 20,
            fsync: false,
            reserve: 0,
        }
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
                wal.append(Signal::Logs, p.clone(), None, None)
                    .await
                    .unwrap();
            }
            drop(wal);
            h.join().unwrap();
        }

        let registry = prometheus::Registry::new();
        let wal_metrics = WalMetrics::register(&registry).unwrap();
        let quarantine = Arc::new(Quarantine::beside(&wal_dir, wal_metrics.clone()));
        let checkpoints = Arc::new(Checkpoints::default());
        let store =
            LogStore::open(&root.path().join("logs"), 3600, WriterOptions::default()).unwrap();
        let index = store.index().clone();
        let ctx = IndexerContext {
            budget: Arc::new(Budget::new(1 << 30)),
            quarantine: quarantine.clone(),
            records: RecordReader::new(wal_dir.clone()),
            index_metrics: IndexMetrics::register(&prometheus::Registry::new()).unwrap(),
            retention: Duration::from_secs(7 * 86400),
            backlog: Arc::default(),
        };
        let setup = IndexerSetup {
            signal: Signal::Logs,
            index: index.clone(),
            labels: IndexLabels {
                signal: "logs",
                index: "logs",
            },
            mapper: Touchy(store.mapper()),
            progress: Progress::single(&checkpoints, Signal::Logs, index.checkpoint()),
            policy: CommitPolicy::of_index(&IndexConfig::default()),
        };
        let (tx, indexer) = spawn_indexer(setup, ctx).unwrap();
        let (wal, h) = Wal::open_with_quarantine(
            &wal_dir,
            &quarantine,
            wal_opts(),
            checkpoints.clone(),
            wal_metrics,
            Box::new(move |r| tx.send(r).unwrap()),
        )
        .unwrap();
        // Live: a decoded batch whose indexing panics; its bytes are read back from the WAL.
        let lsn = wal
            .append(
                Signal::Logs,
                boom.clone(),
                Some(Batch::Logs(logs("boom"))),
                None,
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
        assert_eq!(
            counter(&registry, "lookout_wal_quarantined_records_total"),
            3
        );
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
