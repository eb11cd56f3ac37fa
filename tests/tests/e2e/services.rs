//! Services without server spans: a worker whose spans are internal roots, a callee reached
//! through a client span, services that only log or only send metrics, and a client span
//! to a peer that sends nothing. All sent with the `opentelemetry-otlp` exporter.

use std::time::Duration;

use lookout_tests::{get_json, poll, Collector};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::Value;

const CONFIG: &str = "[traces]\ncompletion_window = \"1s\"\ngraph_pair_wait = \"1s\"\n";

fn tracer_provider(c: &Collector, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(c.grpc_url())
        .build()
        .expect("span exporter");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build()
}

fn service<'a>(res: &'a Value, name: &str) -> Option<&'a Value> {
    res["services"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_server_spans_are_listed_counted_and_drawn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), CONFIG);

    // A worker: three jobs, each an internal root span.
    let worker = tracer_provider(&c, "worker");
    let t = worker.tracer("e2e");
    for job in ["resize", "resize", "notify"] {
        t.start(job).end();
    }

    // web serves a request and calls billing (which has no server span, only an internal
    // span under web's client span, context propagated) and a database that sends nothing.
    let web = tracer_provider(&c, "web");
    let billing = tracer_provider(&c, "billing");
    let tw = web.tracer("e2e");
    let server = tw
        .span_builder("GET /order")
        .with_kind(SpanKind::Server)
        .start(&tw);
    let cx = Context::current_with_span(server);
    let client = tw
        .span_builder("POST /charge")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("server.address", "billing.internal")])
        .start_with_context(&tw, &cx);
    // What a propagator's extract gives the callee: the caller's context, marked remote.
    let sent = client.span_context();
    let remote = Context::new().with_remote_span_context(SpanContext::new(
        sent.trace_id(),
        sent.span_id(),
        sent.trace_flags(),
        true,
        sent.trace_state().clone(),
    ));
    let tb = billing.tracer("e2e");
    let mut charge = tb.start_with_context("charge card", &remote);
    tb.start_with_context("sign", &Context::current_with_span(tb.start("noop")))
        .end();
    charge.set_attribute(KeyValue::new("amount", 3));
    charge.end();
    let mut client = client;
    client.end();
    tw.span_builder("SELECT orders")
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("peer.service", "orders-db")])
        .start_with_context(&tw, &cx)
        .end();
    cx.span().end();

    // A service that only logs, and one that only sends metrics.
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(c.grpc_url())
                .build()
                .expect("log exporter"),
        )
        .with_resource(Resource::builder().with_service_name("only-logs").build())
        .build();
    let logger = logger_provider.logger("e2e");
    let mut rec = logger.create_log_record();
    rec.set_body(AnyValue::from("nightly cleanup done"));
    logger.emit(rec);
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(c.grpc_url())
                .build()
                .expect("metric exporter"),
        )
        .with_resource(
            Resource::builder()
                .with_service_name("only-metrics")
                .build(),
        )
        .build();
    meter_provider
        .meter("e2e")
        .u64_counter("jobs")
        .build()
        .add(1, &[]);
    tokio::task::spawn_blocking(move || {
        for p in [worker, web, billing] {
            p.shutdown().expect("tracer shutdown");
        }
        logger_provider.shutdown().expect("logger shutdown");
        meter_provider.shutdown().expect("meter shutdown");
    })
    .await
    .expect("shutdown task");

    let url = c.api_url("/api/v1/services?window=5m");
    let res = poll(Duration::from_secs(15), "every service listed", || async {
        let (_, b) = get_json(&url).await;
        ["worker", "web", "billing", "only-logs", "only-metrics"]
            .iter()
            .all(|s| service(&b, s).is_some())
            .then_some(b)
    })
    .await;
    let requests = |s: &str| service(&res, s).map(|v| v["requests"].clone());
    // Internal roots are the worker's requests; billing's entry is the span under web's
    // client span; web's client spans are not requests. billing's "noop" root counts too.
    assert_eq!(requests("worker"), Some(3.into()), "{res}");
    assert_eq!(requests("web"), Some(1.into()), "{res}");
    assert_eq!(requests("billing"), Some(2.into()), "{res}");
    assert_eq!(requests("only-logs"), Some(0.into()), "{res}");
    let signals = |s: &str| service(&res, s).map(|v| v["signals"].clone());
    assert_eq!(
        signals("only-logs"),
        Some(serde_json::json!(["logs"])),
        "{res}"
    );
    assert_eq!(
        signals("only-metrics"),
        Some(serde_json::json!(["metrics"])),
        "{res}"
    );
    assert_eq!(signals("web"), Some(serde_json::json!(["traces"])), "{res}");
    let worker_ops: Vec<&str> = service(&res, "worker").expect("worker")["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|o| o["operation"].as_str())
        .collect();
    assert_eq!(worker_ops, ["resize", "notify"], "{res}");

    // The graph: web → billing through the client span, web → orders-db inferred from
    // the client span's peer.service once the pair wait is over.
    let deps = poll(Duration::from_secs(15), "both edges", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/dependencies")).await;
        (b["edges"].as_array().map(Vec::len) == Some(2)).then_some(b)
    })
    .await;
    let edge = |callee: &str| {
        deps["edges"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["callee"] == callee))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(edge("billing")["caller"], "web", "{deps}");
    assert_eq!(edge("billing")["calls"], 1, "{deps}");
    assert_eq!(edge("billing")["inferred"], false, "{deps}");
    assert_eq!(edge("orders-db")["caller"], "web", "{deps}");
    assert_eq!(edge("orders-db")["inferred"], true, "{deps}");
    assert!(edge("billing.internal").is_null(), "{deps}");
}
