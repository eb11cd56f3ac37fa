//! Self-metrics of alerting (`lookout_alert_*`).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::prom::expo::registered;

/// Self-metrics of the alert engine and its receivers. Cheap to clone.
#[derive(Clone)]
pub struct AlertMetrics {
    /// Alert rule evaluation rounds.
    pub evaluations: IntCounter,
    /// Duration of one evaluation round of every rule.
    pub evaluation_seconds: Histogram,
    /// Alert instances by state.
    pub instances: IntGaugeVec,
    /// Notification outcomes by receiver (delivered, failed, retried).
    pub notifications: IntCounterVec,
    /// Notifications waiting for delivery or a retry.
    pub notifications_pending: IntGauge,
    /// Failed writes of the alert state file.
    pub state_write_errors: IntCounter,
    /// Cluster mode: evaluations on figures some member did not answer for.
    pub cluster_partial: IntCounter,
}

impl AlertMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            evaluations: registered(
                registry,
                IntCounter::new(
                    "lookout_alert_evaluations_total",
                    "Evaluation rounds of the alert rules.",
                )?,
            )?,
            evaluation_seconds: registered(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lookout_alert_evaluation_duration_seconds",
                        "Duration of one evaluation round of every alert rule.",
                    )
                    .buckets(vec![
                        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                    ]),
                )?,
            )?,
            instances: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "lookout_alert_instances",
                        "Alert instances by state (inactive, pending, firing, resolved).",
                    ),
                    &["state"],
                )?,
            )?,
            notifications: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "lookout_alert_notifications_total",
                        "Alert notifications by receiver and outcome (delivered, failed, retried).",
                    ),
                    &["receiver", "result"],
                )?,
            )?,
            notifications_pending: registered(
                registry,
                IntGauge::new(
                    "lookout_alert_notifications_pending",
                    "Alert notifications waiting for delivery or a retry.",
                )?,
            )?,
            state_write_errors: registered(
                registry,
                IntCounter::new(
                    "lookout_alert_state_write_errors_total",
                    "Failed writes of the alert state file.",
                )?,
            )?,
            cluster_partial: registered(
                registry,
                IntCounter::new(
                    "lookout_alert_cluster_partial_evaluations_total",
                    "Cluster mode: RED figures of an evaluation that lacked a member that did not answer.",
                )?,
            )?,
        })
    }
}
