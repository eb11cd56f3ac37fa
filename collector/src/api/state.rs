//! What the API handlers read.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use lookout_ingest::metrics::register;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use super::guard::QueryGuard;
use crate::alerts::AlertsHandle;
use crate::prom::MetricStore;
use crate::store::{LogStore, SpanStore, TraceStore};
use crate::traces::tracker::TracesShared;

/// What the API reads.
#[derive(Clone)]
pub struct ApiState {
    /// Set once what WAL replay restored is queryable.
    pub ready: Arc<AtomicBool>,
    /// The registry of every self-metric, rendered on `/metrics`.
    pub registry: Registry,
    /// The API's own metrics.
    pub metrics: ApiMetrics,
    /// The log index.
    pub logs: LogStore,
    /// The span index.
    pub spans: SpanStore,
    /// The trace summary index.
    pub traces: TraceStore,
    /// Open traces, RED metrics and the service graph.
    pub shared: Arc<TracesShared>,
    /// Longest RED window that can be asked for.
    pub red_window: Duration,
    /// OTLP metrics received from services, exposed on `/metrics`.
    pub metric_store: Arc<parking_lot::Mutex<MetricStore>>,
    /// Alert rules and their instances.
    pub alerts: AlertsHandle,
    /// Query limits.
    pub query: lookout_config::QueryConfig,
    /// Concurrency and time limits of the query endpoints.
    pub guard: QueryGuard,
    /// The other members, in cluster mode: queries are answered for the whole cluster.
    pub peers: Option<super::fanout::Peers>,
}

/// Self-metrics of the query API.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Duration of query API requests, by endpoint.
    pub query_seconds: HistogramVec,
    /// Requests answered 503 by the [`QueryGuard`].
    pub refused: IntCounter,
    /// Problems found while assembling traces for the API, by kind.
    pub trace_warnings: IntCounterVec,
}

impl ApiMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let query_seconds = HistogramVec::new(
            HistogramOpts::new(
                "lookout_query_duration_seconds",
                "Duration of query API requests, by endpoint.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["endpoint"],
        )?;
        let refused = IntCounter::new(
            "lookout_query_refused_total",
            "Query API requests answered 503: timed out or no free slot (query.timeout, query.max_concurrent).",
        )?;
        let trace_warnings = IntCounterVec::new(
            Opts::new(
                "lookout_traces_assembly_warnings_total",
                "Problems found while assembling traces (missing parents, clock skew, cycles, ...), by kind.",
            ),
            &["kind"],
        )?;
        Ok(Self {
            query_seconds: register(registry, query_seconds)?,
            refused: register(registry, refused)?,
            trace_warnings: register(registry, trace_warnings)?,
        })
    }
}
