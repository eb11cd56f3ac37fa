//! Requests and helpers shared by the store's tests.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use lookout_proto::attr;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use lookout_proto::otlp::metrics::v1::metric::Data;
use lookout_proto::otlp::metrics::v1::{
    number_data_point, AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;

use super::{MetricStore, SeriesValue, StoreConfig};
use crate::prom::{Exposition, Format};

pub(super) const S: u64 = 1_000_000_000;
pub(super) const T0: u64 = 1_700_000_000 * S;
pub(super) const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
pub(super) const DELTA: i32 = AggregationTemporality::Delta as i32;

/// The labels every series of [`request`] has besides its own.
pub(super) const LABELS: &str =
    r#"instance="pod-1",job="shop/checkout",otel_scope_name="lib",otel_scope_version="1.2""#;

/// `metrics` from instance `pod-1` of `shop/checkout`, scope `lib` 1.2.
pub(super) fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    request_from("checkout", "pod-1", metrics)
}

pub(super) fn request_from(
    service: &str,
    instance: &str,
    metrics: Vec<Metric>,
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attr::string("service.name", service),
                    attr::string("service.namespace", "shop"),
                    attr::string("service.instance.id", instance),
                    attr::string("host.name", "node-a"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub(super) fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name} help"),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

pub(super) fn num(start: u64, time: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

pub(super) fn sum(
    name: &str,
    temporality: i32,
    monotonic: bool,
    points: Vec<NumberDataPoint>,
) -> Metric {
    metric(
        name,
        "",
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        }),
    )
}

pub(super) fn hist(
    start: u64,
    time: u64,
    bounds: &[f64],
    counts: &[u64],
    total: f64,
) -> HistogramDataPoint {
    HistogramDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: counts.iter().sum(),
        sum: Some(total),
        bucket_counts: counts.to_vec(),
        explicit_bounds: bounds.to_vec(),
        ..Default::default()
    }
}

pub(super) fn store() -> MetricStore {
    MetricStore::new(StoreConfig {
        stale_after: Duration::from_secs(300),
        max_series: 1000,
        max_series_per_service: 1000,
    })
}

pub(super) fn render(s: &MetricStore, format: Format, now: u64) -> String {
    let mut w = Exposition::new(format);
    s.render(&mut w, now);
    w.finish()
}

/// The value of the first series of a gauge or counter.
pub(super) fn value(s: &MetricStore, name: &str) -> f64 {
    match s.series(name).first().map(|x| &x.value) {
        Some(SeriesValue::Counter(v) | SeriesValue::Gauge(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}
