//! What applying a request did (points received by type, dropped by reason), and the
//! store's self-metrics it is published to.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::prom::expo::registered;

/// OTLP point types, as counted in `lookout_metrics_points_received_total{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointType {
    /// Gauge points.
    Gauge = 0,
    /// Sum points.
    Sum,
    /// Explicit-bucket histogram points.
    Histogram,
    /// Exponential histogram points.
    ExponentialHistogram,
    /// Summary points.
    Summary,
}

impl PointType {
    /// Every type.
    pub const ALL: [PointType; 5] = [
        PointType::Gauge,
        PointType::Sum,
        PointType::Histogram,
        PointType::ExponentialHistogram,
        PointType::Summary,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PointType::Gauge => "gauge",
            PointType::Sum => "sum",
            PointType::Histogram => "histogram",
            PointType::ExponentialHistogram => "exponential_histogram",
            PointType::Summary => "summary",
        }
    }
}

/// Why a point was dropped, as counted in `lookout_metrics_points_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It would have created a series past `max_series`.
    MaxSeries = 0,
    /// It would have created a series of its service past `max_series_per_service`.
    MaxSeriesPerService,
    /// No valid name, no value, bad histogram layout (bounds not increasing or more than
    /// 1024, counts not matching), exponential scale outside -10..=20, unspecified
    /// temporality, negative delta of a counter.
    Invalid,
    /// Older than (or overlapping) the series' last point.
    OutOfOrder,
    /// A non-monotonic delta sum (cannot be made cumulative correctly).
    DeltaNonMonotonic,
    /// Its name is taken by a metric of another type (or by `target_info`).
    NameConflict,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 6] = [
        DropReason::MaxSeries,
        DropReason::MaxSeriesPerService,
        DropReason::Invalid,
        DropReason::OutOfOrder,
        DropReason::DeltaNonMonotonic,
        DropReason::NameConflict,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxSeries => "max_series",
            DropReason::MaxSeriesPerService => "max_series_per_service",
            DropReason::Invalid => "invalid",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::DeltaNonMonotonic => "delta_non_monotonic",
            DropReason::NameConflict => "name_conflict",
        }
    }
}

/// What one [`super::MetricStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    received: [u64; PointType::ALL.len()],
    dropped: [u64; DropReason::ALL.len()],
}

impl ApplyReport {
    /// Points received of type `t`.
    pub fn received(&self, t: PointType) -> u64 {
        self.received[t as usize]
    }

    /// Points dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }

    /// Points dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub(super) fn receive(&mut self, t: PointType, n: usize) {
        self.received[t as usize] += n as u64;
    }

    pub(super) fn drop(&mut self, r: DropReason, n: usize) {
        self.dropped[r as usize] += n as u64;
    }

    /// Add these counts to the self-metrics.
    pub fn publish(&self, m: &StoreMetrics) {
        for t in PointType::ALL {
            let n = self.received(t);
            if n > 0 {
                m.points_received.with_label_values(&[t.as_str()]).inc_by(n);
            }
        }
        for r in DropReason::ALL {
            let n = self.dropped(r);
            if n > 0 {
                m.points_dropped.with_label_values(&[r.as_str()]).inc_by(n);
            }
        }
    }
}

/// Self-metrics of the OTLP metrics store (`lookout_metrics_*`).
#[derive(Clone)]
pub struct StoreMetrics {
    /// Series of OTLP metrics held for `/metrics`.
    pub series: IntGauge,
    /// OTLP metric points received, by type (`gauge`, `sum`, `histogram`,
    /// `exponential_histogram`, `summary`).
    pub points_received: IntCounterVec,
    /// OTLP metric points dropped, by reason (`max_series`, `invalid`, `out_of_order`,
    /// `delta_non_monotonic`, `name_conflict`).
    pub points_dropped: IntCounterVec,
    /// OTLP metric series removed after `metrics.stale_after` without a point.
    pub series_expired: IntCounter,
}

impl StoreMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            series: registered(registry, IntGauge::new(
                "lookout_metrics_series",
                "Series of OTLP metrics held for /metrics.",
            )?)?,
            points_received: registered(registry, IntCounterVec::new(
                Opts::new(
                    "lookout_metrics_points_received_total",
                    "OTLP metric data points received, by type.",
                ),
                &["type"],
            )?)?,
            points_dropped: registered(registry, IntCounterVec::new(
                Opts::new(
                    "lookout_metrics_points_dropped_total",
                    "OTLP metric data points not exposed, by reason (max_series, invalid, out_of_order, delta_non_monotonic, name_conflict).",
                ),
                &["reason"],
            )?)?,
            series_expired: registered(registry, IntCounter::new(
                "lookout_metrics_series_expired_total",
                "OTLP metric series removed after metrics.stale_after without a data point.",
            )?)?,
        })
    }

    /// Set the number of series held.
    pub fn set_series(&self, count: usize) {
        self.series.set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
