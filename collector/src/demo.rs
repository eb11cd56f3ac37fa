//! `--demo`: traffic of a small shop, fed through the normal ingest path so that a
//! newcomer sees services, logs, traces, errors and slow requests at once.
//!
//! `frontend` serves `GET /checkout`, calls `checkout` (`POST /checkout`), which calls
//! `inventory` (`GET /stock/{sku}`) and `payment` (`POST /pay`). About 4% of payments are
//! declined (errors) and 3% of stock look-ups are slow.

use std::sync::Arc;
use std::time::Duration;

use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    metric, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use lookout_ingest::batch::Batch;
use lookout_ingest::clock::now_unix_nano;
use lookout_ingest::signal::Transport;
use lookout_ingest::Ingest;

const MS: u64 = 1_000_000;
const SERVICES: [&str; 4] = ["frontend", "checkout", "inventory", "payment"];

fn s(v: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    })
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: s(v),
        ..Default::default()
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.instance.id", &format!("{service}-1")),
            kv("deployment.environment.name", "demo"),
            kv("host.name", "demo-host"),
        ],
        ..Default::default()
    }
}

/// One generated request: spans and logs per service.
struct Request {
    spans: Vec<Vec<Span>>,
    logs: Vec<Vec<LogRecord>>,
    declined: bool,
}

#[allow(clippy::too_many_arguments)]
fn mk_span(
    trace: &[u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &str,
    kind: span::SpanKind,
    start: u64,
    dur: u64,
    attrs: Vec<KeyValue>,
    error: Option<&str>,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: attrs,
        status: Some(match error {
            Some(m) => Status {
                code: status::StatusCode::Error as i32,
                message: m.into(),
            },
            None => Status::default(),
        }),
        ..Default::default()
    }
}

fn log(
    trace: &[u8; 16],
    span: [u8; 8],
    t: u64,
    sev: i32,
    text: &str,
    body: String,
    attrs: Vec<KeyValue>,
) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: t,
        severity_number: sev,
        severity_text: text.into(),
        body: s(&body),
        attributes: attrs,
        trace_id: trace.to_vec(),
        span_id: span.to_vec(),
        ..Default::default()
    }
}

fn generate(rng: &mut impl Rng, end: u64) -> Request {
    let trace: [u8; 16] = rng.random();
    let ids: [[u8; 8]; 6] = rng.random();
    let sku = rng.random_range(1000..1100);
    let user = rng.random_range(1..500);
    let items = rng.random_range(1..5);
    let slow = rng.random_bool(0.03);
    let declined = rng.random_bool(0.04);
    let stock_ms = if slow {
        rng.random_range(600..1500)
    } else {
        rng.random_range(3..15)
    };
    let pay_ms = rng.random_range(40..120);
    let checkout_ms = stock_ms + pay_ms + rng.random_range(5..15);
    let total_ms = checkout_ms + rng.random_range(4..10);
    let t0 = end.saturating_sub(total_ms * MS);
    let t1 = t0 + 2 * MS;
    let t2 = t1 + MS;
    let t3 = t2 + stock_ms * MS + MS;
    let err = declined.then_some("card declined");
    let code = if declined { 402 } else { 200 };
    let http = |m: &str, route: &str, status: i64| {
        vec![
            kv("http.request.method", m),
            kv("http.route", route),
            kv_int("http.response.status_code", status),
        ]
    };
    let mut stock_attrs = http("GET", "/stock/{sku}", 200);
    stock_attrs.push(kv("url.path", &format!("/stock/{sku}")));
    let frontend = vec![
        mk_span(
            &trace,
            ids[0],
            None,
            "GET /checkout",
            span::SpanKind::Server,
            t0,
            total_ms * MS,
            http("GET", "/checkout", code),
            err,
        ),
        mk_span(
            &trace,
            ids[1],
            Some(ids[0]),
            "POST /checkout",
            span::SpanKind::Client,
            t1,
            checkout_ms * MS + MS,
            vec![kv("server.address", "checkout")],
            err,
        ),
    ];
    let checkout = vec![
        mk_span(
            &trace,
            ids[2],
            Some(ids[1]),
            "POST /checkout",
            span::SpanKind::Server,
            t1 + MS / 2,
            checkout_ms * MS,
            http("POST", "/checkout", code),
            err,
        ),
        mk_span(
            &trace,
            ids[3],
            Some(ids[2]),
            "GET /stock/{sku}",
            span::SpanKind::Client,
            t2,
            stock_ms * MS + MS / 2,
            vec![kv("server.address", "inventory")],
            None,
        ),
        mk_span(
            &trace,
            ids[5],
            Some(ids[2]),
            "POST /pay",
            span::SpanKind::Client,
            t3,
            pay_ms * MS,
            vec![kv("server.address", "payment")],
            err,
        ),
    ];
    let inventory = vec![mk_span(
        &trace,
        ids[4],
        Some(ids[3]),
        "GET /stock/{sku}",
        span::SpanKind::Server,
        t2 + MS / 4,
        stock_ms * MS,
        stock_attrs,
        None,
    )];
    let pay_id: [u8; 8] = rng.random();
    let payment = vec![mk_span(
        &trace,
        pay_id,
        Some(ids[5]),
        "POST /pay",
        span::SpanKind::Server,
        t3 + MS / 2,
        (pay_ms - 1) * MS,
        http("POST", "/pay", if declined { 402 } else { 200 }),
        err,
    )];
    let user_attr = || kv("enduser.id", &format!("user-{user}"));
    let mut logs = vec![
        vec![log(
            &trace,
            ids[0],
            t0 + MS,
            9,
            "INFO",
            format!("GET /checkout from user-{user}: {items} items in cart"),
            vec![user_attr()],
        )],
        vec![log(
            &trace,
            ids[2],
            t1 + MS,
            9,
            "INFO",
            format!("placing order for user-{user} with {items} items"),
            vec![user_attr(), kv_int("order.items", items)],
        )],
        vec![log(
            &trace,
            ids[4],
            t2 + MS,
            5,
            "DEBUG",
            format!("stock lookup sku={sku} took {stock_ms} ms"),
            vec![kv_int("sku", sku)],
        )],
        vec![],
    ];
    if slow {
        logs[2].push(log(
            &trace,
            ids[3],
            t2 + stock_ms * MS,
            13,
            "WARN",
            format!("slow stock lookup for sku {sku}: {stock_ms} ms (warehouse database is busy)"),
            vec![kv_int("sku", sku), kv_int("duration_ms", stock_ms as i64)],
        ));
    }
    if declined {
        logs[3].push(log(&trace, pay_id, t3 + pay_ms * MS, 17, "ERROR", format!("payment declined for user-{user}: card declined by issuer (code 51, insufficient funds)"), vec![user_attr(), kv("payment.provider", "acme-pay"), kv("error.type", "CardDeclined")]));
        logs[1].push(log(
            &trace,
            ids[2],
            t3 + pay_ms * MS + MS,
            17,
            "ERROR",
            format!("order failed for user-{user}: payment declined"),
            vec![user_attr()],
        ));
    } else {
        logs[3].push(log(
            &trace,
            pay_id,
            t3 + pay_ms * MS,
            9,
            "INFO",
            format!(
                "payment authorised for user-{user}, amount {}.{:02} EUR",
                rng.random_range(5..300),
                rng.random_range(0..100)
            ),
            vec![user_attr(), kv("payment.provider", "acme-pay")],
        ));
    }
    Request {
        spans: vec![frontend, checkout, inventory, payment],
        logs,
        declined,
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lookout-demo".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

fn traces(reqs: &mut [Request]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: SERVICES
            .iter()
            .enumerate()
            .map(|(i, svc)| ResourceSpans {
                resource: Some(resource(svc)),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: reqs
                        .iter_mut()
                        .flat_map(|r| std::mem::take(&mut r.spans[i]))
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn logs(reqs: &mut [Request]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: SERVICES
            .iter()
            .enumerate()
            .map(|(i, svc)| ResourceLogs {
                resource: Some(resource(svc)),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: reqs
                        .iter_mut()
                        .flat_map(|r| std::mem::take(&mut r.logs[i]))
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn metrics(start: u64, now: u64, orders: i64, declined: i64) -> ExportMetricsServiceRequest {
    let point = |v: i64, attrs: Vec<KeyValue>| NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(lookout_proto::otlp::metrics::v1::number_data_point::Value::AsInt(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource("checkout")),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![Metric {
                    name: "shop.orders".into(),
                    description: "Orders placed, by outcome.".into(),
                    unit: "{order}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![
                            point(orders - declined, vec![kv("outcome", "paid")]),
                            point(declined, vec![kv("outcome", "declined")]),
                        ],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Generate shop traffic until `shutdown`: a few requests a second, sent in batches every
/// second, with a metrics export every 10 s.
pub async fn run(ingest: Arc<Ingest>, shutdown: CancellationToken) {
    tracing::info!("demo traffic on: services frontend, checkout, inventory, payment");
    let start = now_unix_nano();
    let (mut orders, mut declined) = (0i64, 0i64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_unix_nano();
        let mut reqs: Vec<Request> = {
            let mut rng = rand::rng();
            let count = rng.random_range(3..8);
            (0..count)
                .map(|i| generate(&mut rng, now.saturating_sub(i * 150 * MS)))
                .collect()
        };
        orders += reqs.len() as i64;
        declined += reqs.iter().filter(|r| r.declined).count() as i64;
        let mut batches = vec![
            Batch::Traces(traces(&mut reqs)),
            Batch::Logs(logs(&mut reqs)),
        ];
        n += 1;
        if n % 10 == 1 {
            batches.push(Batch::Metrics(metrics(start, now, orders, declined)));
        }
        for b in batches {
            if let Err(e) = ingest.export_batch(b, Transport::Internal, 0).await {
                tracing::warn!(error = %e, "demo batch refused");
            }
        }
    }
}
