//! Rendering of the collector's self-metrics. Each subsystem defines and registers its own
//! on the one registry the server creates: the receivers
//! ([`lookout_ingest::ReceiverMetrics`]), the WAL ([`crate::wal::WalMetrics`]), the
//! indexes ([`crate::store::IndexMetrics`]), trace assembly
//! ([`crate::traces::metrics::TraceMetrics`]), the OTLP metric store
//! ([`crate::prom::StoreMetrics`]), alerts ([`crate::alerts::AlertMetrics`]), the API
//! ([`crate::api::ApiMetrics`]) and the listeners.

use prometheus::Registry;

/// Write every metric of `registry` to an exposition.
pub fn render(registry: &Registry, w: &mut crate::prom::Exposition) {
    crate::prom::expo::write_prometheus_families(w, &registry.gather());
}
