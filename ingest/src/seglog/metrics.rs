//! The damage counters every segment log exposes.

use prometheus::core::Collector;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::damage::DamageKind;
use super::frame::Framing;

/// Register `metric` on `registry`, and return it.
pub fn register<T: Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Name and help text of a metric.
pub type MetricName<'a> = (&'a str, &'a str);

/// A log's damage counters: damaged stretches skipped, and damage by kind. Cheap to clone.
#[derive(Clone)]
pub struct DamageCounters {
    /// Damaged stretches skipped (every kind).
    pub stretches: IntCounter,
    /// Damage found, by `kind` (the framing's [`Framing::kinds`], each exposed from the
    /// start).
    pub by_kind: IntCounterVec,
}

impl DamageCounters {
    /// Create the two counters of a log in `framing` and register them on `registry`.
    pub fn register(
        registry: &Registry,
        framing: &Framing,
        (stretches, stretches_help): MetricName<'_>,
        (by_kind, by_kind_help): MetricName<'_>,
    ) -> Result<Self, prometheus::Error> {
        let by_kind = register(
            registry,
            IntCounterVec::new(Opts::new(by_kind, by_kind_help), &["kind"])?,
        )?;
        for kind in framing.kinds {
            by_kind.with_label_values(&[kind.as_str()]);
        }
        Ok(Self {
            stretches: register(registry, IntCounter::new(stretches, stretches_help)?)?,
            by_kind,
        })
    }

    /// Count one damaged stretch of `kind`.
    pub fn count(&self, kind: DamageKind) {
        self.stretches.inc();
        self.by_kind.with_label_values(&[kind.as_str()]).inc();
    }
}
