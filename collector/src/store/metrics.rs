//! Self-metrics of the indexes, one set for every partition writer, told apart by label.

use lookout_ingest::metrics::register as reg;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Index self-metrics. Most are labelled by `signal` (`logs`, `traces` for the span store,
/// `trace_summaries` for the summary store); the open readers by `index` (`logs`; `spans`
/// and `traces` for tantivy partitions of earlier releases).
#[derive(Clone)]
pub struct IndexMetrics {
    /// Committed documents in the index.
    pub docs: IntGaugeVec,
    /// Bytes of index files on disk.
    pub bytes: IntGaugeVec,
    /// Time partitions on disk.
    pub partitions: IntGaugeVec,
    /// Partitions whose reader is open.
    pub open_readers: IntGaugeVec,
    /// Commits.
    pub commits: IntCounterVec,
    /// Writes or commits that failed (a full disk, an I/O error); the records are kept and
    /// written again after a backoff.
    pub failures: IntCounterVec,
    /// Documents added and not yet committed.
    pub uncommitted_docs: IntGaugeVec,
    /// Time partitions removed by retention.
    pub retention_removed_partitions: IntCounterVec,
}

impl IndexMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str, label: &str| {
            reg(registry, IntGaugeVec::new(Opts::new(name, help), &[label])?)
        };
        let counter = |name: &str, help: &str| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), &["signal"])?,
            )
        };
        Ok(Self {
            docs: gauge(
                "lookout_index_docs",
                "Committed documents in the index, by signal.",
                "signal",
            )?,
            bytes: gauge(
                "lookout_index_bytes",
                "Bytes of index files on disk, by signal.",
                "signal",
            )?,
            partitions: gauge(
                "lookout_index_partitions",
                "Time partitions on disk, by signal.",
                "signal",
            )?,
            open_readers: gauge(
                "lookout_index_open_readers",
                "Partitions whose reader is open (a search opens it; five idle minutes close it), by index: logs, spans, traces (trace summaries).",
                "index",
            )?,
            commits: counter("lookout_index_commits_total", "Index commits, by signal.")?,
            failures: counter(
                "lookout_index_failures_total",
                "Index writes or commits that failed (full disk, I/O error), by signal; the records are written again after a backoff.",
            )?,
            uncommitted_docs: gauge(
                "lookout_index_uncommitted_docs",
                "Documents added to the index and not yet committed, by signal.",
                "signal",
            )?,
            retention_removed_partitions: counter(
                "lookout_retention_removed_partitions_total",
                "Time partitions removed by retention, by signal.",
            )?,
        })
    }
}
