//! Rendering `/metrics` with 10k OTLP series: 10 targets, each with 400 counter series,
//! 400 gauge series and 200 histogram series (10 bounds), converted and held by
//! `prom::MetricStore`, then written in the Prometheus text format and in OpenMetrics
//! (with exemplars on every counter and histogram).
//!
//! `cargo bench -p lookout-collector --bench scrape`. Filling the store is set-up, reported
//! on stderr, not measured.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookout_collector::prom::{Exposition, Format, MetricStore, StoreConfig};
use lookout_proto::attr;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use lookout_proto::otlp::metrics::v1::{
    exemplar, metric::Data, number_data_point, AggregationTemporality, Exemplar, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;

const TARGETS: usize = 10;
const NOW: u64 = 1_700_000_000_000_000_000;

fn metric(name: &str, description: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn exemplars(i: usize, value: f64) -> Vec<Exemplar> {
    let mut trace_id = [7u8; 16];
    trace_id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    vec![Exemplar {
        trace_id: trace_id.to_vec(),
        span_id: vec![1; 8],
        time_unix_nano: NOW,
        value: Some(exemplar::Value::AsDouble(value)),
        ..Default::default()
    }]
}

/// Labels of series `i`: 50 routes × 4 methods × 2 status classes (400 combinations).
fn attrs(i: usize) -> Vec<KeyValue> {
    vec![
        attr::string("http.route", format!("/api/v1/resource{}/{{id}}", i % 50)),
        attr::string(
            "http.request.method",
            ["GET", "POST", "PUT", "DELETE"][(i / 50) % 4],
        ),
        attr::string("http.response.status_class", ["2xx", "5xx"][(i / 200) % 2]),
    ]
}

fn request(target: usize) -> ExportMetricsServiceRequest {
    let number = |i: usize, v: f64| NumberDataPoint {
        attributes: attrs(i),
        start_time_unix_nano: NOW - 60_000_000_000,
        time_unix_nano: NOW,
        value: Some(number_data_point::Value::AsDouble(v)),
        exemplars: exemplars(i, 1.0),
        ..Default::default()
    };
    let bounds = vec![
        5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0,
    ];
    let hist = |i: usize| HistogramDataPoint {
        attributes: attrs(i),
        start_time_unix_nano: NOW - 60_000_000_000,
        time_unix_nano: NOW,
        count: 1100,
        sum: Some(123_456.0),
        bucket_counts: (0..=bounds.len() as u64).map(|b| b * 20).collect(),
        explicit_bounds: bounds.clone(),
        exemplars: exemplars(i, 42.0),
        ..Default::default()
    };
    let metrics = vec![
        metric(
            "http.server.requests",
            "Requests served.",
            "{request}",
            Data::Sum(Sum {
                data_points: (0..400).map(|i| number(i, (i * 7) as f64)).collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "http.server.active_requests",
            "Requests in flight.",
            "{request}",
            Data::Gauge(Gauge {
                data_points: (0..400).map(|i| number(i, (i % 13) as f64)).collect(),
            }),
        ),
        metric(
            "http.server.request.duration",
            "Duration of requests.",
            "ms",
            Data::Histogram(Histogram {
                data_points: (0..200).map(hist).collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        ),
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    attr::string("service.name", format!("service-{target}")),
                    attr::string("service.instance.id", format!("pod-{target}")),
                    attr::string("host.name", format!("node-{}", target % 3)),
                    attr::string("telemetry.sdk.language", "rust"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "bench".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn scrape(c: &mut Criterion) {
    let mut store = MetricStore::new(StoreConfig::default());
    let started = Instant::now();
    for t in 0..TARGETS {
        let report = store.apply(&request(t), NOW);
        assert_eq!(report.dropped_total(), 0);
    }
    eprintln!(
        "store filled: {} series in {:.1} ms",
        store.series_count(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(store.series_count(), 10_000);
    let mut g = c.benchmark_group("scrape_10k_series");
    g.measurement_time(Duration::from_secs(10));
    for (name, format) in [("text", Format::Text), ("openmetrics", Format::OpenMetrics)] {
        let size = {
            let mut w = Exposition::new(format);
            store.render(&mut w, NOW);
            w.finish().len()
        };
        eprintln!("{name}: {size} bytes per scrape");
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut w = Exposition::new(format);
                store.render(&mut w, NOW);
                w.finish()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, scrape);
criterion_main!(benches);
