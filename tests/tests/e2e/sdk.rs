//! The real OpenTelemetry Rust SDK exporters (`opentelemetry-otlp`) send traces, logs and
//! metrics over gRPC and HTTP, with and without gzip; every item is then found through the
//! query API (metrics through the collector's own counters until the metrics API exists).

use std::time::Duration;

use lookout_tests::{get_json, metric_value, poll, Collector, FAST_TRACES};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig,
    WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::util::flush_and_shut_down;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

struct Case {
    name: &'static str,
    transport: Transport,
    gzip: bool,
}

/// The three exporters of `case`, built from their (gRPC or HTTP) builders.
fn exporters(c: &Collector, case: &Case) -> (SpanExporter, LogExporter, MetricExporter) {
    let gzip = case.gzip.then_some(Compression::Gzip);
    match case.transport {
        Transport::Grpc => {
            let url = c.grpc_url();
            (
                over_grpc(SpanExporter::builder().with_tonic(), &url, gzip)
                    .build()
                    .expect("span exporter"),
                over_grpc(LogExporter::builder().with_tonic(), &url, gzip)
                    .build()
                    .expect("log exporter"),
                over_grpc(MetricExporter::builder().with_tonic(), &url, gzip)
                    .build()
                    .expect("metric exporter"),
            )
        }
        Transport::HttpProtobuf | Transport::HttpJson => {
            let protocol = match case.transport {
                Transport::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            let http = |path: &str| (c.http_url(path), protocol, gzip);
            (
                over_http(SpanExporter::builder().with_http(), http("/v1/traces"))
                    .build()
                    .expect("span exporter"),
                over_http(LogExporter::builder().with_http(), http("/v1/logs"))
                    .build()
                    .expect("log exporter"),
                over_http(MetricExporter::builder().with_http(), http("/v1/metrics"))
                    .build()
                    .expect("metric exporter"),
            )
        }
    }
}

/// A gRPC exporter builder sending to `url`, compressed with `gzip` if set.
fn over_grpc<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    url: &str,
    gzip: Option<Compression>,
) -> B {
    let builder = builder.with_endpoint(url);
    match gzip {
        Some(z) => builder.with_compression(z),
        None => builder,
    }
}

/// An HTTP exporter builder sending to a URL with a protocol, compressed if set.
fn over_http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    (url, protocol, gzip): (String, Protocol, Option<Compression>),
) -> B {
    let builder = builder.with_protocol(protocol).with_endpoint(url);
    match gzip {
        Some(z) => builder.with_compression(z),
        None => builder,
    }
}

/// Send one trace of 4 spans, 5 logs and 2 metric points; check all arrive.
async fn roundtrip(case: Case) {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);
    let service = format!("sdk-{}", case.name);
    let marker = format!("sdkmark{}", case.name.replace('-', ""));
    let resource = Resource::builder()
        .with_service_name(service.clone())
        .build();
    let (span_exp, log_exp, metric_exp) = exporters(&c, &case);
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exp)
        .with_resource(resource.clone())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exp)
        .with_resource(resource.clone())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(metric_exp)
        .with_resource(resource)
        .build();

    let tracer = tracer_provider.tracer("lookout-e2e");
    let logger = logger_provider.logger("lookout-e2e");
    let mut root = tracer.start("GET /checkout");
    root.set_attribute(KeyValue::new("http.route", "/checkout"));
    let trace_id = root.span_context().trace_id().to_string();
    let root_id = root.span_context().span_id().to_string();
    let cx = Context::current_with_span(root);
    let mut child_ids = Vec::new();
    for i in 0..3 {
        let mut child = tracer.start_with_context(format!("step {i}"), &cx);
        child.set_attribute(KeyValue::new("step", i as i64));
        if i == 2 {
            child.set_status(Status::error("card declined"));
        }
        child_ids.push(child.span_context().span_id().to_string());
        // Logs 0..3 belong to the child spans.
        let mut rec = logger.create_log_record();
        rec.set_body(AnyValue::from(format!("{marker} step {i} done")));
        rec.set_severity_number(if i == 2 {
            Severity::Error
        } else {
            Severity::Info
        });
        rec.set_severity_text(if i == 2 { "ERROR" } else { "INFO" });
        rec.add_attribute("step", format!("s{i}"));
        rec.set_trace_context(
            child.span_context().trace_id(),
            child.span_context().span_id(),
            None,
        );
        logger.emit(rec);
        child.end();
    }
    cx.span().end();
    for i in 3..5 {
        let mut rec = logger.create_log_record();
        rec.set_body(AnyValue::from(format!("{marker} background {i}")));
        rec.set_severity_number(Severity::Warn);
        rec.add_attribute("step", format!("s{i}"));
        logger.emit(rec);
    }
    let meter = meter_provider.meter("lookout-e2e");
    meter
        .u64_counter("orders")
        .build()
        .add(3, &[KeyValue::new("outcome", "paid")]);
    meter
        .f64_histogram("checkout.duration")
        .with_unit("ms")
        .build()
        .record(12.5, &[]);

    flush_and_shut_down(tracer_provider, Some(logger_provider), meter_provider).await;

    // Traces: the whole trace by id, with parents.
    let trace = poll(Duration::from_secs(15), "trace from the SDK", || async {
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{trace_id}"))).await;
        (s == 200 && b["spans"].as_array().map(Vec::len) == Some(4)).then_some(b)
    })
    .await;
    let spans = trace["spans"].as_array().expect("spans");
    for s in spans {
        assert_eq!(s["service"], service.as_str(), "{s}");
        if s["span_id"] == root_id.as_str() {
            assert!(s.get("parent_span_id").is_none(), "{s}");
            assert_eq!(s["attributes"]["http.route"], "/checkout");
        } else {
            assert_eq!(s["parent_span_id"], root_id.as_str(), "{s}");
            assert!(
                child_ids.iter().any(|id| s["span_id"] == id.as_str()),
                "{s}"
            );
        }
    }
    assert_eq!(spans.iter().filter(|s| s["status"] == "error").count(), 1);
    // Searchable once complete (idle for the 1 s completion window).
    let found = poll(Duration::from_secs(15), "completed trace", || async {
        let (_, b) =
            get_json(&c.api_url(&format!("/api/v1/traces?service={service}&status=error"))).await;
        (b["traces"].as_array().map(Vec::len) == Some(1)).then_some(b)
    })
    .await;
    assert_eq!(found["traces"][0]["state"], "complete", "{found}");
    assert_eq!(found["traces"][0]["trace_id"], trace_id.as_str(), "{found}");
    assert_eq!(
        found["traces"][0]["root_operation"], "GET /checkout",
        "{found}"
    );

    // Logs: all five, with their attributes and trace context.
    let logs = poll(Duration::from_secs(15), "logs from the SDK", || async {
        let (_, b) = get_json(&c.api_url(&format!(
            "/api/v1/logs?q={marker}&service={service}&limit=100"
        )))
        .await;
        (b["total"] == 5).then_some(b)
    })
    .await;
    for l in logs["logs"].as_array().expect("logs") {
        let body = l["body"].as_str().expect("body");
        assert!(body.starts_with(&marker), "{l}");
        assert!(
            l["attributes"]["step"]
                .as_str()
                .is_some_and(|s| s.starts_with('s')),
            "{l}"
        );
        if body.contains(" step ") {
            assert_eq!(l["trace_id"], trace_id.as_str(), "{l}");
            assert!(
                child_ids.iter().any(|id| l["span_id"] == id.as_str()),
                "{l}"
            );
        } else {
            assert!(l.get("trace_id").is_none(), "{l}");
            assert_eq!(l["severity"], "warn", "{l}");
        }
    }
    let (_, errors) =
        get_json(&c.api_url(&format!("/api/v1/logs?q={marker}&severity=error"))).await;
    assert_eq!(errors["total"], 1, "{errors}");

    // Metrics: both data points accepted on this transport.
    let label = match case.transport {
        Transport::Grpc => "grpc",
        _ => "http",
    };
    let text = c.metrics().await;
    let series = format!(
        "lookout_receiver_accepted_items_total{{signal=\"metrics\",transport=\"{label}\"}}"
    );
    let points = metric_value(&text, &series).unwrap_or(0.0);
    assert!(points >= 2.0, "{series} = {points}\n{}", c.output());
    // No request refused (the series exists from the start, at 0).
    assert_eq!(metric_value(&text, &format!("lookout_receiver_requests_total{{outcome=\"invalid\",signal=\"traces\",transport=\"{label}\"}}")), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_plain() {
    roundtrip(Case {
        name: "grpc-plain",
        transport: Transport::Grpc,
        gzip: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_gzip() {
    roundtrip(Case {
        name: "grpc-gzip",
        transport: Transport::Grpc,
        gzip: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_plain() {
    roundtrip(Case {
        name: "http-plain",
        transport: Transport::HttpProtobuf,
        gzip: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_gzip() {
    roundtrip(Case {
        name: "http-gzip",
        transport: Transport::HttpProtobuf,
        gzip: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_json() {
    roundtrip(Case {
        name: "http-json",
        transport: Transport::HttpJson,
        gzip: false,
    })
    .await;
}
