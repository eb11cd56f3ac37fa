//! Self-metrics of trace assembly.

use lookout_ingest::metrics::register as reg;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Trace self-metrics.
#[derive(Clone)]
pub struct TraceMetrics {
    /// Traces being assembled (not yet idle for the completion window).
    pub open: IntGauge,
    /// Estimated memory of the open traces, held under `traces.max_open_bytes`.
    pub open_bytes: IntGauge,
    /// Trace versions written, by state (`complete`, `updated_late`).
    pub completed: IntCounterVec,
    /// Open traces completed early because the open-trace memory budget was reached.
    pub evicted: IntCounter,
    /// Spans that arrived after their trace had completed.
    pub late_spans: IntCounter,
    /// Spans the tracker could not attribute, by reason.
    pub invalid_spans: IntCounterVec,
    /// Spans without remote-parent flags waiting for their parent to tell whether they
    /// enter their service.
    pub entry_waiting: IntGauge,
    /// Such spans whose parent never came, counted as entries of their service.
    pub entry_orphans: IntCounter,
}

impl TraceMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter_vec = |name: &str, help: &str, label: &str| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), &[label])?,
            )
        };
        Ok(Self {
            open: reg(
                registry,
                IntGauge::new(
                    "lookout_traces_open",
                    "Traces being assembled, waiting for the completion window.",
                )?,
            )?,
            open_bytes: reg(
                registry,
                IntGauge::new(
                    "lookout_traces_open_bytes",
                    "Estimated memory of the traces being assembled (limit: traces.max_open_bytes).",
                )?,
            )?,
            completed: counter_vec(
                "lookout_traces_completed_total",
                "Trace versions written, by state (complete, updated_late).",
                "state",
            )?,
            evicted: reg(
                registry,
                IntCounter::new(
                    "lookout_traces_evicted_total",
                    "Open traces completed early because the open-trace memory budget was full.",
                )?,
            )?,
            late_spans: reg(
                registry,
                IntCounter::new(
                    "lookout_traces_late_spans_total",
                    "Spans that arrived after their trace had completed.",
                )?,
            )?,
            invalid_spans: counter_vec(
                "lookout_traces_invalid_spans_total",
                "Spans the trace tracker skipped, by reason.",
                "reason",
            )?,
            entry_waiting: reg(
                registry,
                IntGauge::new(
                    "lookout_traces_entry_waiting_spans",
                    "Spans without remote-parent flags waiting for their parent to tell whether they enter their service.",
                )?,
            )?,
            entry_orphans: reg(
                registry,
                IntCounter::new(
                    "lookout_traces_entry_orphan_spans_total",
                    "Spans whose parent never came within traces.graph_pair_wait, counted as entry spans of their service.",
                )?,
            )?,
        })
    }
}
