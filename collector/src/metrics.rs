//! The collector's own metrics, exposed on `GET /metrics`.

use lookout_ingest::ReceiverMetrics;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Self-metrics of the collector. Cheap to clone handles out of; registered once.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Self-metrics of the OTLP receivers.
    pub receiver: ReceiverMetrics,
    /// Bytes of WAL segments on disk.
    pub wal_bytes: IntGauge,
    /// WAL segment files on disk.
    pub wal_segments: IntGauge,
    /// Records appended to the WAL.
    pub wal_records: IntCounter,
    /// Group commits (one write + fsync each).
    pub wal_commits: IntCounter,
    /// Duration of WAL fsyncs.
    pub wal_fsync_seconds: Histogram,
    /// Records replayed from the WAL at start-up.
    pub wal_replayed_records: IntCounter,
    /// Corrupt or torn WAL records skipped at start-up.
    pub wal_corrupt_records: IntCounter,
    /// Damage found in the WAL at start-up, by kind (`torn`, `checksum`, `bad_length`,
    /// `zeroed`, `missing_segment`); see [`crate::wal::DamageKind`].
    pub wal_corruptions: IntCounterVec,
    /// WAL records with a valid checksum that could not be decoded or applied, moved to
    /// `DATA_DIR/quarantine/`.
    pub wal_quarantined_records: IntCounter,
    /// Committed documents in the index, by signal.
    pub index_docs: IntGaugeVec,
    /// Bytes of index files on disk, by signal.
    pub index_bytes: IntGaugeVec,
    /// Time partitions on disk, by signal.
    pub index_partitions: IntGaugeVec,
    /// Partitions whose reader is open, by index (`logs`, `spans`, `traces`).
    pub index_open_readers: IntGaugeVec,
    /// Index commits, by signal.
    pub index_commits: IntCounterVec,
    /// Index writes or commits that failed (a full disk, an I/O error), by signal; the
    /// records are kept and written again after a backoff.
    pub index_failures: IntCounterVec,
    /// Documents added and not yet committed, by signal.
    pub index_uncommitted_docs: IntGaugeVec,
    /// Time partitions removed by retention, by signal.
    pub retention_removed_partitions: IntCounterVec,
    /// Duration of query API requests, by endpoint.
    pub query_seconds: HistogramVec,
    /// Traces being assembled (not yet idle for the completion window).
    pub traces_open: IntGauge,
    /// Estimated memory of the open traces, held under `traces.max_open_bytes`.
    pub traces_open_bytes: IntGauge,
    /// Trace versions written, by state (`complete`, `updated_late`).
    pub traces_completed: IntCounterVec,
    /// Open traces completed early because the open-trace memory budget was reached.
    pub traces_evicted: IntCounter,
    /// Spans that arrived after their trace had completed.
    pub traces_late_spans: IntCounter,
    /// Spans the tracker could not attribute, by reason.
    pub traces_invalid_spans: IntCounterVec,
    /// Problems found while assembling traces for the API, by kind.
    pub traces_warnings: IntCounterVec,
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            receiver: ReceiverMetrics::register(&registry, "lookout")?,
            wal_bytes: reg!(IntGauge::new(
                "lookout_wal_bytes",
                "Bytes of write-ahead log segments on disk."
            )?),
            wal_segments: reg!(IntGauge::new(
                "lookout_wal_segments",
                "Write-ahead log segment files on disk."
            )?),
            wal_records: reg!(IntCounter::new(
                "lookout_wal_records_total",
                "Records appended to the write-ahead log."
            )?),
            wal_commits: reg!(IntCounter::new(
                "lookout_wal_group_commits_total",
                "Group commits of the write-ahead log (one write and fsync each)."
            )?),
            wal_fsync_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "lookout_wal_fsync_duration_seconds",
                    "Duration of write-ahead log fsyncs."
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    1.0
                ])
            )?),
            wal_replayed_records: reg!(IntCounter::new(
                "lookout_wal_replayed_records_total",
                "Records replayed from the write-ahead log at start-up."
            )?),
            wal_corrupt_records: reg!(IntCounter::new(
                "lookout_wal_corrupt_records_total",
                "Torn or corrupt write-ahead log records skipped at start-up."
            )?),
            wal_corruptions: reg!(counter_vec(
                "lookout_wal_corruptions_total",
                "Damage found in the write-ahead log at start-up, by kind (torn, checksum, bad_length, zeroed, missing_segment).",
                &["kind"]
            )?),
            wal_quarantined_records: reg!(IntCounter::new(
                "lookout_wal_quarantined_records_total",
                "Write-ahead log records with a valid checksum that could not be decoded or applied, set aside in the quarantine directory."
            )?),
            index_docs: reg!(gauge_vec(
                "lookout_index_docs",
                "Committed documents in the index, by signal.",
                &["signal"]
            )?),
            index_bytes: reg!(gauge_vec(
                "lookout_index_bytes",
                "Bytes of index files on disk, by signal.",
                &["signal"]
            )?),
            index_partitions: reg!(gauge_vec(
                "lookout_index_partitions",
                "Time partitions on disk, by signal.",
                &["signal"]
            )?),
            index_open_readers: reg!(gauge_vec(
                "lookout_index_open_readers",
                "Partitions whose reader is open (a search opens it; five idle minutes close it), by index: logs, spans, traces (trace summaries).",
                &["index"]
            )?),
            index_commits: reg!(counter_vec(
                "lookout_index_commits_total",
                "Index commits, by signal.",
                &["signal"]
            )?),
            index_failures: reg!(counter_vec(
                "lookout_index_failures_total",
                "Index writes or commits that failed (full disk, I/O error), by signal; the records are written again after a backoff.",
                &["signal"]
            )?),
            index_uncommitted_docs: reg!(gauge_vec(
                "lookout_index_uncommitted_docs",
                "Documents added to the index and not yet committed, by signal.",
                &["signal"]
            )?),
            retention_removed_partitions: reg!(counter_vec(
                "lookout_retention_removed_partitions_total",
                "Time partitions removed by retention, by signal.",
                &["signal"]
            )?),
            query_seconds: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "lookout_query_duration_seconds",
                    "Duration of query API requests, by endpoint."
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
                ]),
                &["endpoint"]
            )?),
            traces_open: reg!(IntGauge::new(
                "lookout_traces_open",
                "Traces being assembled, waiting for the completion window."
            )?),
            traces_open_bytes: reg!(IntGauge::new(
                "lookout_traces_open_bytes",
                "Estimated memory of the traces being assembled (limit: traces.max_open_bytes)."
            )?),
            traces_completed: reg!(counter_vec(
                "lookout_traces_completed_total",
                "Trace versions written, by state (complete, updated_late).",
                &["state"]
            )?),
            traces_evicted: reg!(IntCounter::new(
                "lookout_traces_evicted_total",
                "Open traces completed early because the open-trace memory budget was full."
            )?),
            traces_late_spans: reg!(IntCounter::new(
                "lookout_traces_late_spans_total",
                "Spans that arrived after their trace had completed."
            )?),
            traces_invalid_spans: reg!(counter_vec(
                "lookout_traces_invalid_spans_total",
                "Spans the trace tracker skipped, by reason.",
                &["reason"]
            )?),
            traces_warnings: reg!(counter_vec(
                "lookout_traces_assembly_warnings_total",
                "Problems found while assembling traces (missing parents, clock skew, cycles, ...), by kind.",
                &["kind"]
            )?),
            registry,
        })
    }

    /// Write the registry's metrics to an exposition.
    pub fn render(&self, w: &mut crate::prom::Writer) {
        crate::prom::expo::write_prometheus_families(w, &self.registry.gather());
    }
}
