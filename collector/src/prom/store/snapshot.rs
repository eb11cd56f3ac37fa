//! Series as read by metric-based alert rules: labels and the current value.

use super::series::Family;
use super::value::ValueState;
use crate::prom::convert::PromKind;

/// One series as read by metric-based alert rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// Labels sorted by name, including `job` and `instance` (and `otel_scope_name`,
    /// `otel_scope_version` when the scope had them).
    pub labels: Vec<(String, String)>,
    /// Current value.
    pub value: SeriesValue,
}

/// The current value of a series (cumulative for counters and histograms).
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    /// A gauge (OTLP gauge or non-monotonic sum).
    Gauge(f64),
    /// A counter's cumulative total (OTLP monotonic sum).
    Counter(f64),
    /// A classic histogram (from an OTLP histogram or exponential histogram).
    Histogram {
        /// Finite upper bounds, ascending.
        bounds: Vec<f64>,
        /// Cumulative counts per bound; one more than `bounds`, the last is `+Inf`.
        counts: Vec<u64>,
        /// Observations.
        count: u64,
        /// Sum of observations (0 when the source did not send it).
        sum: f64,
    },
    /// A summary.
    Summary {
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// `(quantile, value)`, ascending by quantile.
        quantiles: Vec<(f64, f64)>,
    },
}

impl Family {
    /// Every series of the family, fresh or not.
    pub(super) fn snapshot(&self) -> Vec<SeriesSnapshot> {
        self.series
            .values()
            .map(|s| SeriesSnapshot {
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value: self.value_of(&s.value),
            })
            .collect()
    }

    fn value_of(&self, v: &ValueState) -> SeriesValue {
        match v {
            ValueState::Number { value, .. } => match self.kind {
                PromKind::Counter => SeriesValue::Counter(*value),
                _ => SeriesValue::Gauge(*value),
            },
            ValueState::Histogram { hist, .. } => {
                let mut counts = Vec::new();
                hist.cumulative_into(&mut counts);
                SeriesValue::Histogram {
                    bounds: hist.bounds.clone(),
                    count: counts.last().copied().unwrap_or(0),
                    counts,
                    sum: hist.sum.unwrap_or(0.0),
                }
            }
            ValueState::Summary {
                count,
                sum,
                quantiles,
            } => SeriesValue::Summary {
                count: *count,
                sum: *sum,
                quantiles: quantiles.clone(),
            },
        }
    }
}
