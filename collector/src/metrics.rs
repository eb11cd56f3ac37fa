//! The collector's own metrics, exposed on `GET /metrics`.

use lookout_ingest::ReceiverMetrics;
use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Self-metrics of the collector. Cheap to clone handles out of; registered once. The
/// write-ahead log's own are [`crate::wal::WalMetrics`], registered by the server on the
/// same registry.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Self-metrics of the OTLP receivers.
    pub receiver: ReceiverMetrics,
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
        render(&self.registry, w);
    }
}

/// Write every metric of `registry` to an exposition.
pub fn render(registry: &Registry, w: &mut crate::prom::Writer) {
    crate::prom::expo::write_prometheus_families(w, &registry.gather());
}
