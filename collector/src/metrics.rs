//! The collector's metrics registry and its rendering. Every subsystem defines and
//! registers its own self-metrics on the registry: the receivers
//! ([`lookout_ingest::ReceiverMetrics`]), the WAL ([`crate::wal::WalMetrics`]), the
//! indexes ([`crate::store::IndexMetrics`]), trace assembly
//! ([`crate::traces::metrics::TraceMetrics`]), the OTLP metric store
//! ([`crate::prom::StoreMetrics`]), alerts ([`crate::alerts::AlertMetrics`]) and the API
//! ([`crate::api::ApiMetrics`]).

use lookout_ingest::ReceiverMetrics;
use prometheus::Registry;

/// The registry `/metrics` renders, with the receivers' metrics, which the ingest path and
/// the stores that release its budget share.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Self-metrics of the OTLP receivers.
    pub receiver: ReceiverMetrics,
}

impl Metrics {
    /// A registry with the receivers' metrics registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        Ok(Self {
            receiver: ReceiverMetrics::register(&registry, "lookout")?,
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
