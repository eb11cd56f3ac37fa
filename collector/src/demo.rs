//! `--demo`: traffic of a small shop, fed through the normal ingest path so that a
//! newcomer sees services, logs, traces, errors and slow requests at once.
//!
//! `frontend` serves `GET /checkout`, calls `checkout` (`POST /checkout`), which calls
//! `inventory` (`GET /stock/{sku}`) and `payment` (`POST /pay`). About 4% of payments are
//! declined (errors) and 3% of stock look-ups are slow.

use std::sync::Arc;
use std::time::Duration;

use lookout_proto::attr;
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

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            attr::string("service.name", service),
            attr::string("service.instance.id", format!("{service}-1")),
            attr::string("deployment.environment.name", "demo"),
            attr::string("host.name", "demo-host"),
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

/// One span of a generated trace.
struct DemoSpan<'a> {
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &'a str,
    kind: span::SpanKind,
    start: u64,
    dur: u64,
    attrs: Vec<KeyValue>,
    error: Option<&'a str>,
}

impl DemoSpan<'_> {
    fn build(self, trace: &[u8; 16]) -> Span {
        Span {
            trace_id: trace.to_vec(),
            span_id: self.id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name.into(),
            kind: self.kind as i32,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.start + self.dur,
            attributes: self.attrs,
            status: Some(match self.error {
                Some(m) => Status {
                    code: status::StatusCode::Error as i32,
                    message: m.into(),
                },
                None => Status::default(),
            }),
            ..Default::default()
        }
    }
}

/// The random choices and the timeline of one request.
struct Shape {
    trace: [u8; 16],
    /// Span ids: frontend server and client, checkout server, stock client, inventory
    /// server, pay client.
    ids: [[u8; 8]; 6],
    pay_id: [u8; 8],
    sku: i64,
    user: u32,
    items: i64,
    slow: bool,
    declined: bool,
    stock_ms: u64,
    pay_ms: u64,
    checkout_ms: u64,
    total_ms: u64,
    /// Start of the frontend request, of the checkout call, of the stock look-up and of
    /// the payment.
    t: [u64; 4],
    /// Amount paid, whole and cents.
    amount: (u32, u32),
}

impl Shape {
    fn random(rng: &mut impl Rng, end: u64) -> Self {
        let slow = rng.random_bool(0.03);
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
        Self {
            trace: rng.random(),
            ids: rng.random(),
            pay_id: rng.random(),
            sku: rng.random_range(1000..1100),
            user: rng.random_range(1..500),
            items: rng.random_range(1..5),
            slow,
            declined: rng.random_bool(0.04),
            stock_ms,
            pay_ms,
            checkout_ms,
            total_ms,
            t: [t0, t1, t2, t3],
            amount: (rng.random_range(5..300), rng.random_range(0..100)),
        }
    }

    /// Spans of frontend, checkout, inventory and payment.
    fn spans(&self) -> Vec<Vec<Span>> {
        let (ids, [t0, t1, t2, t3]) = (self.ids, self.t);
        let err = self.declined.then_some("card declined");
        let code = if self.declined { 402 } else { 200 };
        let http = |m: &str, route: &str, status: i64| {
            vec![
                attr::string("http.request.method", m),
                attr::string("http.route", route),
                attr::int("http.response.status_code", status),
            ]
        };
        let mut stock_attrs = http("GET", "/stock/{sku}", 200);
        stock_attrs.push(attr::string("url.path", format!("/stock/{}", self.sku)));
        let client = |id, parent, name, start, dur, callee, error| DemoSpan {
            id,
            parent: Some(parent),
            name,
            kind: span::SpanKind::Client,
            start,
            dur,
            attrs: vec![attr::string("server.address", callee)],
            error,
        };
        let server = |id, parent, name, start, dur, attrs, error| DemoSpan {
            id,
            parent,
            name,
            kind: span::SpanKind::Server,
            start,
            dur,
            attrs,
            error,
        };
        let (stock_ms, pay_ms, checkout_ms) = (self.stock_ms, self.pay_ms, self.checkout_ms);
        let frontend = [
            server(
                ids[0],
                None,
                "GET /checkout",
                t0,
                self.total_ms * MS,
                http("GET", "/checkout", code),
                err,
            ),
            client(
                ids[1],
                ids[0],
                "POST /checkout",
                t1,
                checkout_ms * MS + MS,
                "checkout",
                err,
            ),
        ];
        let checkout = [
            server(
                ids[2],
                Some(ids[1]),
                "POST /checkout",
                t1 + MS / 2,
                checkout_ms * MS,
                http("POST", "/checkout", code),
                err,
            ),
            client(
                ids[3],
                ids[2],
                "GET /stock/{sku}",
                t2,
                stock_ms * MS + MS / 2,
                "inventory",
                None,
            ),
            client(ids[5], ids[2], "POST /pay", t3, pay_ms * MS, "payment", err),
        ];
        let inventory = [server(
            ids[4],
            Some(ids[3]),
            "GET /stock/{sku}",
            t2 + MS / 4,
            stock_ms * MS,
            stock_attrs,
            None,
        )];
        let payment = [server(
            self.pay_id,
            Some(ids[5]),
            "POST /pay",
            t3 + MS / 2,
            (pay_ms - 1) * MS,
            http("POST", "/pay", code),
            err,
        )];
        let build = |spans: &mut dyn Iterator<Item = DemoSpan<'_>>| -> Vec<Span> {
            spans.map(|s| s.build(&self.trace)).collect()
        };
        vec![
            build(&mut frontend.into_iter()),
            build(&mut checkout.into_iter()),
            build(&mut inventory.into_iter()),
            build(&mut payment.into_iter()),
        ]
    }

    /// Logs of frontend, checkout, inventory and payment.
    fn logs(&self) -> Vec<Vec<LogRecord>> {
        let (ids, [t0, t1, t2, t3]) = (self.ids, self.t);
        let (user, items, sku, stock_ms, pay_ms) =
            (self.user, self.items, self.sku, self.stock_ms, self.pay_ms);
        let log = |span: [u8; 8], t: u64, sev: i32, text: &str, body: String, attrs| LogRecord {
            time_unix_nano: t,
            observed_time_unix_nano: t,
            severity_number: sev,
            severity_text: text.into(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(body)),
            }),
            attributes: attrs,
            trace_id: self.trace.to_vec(),
            span_id: span.to_vec(),
            ..Default::default()
        };
        let user_attr = || attr::string("enduser.id", format!("user-{user}"));
        let mut logs = vec![
            vec![log(
                ids[0],
                t0 + MS,
                9,
                "INFO",
                format!("GET /checkout from user-{user}: {items} items in cart"),
                vec![user_attr()],
            )],
            vec![log(
                ids[2],
                t1 + MS,
                9,
                "INFO",
                format!("placing order for user-{user} with {items} items"),
                vec![user_attr(), attr::int("order.items", items)],
            )],
            vec![log(
                ids[4],
                t2 + MS,
                5,
                "DEBUG",
                format!("stock lookup sku={sku} took {stock_ms} ms"),
                vec![attr::int("sku", sku)],
            )],
            vec![],
        ];
        if self.slow {
            logs[2].push(log(
                ids[3],
                t2 + stock_ms * MS,
                13,
                "WARN",
                format!(
                    "slow stock lookup for sku {sku}: {stock_ms} ms (warehouse database is busy)"
                ),
                vec![
                    attr::int("sku", sku),
                    attr::int("duration_ms", stock_ms as i64),
                ],
            ));
        }
        let paid = t3 + pay_ms * MS;
        if self.declined {
            logs[3].push(log(self.pay_id, paid, 17, "ERROR", format!("payment declined for user-{user}: card declined by issuer (code 51, insufficient funds)"), vec![user_attr(), attr::string("payment.provider", "acme-pay"), attr::string("error.type", "CardDeclined")]));
            logs[1].push(log(
                ids[2],
                paid + MS,
                17,
                "ERROR",
                format!("order failed for user-{user}: payment declined"),
                vec![user_attr()],
            ));
        } else {
            let (whole, cents) = self.amount;
            logs[3].push(log(
                self.pay_id,
                paid,
                9,
                "INFO",
                format!("payment authorised for user-{user}, amount {whole}.{cents:02} EUR"),
                vec![user_attr(), attr::string("payment.provider", "acme-pay")],
            ));
        }
        logs
    }
}

fn generate(rng: &mut impl Rng, end: u64) -> Request {
    let shape = Shape::random(rng, end);
    Request {
        spans: shape.spans(),
        logs: shape.logs(),
        declined: shape.declined,
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
                            point(orders - declined, vec![attr::string("outcome", "paid")]),
                            point(declined, vec![attr::string("outcome", "declined")]),
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
