//! The collector's own metrics, exposed on `GET /metrics`.

use lookout_ingest::ReceiverMetrics;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Self-metrics of the collector. Cheap to clone handles out of; registered once. The
/// write-ahead log's own are [`crate::wal::WalMetrics`], registered by the server on the
/// same registry.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Self-metrics of the OTLP receivers.
    pub receiver: ReceiverMetrics,
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
    /// Alert rule evaluation rounds.
    pub alert_evaluations: IntCounter,
    /// Duration of one evaluation round of every rule.
    pub alert_evaluation_seconds: prometheus::Histogram,
    /// Alert instances by state.
    pub alert_instances: IntGaugeVec,
    /// Notification outcomes by receiver (delivered, failed, retried).
    pub alert_notifications: IntCounterVec,
    /// Notifications waiting for delivery or a retry.
    pub alert_notifications_pending: IntGauge,
    /// Failed writes of the alert state file.
    pub alert_state_write_errors: IntCounter,
    /// Series of OTLP metrics held for `/metrics`.
    pub otlp_series: IntGauge,
    /// OTLP metric points received, by type (`gauge`, `sum`, `histogram`,
    /// `exponential_histogram`, `summary`).
    pub otlp_points_received: IntCounterVec,
    /// OTLP metric points dropped, by reason (`max_series`, `invalid`, `out_of_order`,
    /// `delta_non_monotonic`, `name_conflict`).
    pub otlp_points_dropped: IntCounterVec,
    /// OTLP metric series removed after `metrics.stale_after` without a point.
    pub otlp_series_expired: IntCounter,
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
            alert_evaluations: reg!(IntCounter::new(
                "lookout_alert_evaluations_total",
                "Evaluation rounds of the alert rules."
            )?),
            alert_evaluation_seconds: reg!(prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "lookout_alert_evaluation_duration_seconds",
                    "Duration of one evaluation round of every alert rule."
                )
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0])
            )?),
            alert_instances: reg!(gauge_vec(
                "lookout_alert_instances",
                "Alert instances by state (inactive, pending, firing, resolved).",
                &["state"]
            )?),
            alert_notifications: reg!(counter_vec(
                "lookout_alert_notifications_total",
                "Alert notifications by receiver and outcome (delivered, failed, retried).",
                &["receiver", "result"]
            )?),
            alert_notifications_pending: reg!(IntGauge::new(
                "lookout_alert_notifications_pending",
                "Alert notifications waiting for delivery or a retry."
            )?),
            alert_state_write_errors: reg!(IntCounter::new(
                "lookout_alert_state_write_errors_total",
                "Failed writes of the alert state file."
            )?),
            otlp_series: reg!(IntGauge::new(
                "lookout_metrics_series",
                "Series of OTLP metrics held for /metrics."
            )?),
            otlp_points_received: reg!(counter_vec(
                "lookout_metrics_points_received_total",
                "OTLP metric data points received, by type.",
                &["type"]
            )?),
            otlp_points_dropped: reg!(counter_vec(
                "lookout_metrics_points_dropped_total",
                "OTLP metric data points not exposed, by reason (max_series, invalid, out_of_order, delta_non_monotonic, name_conflict).",
                &["reason"]
            )?),
            otlp_series_expired: reg!(IntCounter::new(
                "lookout_metrics_series_expired_total",
                "OTLP metric series removed after metrics.stale_after without a data point."
            )?),
            registry,
        })
    }

    /// Write the registry's metrics to an exposition.
    pub fn render(&self, w: &mut crate::prom::Writer) {
        crate::prom::expo::write_prometheus_families(w, &self.registry.gather());
    }
}
