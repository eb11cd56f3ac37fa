//! Block stores (`lookout-spanstore`) as the partition writer sees them: the head is
//! filled by writes and cut into a block when the writer commits. Spans and trace
//! summaries are both written this way; the tantivy partitions of earlier releases beside
//! them are counted in the checkpoint and removed by retention.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lookout_ingest::metrics::register as reg;
use lookout_spanstore::{BlockError, BlockStore, Schema};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::handle::{IndexSchema, StoreHandle};
use super::partition::{PartitionError, PartitionedIndex, WriterOptions};
use super::writer::{PartitionStats, Partitions};

/// A block store and the tantivy partitions of earlier releases beside it.
pub(super) type WithLegacy<K, F> = (Arc<BlockPartitions<K>>, Option<StoreHandle<F>>);

/// The block store of `kind` under `<data>/spanstore/<kind>/`, partitions `width_secs`
/// wide, and the tantivy partitions of earlier releases under `<data>/<legacy>/` when
/// there are any.
pub(super) fn open_with_legacy<K: Schema, F: IndexSchema>(
    data: &Path,
    kind: &'static str,
    legacy: &str,
    width_secs: i64,
) -> Result<WithLegacy<K, F>, PartitionError> {
    let dir = data.join("spanstore").join(kind);
    let store = BlockStore::<K>::open(&dir, width_secs)
        .map_err(|source| PartitionError::Io { path: dir, source })?;
    let legacy_dir = data.join(legacy);
    let old = if legacy_dir.is_dir() {
        Some(StoreHandle::<F>::open(
            &legacy_dir,
            width_secs,
            WriterOptions::default(),
        )?)
    } else {
        None
    };
    let parts = BlockPartitions::new(store, old.as_ref().map(|l| l.index().clone()), kind);
    Ok((Arc::new(parts), old))
}

/// A block store with the partitions of earlier releases (retention removes those too).
pub struct BlockPartitions<K: Schema> {
    pub(super) store: Arc<BlockStore<K>>,
    pub(super) legacy: Option<Arc<PartitionedIndex>>,
    metrics: OnceLock<BlockMetrics>,
    /// Value of the `kind` label of this store's metrics.
    kind: &'static str,
}

impl<K: Schema> BlockPartitions<K> {
    /// `store`, with `legacy` partitions beside it; its metrics are labelled `kind`.
    pub fn new(
        store: BlockStore<K>,
        legacy: Option<Arc<PartitionedIndex>>,
        kind: &'static str,
    ) -> Self {
        Self {
            store: Arc::new(store),
            legacy,
            metrics: OnceLock::new(),
            kind,
        }
    }

    /// The block store.
    pub fn store(&self) -> &Arc<BlockStore<K>> {
        &self.store
    }

    /// This store's metrics, once exported.
    pub fn metrics(&self) -> Option<&BlockMetrics> {
        self.metrics.get()
    }

    /// Export this store's gauges and counters through `metrics` (once; later calls are
    /// ignored).
    pub fn export_metrics(&self, metrics: BlockMetrics) {
        // Every series shows from the start, at zero.
        let k = [self.kind];
        metrics.written.with_label_values(&k);
        metrics.written_bytes.with_label_values(&k);
        metrics.compactions.with_label_values(&k);
        metrics.compacted.with_label_values(&k);
        let _ = self.metrics.set(metrics);
        Partitions::stats(self);
    }
}

/// A block store compaction can run on.
pub trait Compact: Send + Sync {
    /// Merge one run of small blocks (see `BlockStore::compact_once`); whether there was
    /// one.
    fn compact_once(&self, target_rows: u64) -> Result<bool, BlockError>;
}

impl<K: Schema> Compact for BlockPartitions<K> {
    fn compact_once(&self, target_rows: u64) -> Result<bool, BlockError> {
        let Some(done) = self.store.compact_once(target_rows)? else {
            return Ok(false);
        };
        tracing::debug!(
            kind = self.kind,
            partition = done.key,
            blocks = done.blocks,
            rows = done.rows,
            bytes_before = done.bytes_before,
            bytes_after = done.bytes_after,
            "compacted blocks"
        );
        if let Some(m) = self.metrics.get() {
            let k = [self.kind];
            m.compactions.with_label_values(&k).inc();
            m.compacted.with_label_values(&k).inc_by(done.blocks as u64);
            m.written.with_label_values(&k).inc();
            m.written_bytes
                .with_label_values(&k)
                .inc_by(done.bytes_after);
        }
        Ok(true)
    }
}

/// Every `interval`, merge runs of small blocks of `stores` (at most `target_rows` rows
/// into one) until none is left or a minute has gone, on a blocking thread; until
/// `shutdown`.
pub async fn compact(
    stores: Vec<Arc<dyn Compact>>,
    target_rows: u64,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let stores = stores.clone();
        let stop = shutdown.clone();
        let run = tokio::task::spawn_blocking(move || {
            let until = std::time::Instant::now() + Duration::from_secs(60);
            for s in &stores {
                while !stop.is_cancelled() && std::time::Instant::now() < until {
                    match s.compact_once(target_rows) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "compaction failed; the blocks stay as they are");
                            break;
                        }
                    }
                }
            }
        });
        if run.await.is_err() {
            tracing::error!("compaction panicked");
        }
    }
}

/// The block stores' own self-metrics, labelled `kind` (`spans`, `summaries`); their rows,
/// bytes and partitions are in the index metrics as well.
#[derive(Clone)]
pub struct BlockMetrics {
    blocks: IntGaugeVec,
    unreadable: IntGaugeVec,
    head_rows: IntGaugeVec,
    head_bytes: IntGaugeVec,
    written: IntCounterVec,
    written_bytes: IntCounterVec,
    compactions: IntCounterVec,
    compacted: IntCounterVec,
    /// Spans not stored: their trace went past `[spans] max_trace_bytes` in one block.
    pub(super) too_large: prometheus::IntCounter,
}

impl BlockMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), &["kind"])?,
            )
        };
        let counter = |name: &str, help: &str| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), &["kind"])?,
            )
        };
        Ok(Self {
            blocks: gauge("lookout_spanstore_blocks", "Blocks on disk.")?,
            unreadable: gauge(
                "lookout_spanstore_unreadable_blocks",
                "Blocks that cannot be read (named in reads that may need them).",
            )?,
            head_rows: gauge(
                "lookout_spanstore_head_rows",
                "Rows held in memory, not yet cut into a block (they are in the WAL or the trace tracker's replay range).",
            )?,
            head_bytes: gauge(
                "lookout_spanstore_head_bytes",
                "Memory of the rows not yet cut into a block, estimated.",
            )?,
            written: counter(
                "lookout_spanstore_blocks_written_total",
                "Blocks cut and written durably.",
            )?,
            written_bytes: counter(
                "lookout_spanstore_block_bytes_written_total",
                "Bytes of blocks written.",
            )?,
            compactions: counter(
                "lookout_spanstore_compactions_total",
                "Runs of small blocks merged into one.",
            )?,
            compacted: counter(
                "lookout_spanstore_compacted_blocks_total",
                "Blocks merged away by compaction.",
            )?,
            too_large: reg(
                registry,
                prometheus::IntCounter::new(
                    "lookout_spanstore_trace_too_large_spans_total",
                    "Spans not stored because their trace went past [spans] max_trace_bytes in one block.",
                )?,
            )?,
        })
    }
}

/// The writer of a head. Dropping it (after a failed cut) drops what the head holds,
/// since the partition writer writes those rows again.
pub struct HeadWriter<K: Schema> {
    pub(super) store: Arc<BlockStore<K>>,
    /// Memory of the head after the last write.
    pub(super) bytes: u64,
}

impl<K: Schema> HeadWriter<K> {
    /// Bytes the head grew by since the last call.
    pub(super) fn grown(&mut self) -> u64 {
        let now = self.store.head_stats().map_or(0, |s| s.bytes as u64);
        let grown = now.saturating_sub(self.bytes);
        self.bytes = now;
        grown
    }
}

impl<K: Schema> Drop for HeadWriter<K> {
    fn drop(&mut self) {
        self.store.discard_head();
    }
}

impl<K: Schema> Partitions for BlockPartitions<K> {
    type Writer = HeadWriter<K>;
    type Error = BlockError;

    fn checkpoint(&self) -> u64 {
        // Records an earlier release indexed are not written again after an upgrade.
        let legacy = self.legacy.as_ref().map_or(0, |l| l.checkpoint());
        self.store.checkpoint().max(legacy)
    }

    fn key_for(&self, unix_secs: i64) -> i64 {
        self.store.key_for(unix_secs)
    }

    fn open_writer(&self, key: i64) -> Result<HeadWriter<K>, BlockError> {
        self.store.start_head(key);
        Ok(HeadWriter {
            store: self.store.clone(),
            bytes: 0,
        })
    }

    fn commit(&self, writer: &mut HeadWriter<K>, lsn: u64) -> Result<(), BlockError> {
        let written = self.store.cut(lsn)?;
        writer.bytes = 0;
        if let (Some(path), Some(m)) = (written, self.metrics.get()) {
            m.written.with_label_values(&[self.kind]).inc();
            m.written_bytes
                .with_label_values(&[self.kind])
                .inc_by(std::fs::metadata(&path).map_or(0, |md| md.len()));
        }
        Ok(())
    }

    fn close_writer(&self, writer: HeadWriter<K>) {
        drop(writer);
    }

    fn remove_older_than(&self, cutoff_secs: i64, keep: Option<i64>) -> usize {
        let legacy = self.legacy.as_ref().map_or(0, |l| {
            Partitions::remove_older_than(l.as_ref(), cutoff_secs, None)
        });
        self.store.remove_older_than(cutoff_secs, keep) + legacy
    }

    fn close_idle_readers(&self, idle: Duration, _keep: Option<i64>) {
        if let Some(l) = &self.legacy {
            Partitions::close_idle_readers(l.as_ref(), idle, None);
        }
    }

    /// Also refreshes the store's own gauges.
    fn stats(&self) -> PartitionStats {
        let s = self.store.stats();
        if let Some(m) = self.metrics.get() {
            let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            let k = [self.kind];
            m.blocks.with_label_values(&k).set(gauge(s.blocks as u64));
            m.unreadable
                .with_label_values(&k)
                .set(gauge(s.unreadable as u64));
            m.head_rows.with_label_values(&k).set(gauge(s.head_rows));
            m.head_bytes.with_label_values(&k).set(gauge(s.head_bytes));
        }
        let legacy = self
            .legacy
            .as_ref()
            .map(|l| Partitions::stats(l.as_ref()))
            .unwrap_or_default();
        PartitionStats {
            docs: s.rows + legacy.docs,
            bytes: s.bytes + legacy.bytes,
            partitions: s.partitions + legacy.partitions,
            open_readers: legacy.open_readers,
        }
    }
}
