//! Self-metrics of the OTLP receivers.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Register `metric` on `registry` and return it, for building a struct of self-metrics.
pub fn register<T: Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Self-metrics of the OTLP receivers; the collector and the agent register them under
/// their own prefix.
#[derive(Clone)]
pub struct ReceiverMetrics {
    /// Items durably accepted, by signal and transport.
    pub accepted_items: IntCounterVec,
    /// Items refused with the whole request (bad data, oversize, overload), by signal,
    /// transport and reason. The client was told; these were never acknowledged.
    pub refused_items: IntCounterVec,
    /// Items dropped from an accepted request and reported in `partial_success`, by
    /// signal, transport and reason.
    pub dropped_items: IntCounterVec,
    /// Requests by signal, transport and outcome (`ok`, `partial`, `invalid`, `too_large`,
    /// `overloaded`, `throttled`, `unavailable`).
    pub requests: IntCounterVec,
    /// Attributes dropped or values truncated by the limits, by signal.
    pub limited_attributes: IntCounterVec,
    /// Bytes of requests admitted and not yet stored (the ingest queue).
    pub pending_bytes: IntGauge,
}

impl ReceiverMetrics {
    /// Create the metrics as `PREFIX_receiver_*` and `PREFIX_ingest_pending_bytes`, and
    /// register them.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c =
                IntCounterVec::new(Opts::new(format!("{prefix}_receiver_{name}"), help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let pending_bytes = IntGauge::new(
            format!("{prefix}_ingest_pending_bytes"),
            "Bytes of admitted requests not yet stored (ingest queue depth).",
        )?;
        registry.register(Box::new(pending_bytes.clone()))?;
        let m = Self {
            accepted_items: counter(
                "accepted_items_total",
                "Items durably accepted, by signal and transport.",
                &["signal", "transport"],
            )?,
            refused_items: counter(
                "refused_items_total",
                "Items refused together with their whole request, by signal, transport and reason.",
                &["signal", "transport", "reason"],
            )?,
            dropped_items: counter(
                "dropped_items_total",
                "Items dropped from accepted requests and reported in partial_success.",
                &["signal", "transport", "reason"],
            )?,
            requests: counter(
                "requests_total",
                "Export requests by signal, transport and outcome.",
                &["signal", "transport", "outcome"],
            )?,
            limited_attributes: counter(
                "limited_attributes_total",
                "Attributes dropped or values truncated by the configured limits.",
                &["signal"],
            )?,
            pending_bytes,
        };
        m.show_zeros();
        Ok(m)
    }

    /// Create every series of the OTLP transports at 0, so that `rate()` and alerts on a
    /// refusal or a drop have data before the first one happens.
    fn show_zeros(&self) {
        use crate::error::IngestError;
        use crate::signal::{Signal, Transport};
        for signal in Signal::ALL {
            for transport in [Transport::Grpc, Transport::Http] {
                let (s, t) = (signal.as_str(), transport.as_str());
                self.accepted_items.with_label_values(&[s, t]);
                for reason in IngestError::REASONS {
                    self.refused_items.with_label_values(&[s, t, reason]);
                    self.requests.with_label_values(&[s, t, reason]);
                }
                for reason in ["invalid", "rate_limited"] {
                    self.dropped_items.with_label_values(&[s, t, reason]);
                }
                for outcome in ["ok", "partial"] {
                    self.requests.with_label_values(&[s, t, outcome]);
                }
            }
            self.limited_attributes
                .with_label_values(&[signal.as_str()]);
        }
    }
}
