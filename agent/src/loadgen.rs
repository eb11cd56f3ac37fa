//! `lookout-loadgen`: drives an OTLP receiver with realistic traces, logs or metrics at a
//! fixed rate or as fast as it answers, and reports what was acknowledged.
//!
//! Every request is generated fresh (ids from a fast PRNG, so they are unique in a run),
//! which costs well under a microsecond per item: far below what a receiver spends.
//! Overload answers (HTTP 429/503, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED) are counted and
//! the sending worker waits the server's retry hint, like an OTLP exporter would, so the
//! acknowledged rate is the receiver's sustained rate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use lookout_proto::attr;
use lookout_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use lookout_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use lookout_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use lookout_proto::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use lookout_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use lookout_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, SpanFlags, Status,
};
use prost::Message;
use serde::Serialize;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

/// Which OTLP signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalArg {
    /// Spans, in traces of the `--trace-shape`.
    Traces,
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
    /// Shop traces with the logs of their spans (same trace and span ids, same services)
    /// and metrics: about 0.4 log records and 0.1 data points per span.
    #[value(alias = "mixed")]
    All,
}

/// Transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolArg {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP.
    Http,
}

/// HTTP body encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingArg {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

/// Load generator for OTLP receivers.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lookout-loadgen",
    version,
    after_help = "Examples:\n  lookout-loadgen --signal traces --duration 30s\n  lookout-loadgen --protocol http --signal logs --rate 40000 --gzip\n  taskset -c 1 lookout-loadgen --signal traces --concurrency 8 --json"
)]
pub struct Args {
    /// Receiver URL [default: http://127.0.0.1:4317 for grpc, http://127.0.0.1:4318 for http].
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Transport.
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: ProtocolArg,
    /// HTTP body encoding (http only).
    #[arg(long, value_enum, default_value = "protobuf")]
    pub encoding: EncodingArg,
    /// Signal to send.
    #[arg(long, value_enum, default_value = "traces")]
    pub signal: SignalArg,
    /// Items per second over all workers; 0 sends as fast as the receiver answers. At a
    /// fixed rate every request due within `--duration` is sent, late if the receiver
    /// fell behind.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long to send, e.g. 10s, 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Items per request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// gzip request bodies.
    #[arg(long)]
    pub gzip: bool,
    /// Distinct services (resources) the data comes from.
    #[arg(long, default_value_t = 5)]
    pub services: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Runtime worker threads (pin the process with taskset).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Fraction of traces that fail: a span with status ERROR and an `exception` event,
    /// propagated to the root, and an ERROR log (with `--signal all`).
    #[arg(long, default_value_t = 0.02, value_parser = fraction)]
    pub error_rate: f64,
    /// Fraction of traces with one slow operation (a query or call of 0.8 to 4 s).
    #[arg(long, default_value_t = 0.01, value_parser = fraction)]
    pub slow_rate: f64,
    /// Shape of traces.
    #[arg(long, value_enum, default_value = "shop")]
    pub trace_shape: TraceShape,
    /// Only generate and encode requests, sending nothing: measures the generator.
    #[arg(long)]
    pub dry_run: bool,
}

/// A `--error-rate` or `--slow-rate` that is not a number in `[0, 1]`.
#[derive(Debug, thiserror::Error)]
#[error("expected a fraction between 0 and 1, got {0:?}")]
struct FractionError(String);

fn fraction(s: &str) -> Result<f64, FractionError> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(FractionError(s.to_string())),
    }
}

impl Default for Args {
    /// The command-line defaults (no `--endpoint`).
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: ProtocolArg::Grpc,
            encoding: EncodingArg::Protobuf,
            signal: SignalArg::Traces,
            rate: 0,
            duration: Duration::from_secs(10),
            batch: 512,
            concurrency: 8,
            gzip: false,
            services: 5,
            json: false,
            threads: 1,
            error_rate: 0.02,
            slow_rate: 0.01,
            trace_shape: TraceShape::Shop,
            dry_run: false,
        }
    }
}

/// What a run achieved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Items in requests sent.
    pub items_sent: u64,
    /// Items in requests answered with success, minus those reported rejected.
    pub items_acked: u64,
    /// Items the receiver reported rejected in `partial_success`.
    pub items_rejected: u64,
    /// Successful requests.
    pub requests_ok: u64,
    /// Failed requests.
    pub requests_failed: u64,
    /// Failures by kind: gRPC code or HTTP status, or the transport error.
    pub errors: BTreeMap<String, u64>,
    /// Seconds spent sending.
    pub elapsed_s: f64,
    /// Acknowledged items per second.
    pub items_per_s: f64,
    /// Uncompressed protobuf megabytes per second acknowledged.
    pub mb_per_s: f64,
    /// Request latency percentiles, milliseconds.
    pub latency_p50_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
    /// Slowest request.
    pub latency_max_ms: f64,
    /// Per signal sent (`traces`, `logs`, `metrics`): items and requests.
    pub signals: BTreeMap<String, SignalSummary>,
    /// Traces generated (with `--signal traces` or `all`).
    pub traces: u64,
    /// Of which chosen to fail (`--error-rate`).
    pub error_traces: u64,
    /// Of which chosen to be slow (`--slow-rate`).
    pub slow_traces: u64,
    /// Nothing was sent (`--dry-run`): "acknowledged" counts what was generated and encoded.
    pub dry_run: bool,
}

/// What a run sent of one signal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignalSummary {
    /// Items in requests sent.
    pub items_sent: u64,
    /// Items acknowledged (as [`Summary::items_acked`]).
    pub items_acked: u64,
    /// Successful requests.
    pub requests_ok: u64,
}

/// A fast PRNG (xorshift64*), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut v = Vec::with_capacity(N);
        while v.len() < N {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(N);
        v
    }
}

/// The services of the simulated shop.
pub const SERVICES: [&str; 8] = [
    "frontend",
    "checkout",
    "payment",
    "inventory",
    "shipping",
    "email",
    "cart",
    "ads",
];
const ROUTES: [&str; 6] = [
    "/api/cart",
    "/api/checkout",
    "/api/products/{id}",
    "/api/pay",
    "/api/stock/{sku}",
    "/",
];
/// Words log bodies and names are made of.
pub const WORDS: [&str; 40] = [
    "request",
    "completed",
    "user",
    "cart",
    "payment",
    "declined",
    "timeout",
    "retry",
    "cache",
    "miss",
    "database",
    "query",
    "slow",
    "order",
    "shipped",
    "inventory",
    "stock",
    "reserved",
    "token",
    "expired",
    "session",
    "created",
    "upstream",
    "error",
    "connection",
    "pool",
    "exhausted",
    "latency",
    "budget",
    "exceeded",
    "warehouse",
    "label",
    "printed",
    "invoice",
    "sent",
    "customer",
    "address",
    "validated",
    "currency",
    "converted",
];

fn s(v: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

fn resource(service: &str, instance: usize) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            attr::string("service.name", service),
            attr::string("service.instance.id", format!("{service}-{instance}")),
            attr::string("host.name", format!("node-{instance}")),
        ],
        ..Default::default()
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Shape of generated traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceShape {
    /// Request trees across the shop's services (frontend → checkout → payment,
    /// inventory, shipping, ...) with client/server span pairs and HTTP, RPC and database
    /// attributes: 3 to 20 spans per trace.
    Shop,
    /// Eight spans of one service per trace (the shape of the figures in
    /// docs/BENCHMARKS.md).
    Flat,
    /// The flat shape with 20 attributes per span (the flat shape's eight and twelve more).
    Wide,
    /// Traces of 1,000 spans of one service: a root and its children.
    Large,
}

/// A service of the shop, as an index into [`SERVICES`].
type Svc = usize;
const FRONTEND: Svc = 0;
const CHECKOUT: Svc = 1;
const PAYMENT: Svc = 2;
const INVENTORY: Svc = 3;
const SHIPPING: Svc = 4;
const EMAIL: Svc = 5;
const CART: Svc = 6;
const ADS: Svc = 7;

/// An operation a service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Home,
    Product,
    AddToCart,
    Checkout,
    PlaceOrder,
    GetCart,
    AddItem,
    GetProduct,
    ListProducts,
    ReserveStock,
    Charge,
    GetQuote,
    ShipOrder,
    SendConfirmation,
    GetAds,
}

/// One outgoing call of an operation.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// gRPC to another service.
    Rpc(Svc, Op),
    /// A database or cache: system, operation, collection, query text.
    Db(&'static str, &'static str, &'static str, &'static str),
    /// An HTTP API outside the shop: method, host, path.
    External(&'static str, &'static str, &'static str),
}

impl Op {
    /// Service, RPC service name (empty for the HTTP frontend) and method or route.
    fn describe(self) -> (Svc, &'static str, &'static str) {
        match self {
            Op::Home => (FRONTEND, "", "/"),
            Op::Product => (FRONTEND, "", "/api/products/{id}"),
            Op::AddToCart => (FRONTEND, "", "/api/cart"),
            Op::Checkout => (FRONTEND, "", "/api/checkout"),
            Op::PlaceOrder => (CHECKOUT, "shop.CheckoutService", "PlaceOrder"),
            Op::GetCart => (CART, "shop.CartService", "GetCart"),
            Op::AddItem => (CART, "shop.CartService", "AddItem"),
            Op::GetProduct => (INVENTORY, "shop.InventoryService", "GetProduct"),
            Op::ListProducts => (INVENTORY, "shop.InventoryService", "ListProducts"),
            Op::ReserveStock => (INVENTORY, "shop.InventoryService", "ReserveStock"),
            Op::Charge => (PAYMENT, "shop.PaymentService", "Charge"),
            Op::GetQuote => (SHIPPING, "shop.ShippingService", "GetQuote"),
            Op::ShipOrder => (SHIPPING, "shop.ShippingService", "ShipOrder"),
            Op::SendConfirmation => (EMAIL, "shop.EmailService", "SendOrderConfirmation"),
            Op::GetAds => (ADS, "shop.AdService", "GetAds"),
        }
    }

    /// HTTP method of a frontend route.
    fn method(self) -> &'static str {
        match self {
            Op::AddToCart | Op::Checkout => "POST",
            _ => "GET",
        }
    }

    fn calls(self) -> &'static [Call] {
        use Call::*;
        match self {
            Op::Home => &[Rpc(INVENTORY, Op::ListProducts), Rpc(ADS, Op::GetAds)],
            Op::Product => &[
                Rpc(INVENTORY, Op::GetProduct),
                Rpc(CART, Op::GetCart),
                Rpc(ADS, Op::GetAds),
            ],
            Op::AddToCart => &[Rpc(INVENTORY, Op::GetProduct), Rpc(CART, Op::AddItem)],
            Op::Checkout => &[Rpc(CHECKOUT, Op::PlaceOrder)],
            Op::PlaceOrder => &[
                Rpc(CART, Op::GetCart),
                Rpc(INVENTORY, Op::ReserveStock),
                Rpc(SHIPPING, Op::GetQuote),
                Rpc(PAYMENT, Op::Charge),
                Db(
                    "postgresql",
                    "INSERT",
                    "orders",
                    "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
                ),
                Rpc(SHIPPING, Op::ShipOrder),
                Rpc(EMAIL, Op::SendConfirmation),
            ],
            Op::GetCart => &[Db("redis", "HGETALL", "cart", "HGETALL cart:{user}")],
            Op::AddItem => &[Db("redis", "HSET", "cart", "HSET cart:{user} {sku} {qty}")],
            Op::GetProduct => &[Db(
                "postgresql",
                "SELECT",
                "products",
                "SELECT id, name, price, stock FROM products WHERE id = $1",
            )],
            Op::ListProducts => &[Db(
                "postgresql",
                "SELECT",
                "products",
                "SELECT id, name, price FROM products ORDER BY rank LIMIT 20",
            )],
            Op::ReserveStock => &[Db(
                "postgresql",
                "UPDATE",
                "stock",
                "UPDATE stock SET reserved = reserved + $1 WHERE sku = $2 AND available >= $1",
            )],
            Op::Charge => &[External("POST", "api.payments.example", "/v1/charges")],
            Op::GetQuote => &[],
            Op::ShipOrder => &[
                Db(
                    "postgresql",
                    "INSERT",
                    "shipments",
                    "INSERT INTO shipments (order_id, carrier, address) VALUES ($1, $2, $3)",
                ),
                External("POST", "api.carrier.example", "/labels"),
            ],
            Op::SendConfirmation => &[External("POST", "smtp-relay.example", "/send")],
            Op::GetAds => &[],
        }
    }
}

/// Frontend routes and their weights out of 100.
const ROUTE_MIX: [(Op, usize); 4] = [
    (Op::Home, 30),
    (Op::Product, 40),
    (Op::AddToCart, 18),
    (Op::Checkout, 12),
];

/// Failures: exception type and message, by what failed.
const DB_ERRORS: [(&str, &str); 2] = [
    (
        "PostgresError",
        "canceling statement due to statement timeout",
    ),
    (
        "PoolTimeoutError",
        "connection pool exhausted: timed out after 5s",
    ),
];
const EXTERNAL_ERRORS: [(&str, &str); 2] = [
    ("HttpError", "upstream answered 503 Service Unavailable"),
    ("PaymentDeclined", "card declined: insufficient funds"),
];

/// `requests` trace requests as the load generator sends them with `args` (trace shape,
/// batch, services, error and slow rates), from generator seed `seed`, the last trace
/// ending now: for benchmarks of what stores them.
pub fn trace_requests(args: &Args, seed: u64, requests: usize) -> Vec<ExportTraceServiceRequest> {
    let args = Args {
        signal: SignalArg::Traces,
        ..args.clone()
    };
    let mut gen = Gen::new(&args, Rng(seed | 1), now_ns());
    let mut out = Vec::with_capacity(requests);
    while out.len() < requests {
        if let Request::Traces(r) = gen.next_request(&args) {
            out.push(r);
        }
    }
    out
}

/// Counts of what a generator produced.
#[derive(Debug, Clone, Copy, Default)]
struct GenStats {
    traces: u64,
    error_traces: u64,
    slow_traces: u64,
}

/// What failed in an operation: the exception type and message.
type Failure = (&'static str, String);

/// One trace under construction: what is still to inject, times relative to its start.
struct TraceCtx {
    trace_id: Vec<u8>,
    fail: bool,
    slow: bool,
}

/// Per-worker generator of shop traces, their logs and metrics, handing out requests of
/// exactly `batch` items. Spans wait until `batch` of them are ready (a trace may span two
/// requests, as with a batching exporter); a log is handed out only after the spans of
/// its trace were, so the logs of a run refer to spans the run sent.
struct Gen {
    rng: Rng,
    services: usize,
    batch: usize,
    error_rate: f64,
    slow_rate: f64,
    with_logs: bool,
    with_metrics: bool,
    start_ns: u64,
    resources: Vec<Resource>,
    spans: VecDeque<(Svc, Span)>,
    logs: VecDeque<(u64, Svc, LogRecord)>,
    logs_ready: usize,
    spans_made: u64,
    spans_taken: u64,
    metric_credit: u64,
    stats: GenStats,
}

/// With `--signal all`, one metric data point per this many spans generated.
const SPANS_PER_METRIC_POINT: u64 = 10;

impl Gen {
    fn new(args: &Args, rng: Rng, start_ns: u64) -> Self {
        let resources = (0..SERVICES.len() * 3)
            .filter_map(|i| resource(SERVICES[i / 3], i % 3))
            .collect();
        Self {
            rng,
            services: args.services.clamp(1, SERVICES.len()),
            batch: args.batch,
            error_rate: args.error_rate,
            slow_rate: args.slow_rate,
            with_logs: args.signal == SignalArg::All,
            with_metrics: args.signal == SignalArg::All,
            start_ns,
            resources,
            spans: VecDeque::with_capacity(args.batch + 64),
            logs: VecDeque::with_capacity(args.batch + 64),
            logs_ready: 0,
            spans_made: 0,
            spans_taken: 0,
            metric_credit: 0,
            stats: GenStats::default(),
        }
    }

    /// `svc` folded onto the first `--services` services: the frontend stays, back-end
    /// services share the others, so a call crosses services whenever there are two.
    fn svc(&self, svc: Svc) -> Svc {
        match (svc, self.services) {
            (FRONTEND, _) | (_, 1) => FRONTEND,
            (svc, n) => 1 + (svc - 1) % (n - 1),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.rng.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A duration between `lo` and `hi` microseconds, in nanoseconds.
    fn us(&mut self, lo: u64, hi: u64) -> u64 {
        (lo + self.rng.next() % (hi - lo).max(1)) * 1000
    }

    /// The next request of the configured signal (`traces` or `all`).
    fn next_request(&mut self, args: &Args) -> Request {
        loop {
            if self.spans.len() >= self.batch {
                return Request::Traces(self.take_spans());
            }
            if self.logs_ready >= self.batch {
                return Request::Logs(self.take_logs());
            }
            let points_cost = self.batch as u64 * SPANS_PER_METRIC_POINT;
            if self.metric_credit >= points_cost {
                self.metric_credit -= points_cost;
                return Request::Metrics(metrics(
                    &mut self.rng,
                    self.batch,
                    args.services,
                    self.start_ns,
                ));
            }
            match args.trace_shape {
                TraceShape::Shop => self.shop_trace(),
                TraceShape::Flat => self.flat_trace(),
                TraceShape::Wide => self.wide_trace(),
                TraceShape::Large => self.large_trace(),
            }
            // The trace's logs become ready once all its spans have been sent.
            let sent_by = self.spans_taken + self.spans.len() as u64;
            for entry in self.logs.iter_mut().rev() {
                if entry.0 != u64::MAX {
                    break;
                }
                entry.0 = sent_by;
            }
        }
    }

    /// Groups `items` by service, each group under one of its service's resources, and
    /// wraps each group with `wrap`.
    fn group<T, R>(
        &mut self,
        items: impl Iterator<Item = (Svc, T)>,
        wrap: impl Fn(Option<Resource>, Vec<T>) -> R,
    ) -> Vec<R> {
        let mut by_service: [Vec<T>; SERVICES.len()] = Default::default();
        for (svc, item) in items {
            by_service[svc].push(item);
        }
        let mut out = Vec::new();
        for (svc, items) in by_service.into_iter().enumerate() {
            if !items.is_empty() {
                let r = self.resources.get(svc * 3 + self.rng.below(3)).cloned();
                out.push(wrap(r, items));
            }
        }
        out
    }

    fn take_spans(&mut self) -> ExportTraceServiceRequest {
        let n = self.batch.min(self.spans.len());
        self.spans_taken += n as u64;
        let drained: Vec<(Svc, Span)> = self.spans.drain(..n).collect();
        while self.logs_ready < self.logs.len() && self.logs[self.logs_ready].0 <= self.spans_taken
        {
            self.logs_ready += 1;
        }
        let resource_spans = self.group(drained.into_iter(), |resource, spans| ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
        ExportTraceServiceRequest { resource_spans }
    }

    fn take_logs(&mut self) -> ExportLogsServiceRequest {
        let n = self.batch.min(self.logs_ready);
        self.logs_ready -= n;
        let drained: Vec<(Svc, LogRecord)> = self.logs.drain(..n).map(|(_, s, l)| (s, l)).collect();
        let resource_logs = self.group(drained.into_iter(), |resource, log_records| ResourceLogs {
            resource,
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        });
        ExportLogsServiceRequest { resource_logs }
    }

    /// After a trace was generated with times relative to 0 and lasting `total`: shift
    /// it to end now, and account for it.
    fn finish_trace(&mut self, first_span: usize, first_log: usize, total: Option<u64>) {
        let base = total.map_or(0, |t| now_ns().saturating_sub(t));
        for (_, s) in self.spans.range_mut(first_span..) {
            s.start_time_unix_nano += base;
            s.end_time_unix_nano += base;
            for e in &mut s.events {
                e.time_unix_nano += base;
            }
        }
        let made = self.spans.len() - first_span;
        self.spans_made += made as u64;
        for (gate, _, l) in self.logs.range_mut(first_log..) {
            *gate = self.spans_made;
            l.time_unix_nano += base;
            l.observed_time_unix_nano = l.time_unix_nano + 150_000;
        }
        if self.with_metrics {
            self.metric_credit += made as u64;
        }
        self.stats.traces += 1;
    }

    fn shop_trace(&mut self) {
        let (first_span, first_log) = (self.spans.len(), self.logs.len());
        let fail = self.error_rate > 0.0 && self.chance(self.error_rate);
        let slow = self.slow_rate > 0.0 && self.chance(self.slow_rate);
        let mut t = TraceCtx {
            trace_id: self.rng.id::<16>(),
            fail,
            slow,
        };
        let mut pick = self.rng.below(100);
        let mut route = Op::Home;
        for (op, w) in ROUTE_MIX {
            if pick < w {
                route = op;
                break;
            }
            pick -= w;
        }
        let (end, _failed) = self.serve(&mut t, route, Vec::new(), 0, fail);
        self.stats.error_traces += u64::from(fail);
        self.stats.slow_traces += u64::from(slow);
        self.finish_trace(first_span, first_log, Some(end));
    }

    /// Serve `op` starting at `start` (relative), as the child of `parent`; returns its
    /// end and whether it failed.
    fn serve(
        &mut self,
        t: &mut TraceCtx,
        op: Op,
        parent: Vec<u8>,
        start: u64,
        must_fail: bool,
    ) -> (u64, bool) {
        let (svc, _, method) = op.describe();
        let svc = self.svc(svc);
        let parent_is_root = parent.is_empty();
        let span_id = self.rng.id::<8>();
        let mut cursor = start + self.us(100, 1500);
        let mut failed_by: Option<Failure> = None;
        let calls = op.calls();
        for (i, call) in calls.iter().enumerate() {
            if failed_by.is_some() {
                break;
            }
            let last = i + 1 == calls.len();
            // The failure, if any, is injected at a random call on the way down.
            let inject = t.fail && (last || self.chance(0.35));
            let (end, failure) = match *call {
                Call::Rpc(callee, callee_op) => {
                    self.rpc_call(t, svc, &span_id, cursor, callee, callee_op, inject)
                }
                Call::Db(system, operation, table, query) => self.db_call(
                    t,
                    svc,
                    &span_id,
                    cursor,
                    [system, operation, table, query],
                    inject,
                ),
                Call::External(http_method, host, path) => {
                    self.external_call(t, svc, &span_id, cursor, [http_method, host, path], inject)
                }
            };
            cursor = end;
            failed_by = failure;
        }
        // Chosen to fail but nothing below did: this operation fails by itself.
        if must_fail && t.fail && failed_by.is_none() {
            t.fail = false;
            failed_by = Some((
                "IllegalStateException",
                format!("{method}: invariant violated"),
            ));
        }
        if t.slow && (calls.is_empty() || parent_is_root) {
            t.slow = false;
            cursor += self.us(500_000, 2_000_000);
        }
        let end = cursor + self.us(100, 1500);
        let failed = failed_by.is_some();
        let mut events = Vec::new();
        let (kind_name, mut attributes) = self.server_span_name_and_attributes(op, svc, failed);
        let mut status = None;
        if let Some((ty, msg)) = &failed_by {
            attributes.push(attr::string("error.type", *ty));
            events.push(exception(ty, msg, end));
            status = error_status(msg);
            if self.with_logs {
                let body = format!("{kind_name} failed: {ty}: {msg}");
                self.push_log(t, svc, &span_id, end, 17, "ERROR", body, ty);
            }
        } else if self.with_logs && self.chance(0.6) {
            let body = format!(
                "{kind_name} handled in {:.2}ms user=user-{} items={}",
                (end - start) as f64 / 1e6,
                self.rng.below(100_000),
                self.rng.below(12)
            );
            self.push_log(t, svc, &span_id, end, 9, "INFO", body, "");
        }
        self.push_span(
            Span {
                trace_id: t.trace_id.clone(),
                span_id,
                parent_span_id: parent,
                name: kind_name,
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                events,
                status,
                ..Default::default()
            },
            svc,
        );
        (end, failed)
    }

    /// The name and attributes of the server span of `op` in `svc`: an HTTP route at the
    /// frontend, a gRPC method elsewhere.
    fn server_span_name_and_attributes(
        &mut self,
        op: Op,
        svc: Svc,
        failed: bool,
    ) -> (String, Vec<KeyValue>) {
        let (_, rpc_service, method) = op.describe();
        if rpc_service.is_empty() {
            let path = if method.contains("{id}") {
                format!("/api/products/{}", self.rng.below(10_000))
            } else {
                method.to_string()
            };
            (
                format!("{} {method}", op.method()),
                vec![
                    attr::string("http.request.method", op.method()),
                    attr::string("http.route", method),
                    attr::string("url.path", path),
                    attr::string("url.scheme", "https"),
                    attr::int("http.response.status_code", if failed { 500 } else { 200 }),
                    attr::string("server.address", "shop.example"),
                    attr::string("network.protocol.version", "1.1"),
                    attr::string(
                        "client.address",
                        format!("10.0.{}.{}", self.rng.below(256), self.rng.below(256)),
                    ),
                    attr::string(
                        "user_agent.original",
                        "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                    ),
                ],
            )
        } else {
            (
                format!("{rpc_service}/{method}"),
                vec![
                    attr::string("rpc.system", "grpc"),
                    attr::string("rpc.service", rpc_service),
                    attr::string("rpc.method", method),
                    attr::int("rpc.grpc.status_code", if failed { 13 } else { 0 }),
                    attr::string("server.address", SERVICES[svc]),
                    attr::int("server.port", 8080),
                ],
            )
        }
    }

    /// A gRPC call to `callee_op` at `cursor` from the server span `parent` of `svc`, with
    /// the callee's server span beneath it; returns its end and what failed, if anything.
    #[allow(clippy::too_many_arguments)]
    fn rpc_call(
        &mut self,
        t: &mut TraceCtx,
        svc: Svc,
        parent: &[u8],
        cursor: u64,
        callee: Svc,
        callee_op: Op,
        inject: bool,
    ) -> (u64, Option<Failure>) {
        let client_id = self.rng.id::<8>();
        let net = self.us(150, 900);
        let (server_end, failed) =
            self.serve(t, callee_op, client_id.clone(), cursor + net, inject);
        let end = server_end + self.us(100, 600);
        let (_, callee_service, callee_method) = callee_op.describe();
        let name = format!("{callee_service}/{callee_method}");
        let mut attributes = vec![
            attr::string("rpc.system", "grpc"),
            attr::string("rpc.service", callee_service),
            attr::string("rpc.method", callee_method),
            attr::string("server.address", SERVICES[self.svc(callee)]),
            attr::int("server.port", 8080),
            attr::int("rpc.grpc.status_code", if failed { 13 } else { 0 }),
        ];
        let status = if failed {
            attributes.push(attr::string("error.type", "INTERNAL"));
            error_status("INTERNAL")
        } else {
            None
        };
        self.push_span(
            Span {
                trace_id: t.trace_id.clone(),
                span_id: client_id,
                parent_span_id: parent.to_vec(),
                name,
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: cursor,
                end_time_unix_nano: end,
                attributes,
                status,
                ..Default::default()
            },
            svc,
        );
        let failure = failed.then(|| {
            (
                "RpcError",
                format!("{callee_service}/{callee_method} failed: INTERNAL"),
            )
        });
        (end, failure)
    }

    /// A database call at `cursor` from the server span `parent` of `svc`:
    /// `[system, operation, collection, query]`; returns when the next call can start and
    /// what failed, if anything.
    fn db_call(
        &mut self,
        t: &mut TraceCtx,
        svc: Svc,
        parent: &[u8],
        cursor: u64,
        [system, operation, table, query]: [&'static str; 4],
        inject: bool,
    ) -> (u64, Option<Failure>) {
        let mut failure = None;
        let mut dur = self.us(200, 4000);
        if t.slow && self.chance(0.5) {
            t.slow = false;
            dur = self.us(800_000, 3_000_000);
        }
        let fail_here = inject && t.fail;
        let mut attributes = vec![
            attr::string("db.system.name", system),
            attr::string("db.operation.name", operation),
            attr::string("db.collection.name", table),
            attr::string("db.query.text", query),
            attr::string(
                "server.address",
                if system == "redis" {
                    "redis"
                } else {
                    "postgres"
                },
            ),
        ];
        let mut events = Vec::new();
        let mut status = None;
        if fail_here {
            t.fail = false;
            let (ty, msg) = DB_ERRORS[self.rng.below(DB_ERRORS.len())];
            attributes.push(attr::string("error.type", ty));
            events.push(exception(ty, msg, cursor + dur));
            status = error_status(msg);
            failure = Some((ty, msg.to_string()));
        }
        let name = format!("{operation} {table}");
        let id = self.rng.id::<8>();
        self.push_span(
            Span {
                trace_id: t.trace_id.clone(),
                span_id: id,
                parent_span_id: parent.to_vec(),
                name,
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: cursor,
                end_time_unix_nano: cursor + dur,
                attributes,
                events,
                status,
                ..Default::default()
            },
            svc,
        );
        if self.with_logs && self.chance(0.1) {
            let body = format!("{operation} {table} took {:.2}ms", dur as f64 / 1e6);
            self.push_log(t, svc, parent, cursor + dur, 5, "DEBUG", body, "");
        }
        (cursor + dur + self.us(20, 200), failure)
    }

    /// An HTTP call outside the shop at `cursor` from the server span `parent` of `svc`:
    /// `[method, host, path]`; returns when the next call can start and what failed, if
    /// anything.
    fn external_call(
        &mut self,
        t: &mut TraceCtx,
        svc: Svc,
        parent: &[u8],
        cursor: u64,
        [http_method, host, path]: [&'static str; 3],
        inject: bool,
    ) -> (u64, Option<Failure>) {
        let mut failure = None;
        let mut dur = self.us(15_000, 120_000);
        if t.slow && self.chance(0.7) {
            t.slow = false;
            dur = self.us(1_000_000, 4_000_000);
        }
        let fail_here = inject && t.fail;
        let code = if fail_here { 503 } else { 200 };
        let mut attributes = vec![
            attr::string("http.request.method", http_method),
            attr::string("url.full", format!("https://{host}{path}")),
            attr::string("server.address", host),
            attr::int("server.port", 443),
            attr::int("http.response.status_code", code),
        ];
        let mut events = Vec::new();
        let mut status = None;
        if fail_here {
            t.fail = false;
            let (ty, msg) = EXTERNAL_ERRORS[self.rng.below(EXTERNAL_ERRORS.len())];
            attributes.push(attr::string("error.type", "503"));
            events.push(exception(ty, msg, cursor + dur));
            status = error_status(msg);
            failure = Some((ty, msg.to_string()));
        }
        let id = self.rng.id::<8>();
        self.push_span(
            Span {
                trace_id: t.trace_id.clone(),
                span_id: id,
                parent_span_id: parent.to_vec(),
                name: http_method.to_string(),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: cursor,
                end_time_unix_nano: cursor + dur,
                attributes,
                events,
                status,
                ..Default::default()
            },
            svc,
        );
        (cursor + dur + self.us(20, 200), failure)
    }

    fn push_span(&mut self, mut span: Span, svc: Svc) {
        span.flags = sdk_flags(&span);
        self.spans.push_back((svc, span));
    }

    #[allow(clippy::too_many_arguments)]
    fn push_log(
        &mut self,
        t: &TraceCtx,
        svc: Svc,
        span_id: &[u8],
        at: u64,
        severity: i32,
        text: &str,
        body: String,
        exception_type: &str,
    ) {
        let mut attributes = vec![attr::string("code.function.name", "handle")];
        if !exception_type.is_empty() {
            attributes.push(attr::string("exception.type", exception_type));
        }
        self.logs.push_back((
            u64::MAX,
            svc,
            LogRecord {
                time_unix_nano: at,
                severity_number: severity,
                severity_text: text.into(),
                body: s(body),
                attributes,
                trace_id: t.trace_id.clone(),
                span_id: span_id.to_vec(),
                flags: 1,
                ..Default::default()
            },
        ));
    }

    /// A trace of the flat shape (`--trace-shape flat`).
    fn flat_trace(&mut self) {
        let first_span = self.spans.len();
        let svc = self.rng.below(self.services);
        flat_trace_spans(&mut self.rng, &mut self.spans, svc);
        self.finish_trace(first_span, self.logs.len(), None);
    }

    /// A trace of the wide shape (`--trace-shape wide`).
    fn wide_trace(&mut self) {
        let first_span = self.spans.len();
        let svc = self.rng.below(self.services);
        flat_trace_spans(&mut self.rng, &mut self.spans, svc);
        for (_, span) in self.spans.iter_mut().skip(first_span) {
            for i in 0..12 {
                let value = match i % 3 {
                    0 => attr::string(&format!("app.tag.{i}"), format!("v{}", self.rng.below(50))),
                    1 => attr::int(&format!("app.count.{i}"), self.rng.below(1_000) as i64),
                    _ => attr::string(
                        &format!("app.ref.{i}"),
                        format!("ref-{}", self.rng.below(1_000_000)),
                    ),
                };
                span.attributes.push(value);
            }
        }
        self.finish_trace(first_span, self.logs.len(), None);
    }

    /// A trace of the large shape (`--trace-shape large`): the flat shape's spans
    /// repeated under one root until there are 1,000.
    fn large_trace(&mut self) {
        let first_span = self.spans.len();
        let svc = self.rng.below(self.services);
        flat_trace_spans(&mut self.rng, &mut self.spans, svc);
        let (trace, root) = match self.spans.get(first_span) {
            Some((_, s)) => (s.trace_id.clone(), s.span_id.clone()),
            None => return,
        };
        while self.spans.len() - first_span < 1000 {
            let mut more = VecDeque::new();
            flat_trace_spans(&mut self.rng, &mut more, svc);
            for (svc, mut span) in more.into_iter().skip(1) {
                span.trace_id = trace.clone();
                span.parent_span_id = root.clone();
                self.spans.push_back((svc, span));
                if self.spans.len() - first_span == 1000 {
                    break;
                }
            }
        }
        self.finish_trace(first_span, self.logs.len(), None);
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lookout-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    })
}

fn error_status(message: &str) -> Option<Status> {
    Some(Status {
        code: status::StatusCode::Error as i32,
        message: message.into(),
    })
}

fn exception(ty: &str, message: &str, at: u64) -> span::Event {
    span::Event {
        time_unix_nano: at,
        name: "exception".into(),
        attributes: vec![
            attr::string("exception.type", ty),
            attr::string("exception.message", message),
            attr::string(
                "exception.stacktrace",
                format!("{ty}: {message}\n\tat handle (server.rs:214)\n\tat serve (server.rs:88)"),
            ),
        ],
        ..Default::default()
    }
}

/// One generated request, as its message and its protobuf size.
enum Request {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl Request {
    /// Index of the signal in [`SIGNAL_NAMES`].
    fn signal(&self) -> usize {
        match self {
            Request::Traces(_) => 0,
            Request::Logs(_) => 1,
            Request::Metrics(_) => 2,
        }
    }

    /// The OTLP/HTTP path and body of the request in `encoding`.
    fn http_body(&self, encoding: EncodingArg) -> (&'static str, Vec<u8>) {
        match (self, encoding) {
            (Request::Traces(r), EncodingArg::Protobuf) => ("/v1/traces", r.encode_to_vec()),
            (Request::Traces(r), EncodingArg::Json) => {
                ("/v1/traces", lookout_proto::json::encode_traces(r))
            }
            (Request::Logs(r), EncodingArg::Protobuf) => ("/v1/logs", r.encode_to_vec()),
            (Request::Logs(r), EncodingArg::Json) => {
                ("/v1/logs", lookout_proto::json::encode_logs(r))
            }
            (Request::Metrics(r), EncodingArg::Protobuf) => ("/v1/metrics", r.encode_to_vec()),
            (Request::Metrics(r), EncodingArg::Json) => {
                ("/v1/metrics", lookout_proto::json::encode_metrics(r))
            }
        }
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        buf.clear();
        // Encoding into a Vec cannot run out of room.
        let _ = match self {
            Request::Traces(r) => r.encode(buf),
            Request::Logs(r) => r.encode(buf),
            Request::Metrics(r) => r.encode(buf),
        };
    }

    fn encoded_len(&self) -> usize {
        match self {
            Request::Traces(r) => r.encoded_len(),
            Request::Logs(r) => r.encoded_len(),
            Request::Metrics(r) => r.encoded_len(),
        }
    }
}

/// One trace of the flat shape: eight spans of one service under one root, times
/// absolute (ending now).
fn flat_trace_spans(rng: &mut Rng, out: &mut VecDeque<(Svc, Span)>, svc: Svc) {
    let now = now_ns();
    let trace = rng.id::<16>();
    let root = rng.id::<8>();
    let route = ROUTES[rng.below(ROUTES.len())];
    let total = 5_000_000 + rng.next() % 200_000_000;
    let failed = rng.below(50) == 0;
    for i in 0..8u64 {
        let (id, parent, kind, name) = if i == 0 {
            (
                root.clone(),
                Vec::new(),
                span::SpanKind::Server,
                format!("GET {route}"),
            )
        } else {
            let kind = if i % 2 == 1 {
                span::SpanKind::Client
            } else {
                span::SpanKind::Internal
            };
            (
                rng.id::<8>(),
                root.clone(),
                kind,
                format!("{} {}", WORDS[rng.below(WORDS.len())], i),
            )
        };
        let start = now.saturating_sub(total) + i * 1_000_000;
        let dur = if i == 0 { total } else { total / 10 };
        let span = Span {
            trace_id: trace.clone(),
            span_id: id,
            parent_span_id: parent,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: vec![
                attr::string("http.request.method", "GET"),
                attr::string("http.route", route),
                attr::string(
                    "url.path",
                    route.replace("{id}", &rng.below(10_000).to_string()),
                ),
                attr::int("http.response.status_code", if failed { 500 } else { 200 }),
                attr::string("server.address", SERVICES[rng.below(SERVICES.len())]),
                attr::string("network.protocol.version", "1.1"),
                attr::string("enduser.id", format!("user-{}", rng.below(100_000))),
                attr::int("request.size", rng.below(64_000) as i64),
            ],
            status: Some(if failed && i == 0 {
                Status {
                    code: status::StatusCode::Error as i32,
                    message: "internal error".into(),
                }
            } else {
                Status::default()
            }),
            ..Default::default()
        };
        let span = Span {
            flags: sdk_flags(&span),
            ..span
        };
        out.push_back((svc, span));
    }
}

/// Span flags as current SDKs set them (OTLP 1.1): whether the parent is known to be
/// remote, and is. Server spans with a parent continue a context from another service.
fn sdk_flags(span: &Span) -> u32 {
    let has = SpanFlags::ContextHasIsRemoteMask as u32;
    let remote = SpanFlags::ContextIsRemoteMask as u32;
    let from_elsewhere =
        span.kind == span::SpanKind::Server as i32 && span.parent_span_id.iter().any(|b| *b != 0);
    if from_elsewhere {
        has | remote
    } else {
        has
    }
}

fn logs(rng: &mut Rng, n: usize, services: usize) -> ExportLogsServiceRequest {
    let service = SERVICES[rng.below(services.min(SERVICES.len()))];
    let now = now_ns();
    let records = (0..n)
        .map(|i| {
            let mut body = String::with_capacity(240);
            while body.len() < 160 + rng.below(80) {
                if !body.is_empty() {
                    body.push(' ');
                }
                body.push_str(WORDS[rng.below(WORDS.len())]);
            }
            body.push_str(&format!(" id={}", rng.below(1_000_000)));
            let (sev, text) = match rng.below(20) {
                0 => (17, "ERROR"),
                1 | 2 => (13, "WARN"),
                3 => (5, "DEBUG"),
                _ => (9, "INFO"),
            };
            let traced = rng.below(5) != 0;
            LogRecord {
                time_unix_nano: now + i as u64,
                observed_time_unix_nano: now + i as u64,
                severity_number: sev,
                severity_text: text.into(),
                body: s(body),
                attributes: vec![
                    attr::string("http.route", ROUTES[rng.below(ROUTES.len())]),
                    attr::string("enduser.id", format!("user-{}", rng.below(100_000))),
                    attr::string("code.function", WORDS[rng.below(WORDS.len())]),
                ],
                trace_id: if traced { rng.id::<16>() } else { Vec::new() },
                span_id: if traced { rng.id::<8>() } else { Vec::new() },
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service, rng.below(3)),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics(rng: &mut Rng, n: usize, services: usize, start: u64) -> ExportMetricsServiceRequest {
    let service = SERVICES[rng.below(services.min(SERVICES.len()))];
    let now = now_ns();
    let mut out = Vec::new();
    let mut points = 0usize;
    let mut k = 0usize;
    while points < n {
        let take = (n - points).min(16);
        let attrs = |rng: &mut Rng, j: usize| {
            vec![
                attr::string("http.route", ROUTES[j % ROUTES.len()]),
                attr::string("zone", format!("z{}", rng.below(4))),
            ]
        };
        let data = match k % 3 {
            0 => metric::Data::Sum(Sum {
                data_points: (0..take)
                    .map(|j| NumberDataPoint {
                        attributes: attrs(rng, j),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsInt(rng.below(1_000_000) as i64)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            1 => metric::Data::Gauge(Gauge {
                data_points: (0..take)
                    .map(|j| NumberDataPoint {
                        attributes: attrs(rng, j),
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsDouble(
                            rng.below(10_000) as f64 / 10.0,
                        )),
                        ..Default::default()
                    })
                    .collect(),
            }),
            _ => metric::Data::Histogram(Histogram {
                data_points: (0..take)
                    .map(|j| HistogramDataPoint {
                        attributes: attrs(rng, j),
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: 100,
                        sum: Some(1234.5),
                        bucket_counts: vec![10, 20, 30, 25, 10, 5],
                        explicit_bounds: vec![5.0, 10.0, 25.0, 50.0, 100.0],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        };
        let name = [
            "http.server.requests",
            "process.memory.usage",
            "http.server.request.duration",
        ][k % 3];
        out.push(Metric {
            name: format!("{name}.{}", k / 3),
            unit: ["{request}", "By", "ms"][k % 3].into(),
            data: Some(data),
            ..Default::default()
        });
        points += take;
        k += 1;
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service, rng.below(3)),
            scope_metrics: vec![ScopeMetrics {
                metrics: out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

const SIGNAL_NAMES: [&str; 3] = ["traces", "logs", "metrics"];

fn generate(args: &Args, gen: &mut Gen) -> Request {
    match args.signal {
        SignalArg::Traces | SignalArg::All => gen.next_request(args),
        SignalArg::Logs => Request::Logs(logs(&mut gen.rng, args.batch, args.services)),
        SignalArg::Metrics => Request::Metrics(metrics(
            &mut gen.rng,
            args.batch,
            args.services,
            gen.start_ns,
        )),
    }
}

/// Outcome of one request.
enum Outcome {
    /// Accepted; how many items were reported rejected.
    Ok { rejected: u64 },
    /// Refused or failed: kind, and the retry hint for overload.
    Err {
        kind: String,
        retry: Option<Duration>,
    },
}

// One per worker: the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Sender {
    Grpc {
        traces: TraceServiceClient<Channel>,
        logs: LogsServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
    },
    Http {
        client: reqwest::Client,
        base: String,
        encoding: EncodingArg,
        gzip: bool,
    },
}

fn grpc_outcome<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    rejected: impl Fn(&T) -> i64,
) -> Outcome {
    match r {
        Ok(resp) => Outcome::Ok {
            rejected: u64::try_from(rejected(resp.get_ref())).unwrap_or(0),
        },
        Err(st) => {
            let retry = matches!(
                st.code(),
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
            )
            .then_some(Duration::from_secs(1));
            Outcome::Err {
                kind: format!("grpc {:?}", st.code()),
                retry,
            }
        }
    }
}

impl Sender {
    async fn send(&mut self, req: Request) -> Outcome {
        match self {
            Sender::Grpc {
                traces,
                logs,
                metrics,
            } => match req {
                Request::Traces(r) => {
                    grpc_outcome(traces.export(r).await, |p: &ExportTraceServiceResponse| {
                        p.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
                    })
                }
                Request::Logs(r) => {
                    grpc_outcome(logs.export(r).await, |p: &ExportLogsServiceResponse| {
                        p.partial_success
                            .as_ref()
                            .map_or(0, |p| p.rejected_log_records)
                    })
                }
                Request::Metrics(r) => grpc_outcome(
                    metrics.export(r).await,
                    |p: &ExportMetricsServiceResponse| {
                        p.partial_success
                            .as_ref()
                            .map_or(0, |p| p.rejected_data_points)
                    },
                ),
            },
            Sender::Http {
                client,
                base,
                encoding,
                gzip,
            } => {
                let (path, body) = req.http_body(*encoding);
                let ct = match encoding {
                    EncodingArg::Protobuf => "application/x-protobuf",
                    EncodingArg::Json => "application/json",
                };
                let mut rb = client
                    .post(format!("{base}{path}"))
                    .header("content-type", ct);
                let body = if *gzip {
                    rb = rb.header("content-encoding", "gzip");
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    if std::io::Write::write_all(&mut enc, &body).is_err() {
                        return Outcome::Err {
                            kind: "gzip".into(),
                            retry: None,
                        };
                    }
                    enc.finish().unwrap_or_default()
                } else {
                    body
                };
                let answer = rb.body(body).send().await;
                http_outcome(answer, &req, *encoding == EncodingArg::Json).await
            }
        }
    }
}

/// What an OTLP/HTTP answer to `req` means for the run.
async fn http_outcome(
    answer: Result<reqwest::Response, reqwest::Error>,
    req: &Request,
    json: bool,
) -> Outcome {
    match answer {
        Ok(resp) if resp.status().is_success() => {
            let bytes = resp.bytes().await.unwrap_or_default();
            Outcome::Ok {
                rejected: http_rejected(req, &bytes, json),
            }
        }
        Ok(resp) => {
            let code = resp.status().as_u16();
            let retry = matches!(code, 429 | 502 | 503 | 504).then(|| {
                let secs = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                Duration::from_secs(secs.min(30))
            });
            Outcome::Err {
                kind: format!("http {code}"),
                retry,
            }
        }
        Err(e) => Outcome::Err {
            kind: if e.is_connect() {
                "connect".into()
            } else {
                "transport".into()
            },
            retry: Some(Duration::from_millis(200)),
        },
    }
}

fn http_rejected(req: &Request, body: &[u8], json: bool) -> u64 {
    let n = if json {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let p = &v["partialSuccess"];
        ["rejectedSpans", "rejectedLogRecords", "rejectedDataPoints"]
            .iter()
            .find_map(|k| {
                p[*k]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| p[*k].as_i64())
            })
            .unwrap_or(0)
    } else {
        match req {
            Request::Traces(_) => ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans),
            Request::Logs(_) => ExportLogsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_log_records),
            Request::Metrics(_) => ExportMetricsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_data_points),
        }
    };
    u64::try_from(n).unwrap_or(0)
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latencies_us: Mutex<Vec<u32>>,
    /// Per signal: items sent, items acknowledged, requests ok.
    signals: [[AtomicU64; 3]; 3],
    traces: AtomicU64,
    error_traces: AtomicU64,
    slow_traces: AtomicU64,
}

impl Totals {
    /// Count one answer of `items` items of `signal` (`size` bytes encoded); returns how
    /// long to back off when the receiver asked for that.
    fn count(&self, signal: usize, items: u64, size: u64, outcome: Outcome) -> Option<Duration> {
        let sig = &self.signals[signal];
        match outcome {
            Outcome::Ok { rejected } => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.acked
                    .fetch_add(items.saturating_sub(rejected), Ordering::Relaxed);
                sig[1].fetch_add(items.saturating_sub(rejected), Ordering::Relaxed);
                sig[2].fetch_add(1, Ordering::Relaxed);
                self.rejected.fetch_add(rejected, Ordering::Relaxed);
                self.bytes.fetch_add(size, Ordering::Relaxed);
                None
            }
            Outcome::Err { kind, retry } => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut e) = self.errors.lock() {
                    *e.entry(kind).or_default() += 1;
                }
                retry
            }
        }
    }

    /// Add what a finished worker measured and generated.
    fn add_worker(&self, latencies_us: Vec<u32>, stats: &GenStats) {
        if let Ok(mut all) = self.latencies_us.lock() {
            all.extend(latencies_us);
        }
        self.traces.fetch_add(stats.traces, Ordering::Relaxed);
        self.error_traces
            .fetch_add(stats.error_traces, Ordering::Relaxed);
        self.slow_traces
            .fetch_add(stats.slow_traces, Ordering::Relaxed);
    }

    /// The run's summary, `elapsed` seconds after its start.
    fn summary(&self, elapsed: f64, dry_run: bool) -> Summary {
        let mut lat = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
            f64::from(lat[i.min(lat.len() - 1)]) / 1000.0
        };
        let acked = self.acked.load(Ordering::Relaxed);
        Summary {
            items_sent: self.sent.load(Ordering::Relaxed),
            items_acked: acked,
            items_rejected: self.rejected.load(Ordering::Relaxed),
            requests_ok: self.ok.load(Ordering::Relaxed),
            requests_failed: self.failed.load(Ordering::Relaxed),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
            elapsed_s: elapsed,
            items_per_s: acked as f64 / elapsed,
            mb_per_s: self.bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
            latency_p50_ms: pct(0.5),
            latency_p99_ms: pct(0.99),
            latency_max_ms: lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
            signals: SIGNAL_NAMES
                .iter()
                .zip(&self.signals)
                .filter(|(_, c)| c[0].load(Ordering::Relaxed) > 0)
                .map(|(name, c)| {
                    (
                        (*name).to_string(),
                        SignalSummary {
                            items_sent: c[0].load(Ordering::Relaxed),
                            items_acked: c[1].load(Ordering::Relaxed),
                            requests_ok: c[2].load(Ordering::Relaxed),
                        },
                    )
                })
                .collect(),
            traces: self.traces.load(Ordering::Relaxed),
            error_traces: self.error_traces.load(Ordering::Relaxed),
            slow_traces: self.slow_traces.load(Ordering::Relaxed),
            dry_run,
        }
    }
}

async fn sender(args: &Args) -> anyhow::Result<Sender> {
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| match args.protocol {
            ProtocolArg::Grpc => "http://127.0.0.1:4317".into(),
            ProtocolArg::Http => "http://127.0.0.1:4318".into(),
        });
    Ok(match args.protocol {
        ProtocolArg::Grpc => {
            let channel = Channel::from_shared(endpoint.clone())
                .with_context(|| format!("invalid endpoint {endpoint:?}"))?
                .connect_lazy();
            let limit = 64 << 20;
            let mut traces =
                TraceServiceClient::new(channel.clone()).max_encoding_message_size(limit);
            let mut logs = LogsServiceClient::new(channel.clone()).max_encoding_message_size(limit);
            let mut metrics = MetricsServiceClient::new(channel).max_encoding_message_size(limit);
            if args.gzip {
                traces = traces.send_compressed(CompressionEncoding::Gzip);
                logs = logs.send_compressed(CompressionEncoding::Gzip);
                metrics = metrics.send_compressed(CompressionEncoding::Gzip);
            }
            Sender::Grpc {
                traces,
                logs,
                metrics,
            }
        }
        ProtocolArg::Http => Sender::Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .build()
                .context("cannot build the HTTP client")?,
            base: endpoint.trim_end_matches('/').to_string(),
            encoding: args.encoding,
            gzip: args.gzip,
        },
    })
}

/// Run the load described by `args`; returns once `--duration` has passed and every
/// request in flight has been answered.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let args = Arc::new(args);
    let totals = Arc::new(Totals::default());
    let issued = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + args.duration;
    let start_ns = now_ns();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (args, totals, issued) = (args.clone(), totals.clone(), issued.clone());
        let mut sender = if args.dry_run {
            None
        } else {
            Some(sender(&args).await?)
        };
        workers.push(tokio::spawn(async move {
            let rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1000_0000_01b3) ^ start_ns);
            let mut gen = Gen::new(&args, rng, start_ns);
            let mut buf = Vec::new();
            let mut lat = Vec::new();
            // At a fixed rate every request due before the deadline is sent, late if the
            // receiver fell behind, so a run sends rate x duration items; at max rate the
            // run ends at the deadline.
            while args.rate > 0 || Instant::now() < deadline {
                if args.rate > 0 {
                    // Request n is due at n * batch / rate seconds.
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    let due = start
                        + Duration::from_secs_f64(n as f64 * args.batch as f64 / args.rate as f64);
                    if due >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
                let req = generate(&args, &mut gen);
                let signal = req.signal();
                let items = args.batch as u64;
                totals.sent.fetch_add(items, Ordering::Relaxed);
                totals.signals[signal][0].fetch_add(items, Ordering::Relaxed);
                let t = Instant::now();
                let (size, outcome) = match sender.as_mut() {
                    Some(sender) => (req.encoded_len() as u64, sender.send(req).await),
                    None => {
                        req.encode(&mut buf);
                        drop(req);
                        // Let the other workers and the progress report run.
                        tokio::task::yield_now().await;
                        (buf.len() as u64, Outcome::Ok { rejected: 0 })
                    }
                };
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                if let Some(d) = totals.count(signal, items, size, outcome) {
                    let until = (Instant::now() + d).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                }
            }
            totals.add_worker(lat, &gen.stats);
        }));
    }
    let progress = {
        let (totals, stop) = (totals.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let acked = totals.acked.load(Ordering::Relaxed);
                let failed = totals.failed.load(Ordering::Relaxed);
                eprintln!(
                    "[{:>5.1}s] {:>9} items/s acknowledged, {} failed requests",
                    start.elapsed().as_secs_f64(),
                    acked - last,
                    failed
                );
                last = acked;
            }
        })
    };
    for w in workers {
        w.await.context("worker task failed")?;
    }
    stop.store(true, Ordering::Relaxed);
    progress.abort();
    Ok(totals.summary(start.elapsed().as_secs_f64(), args.dry_run))
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "items sent:          {}", self.items_sent)?;
        writeln!(f, "items acknowledged:  {}", self.items_acked)?;
        writeln!(
            f,
            "items rejected:      {} (partial_success)",
            self.items_rejected
        )?;
        writeln!(
            f,
            "requests:            {} ok, {} failed",
            self.requests_ok, self.requests_failed
        )?;
        for (k, v) in &self.errors {
            writeln!(f, "  {k}: {v}")?;
        }
        if self.signals.len() > 1 {
            for (name, c) in &self.signals {
                writeln!(
                    f,
                    "  {name:<8} {} sent, {} acknowledged in {} requests",
                    c.items_sent, c.items_acked, c.requests_ok
                )?;
            }
        }
        if self.traces > 0 {
            writeln!(
                f,
                "traces generated:    {} ({} with errors, {} slow)",
                self.traces, self.error_traces, self.slow_traces
            )?;
        }
        if self.dry_run {
            writeln!(
                f,
                "dry run:             generated and encoded only, nothing sent"
            )?;
        }
        writeln!(f, "elapsed:             {:.2} s", self.elapsed_s)?;
        writeln!(
            f,
            "acknowledged rate:   {:.0} items/s, {:.2} MB/s (uncompressed protobuf)",
            self.items_per_s, self.mb_per_s
        )?;
        write!(
            f,
            "request latency:     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.latency_p50_ms, self.latency_p99_ms, self.latency_max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_all_sends_logs_after_the_spans_of_their_trace() {
        let args = Args {
            signal: SignalArg::All,
            batch: 50,
            ..Args::default()
        };
        let mut gen = Gen::new(&args, Rng(7), 1_700_000_000_000_000_000);
        let mut span_traces = std::collections::HashSet::new();
        let (mut spans, mut logs) = (0, 0);
        for _ in 0..200 {
            match generate(&args, &mut gen) {
                Request::Traces(r) => {
                    for s in r
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                    {
                        span_traces.insert(s.trace_id.clone());
                        spans += 1;
                    }
                }
                Request::Logs(r) => {
                    for l in r
                        .resource_logs
                        .iter()
                        .flat_map(|r| &r.scope_logs)
                        .flat_map(|s| &s.log_records)
                    {
                        assert!(
                            span_traces.contains(&l.trace_id),
                            "a log arrives after its trace's spans"
                        );
                        logs += 1;
                    }
                }
                Request::Metrics(_) => {}
            }
        }
        assert!(spans > 0 && logs > 0, "spans {spans}, logs {logs}");
        let ratio = logs as f64 / spans as f64;
        assert!(
            (0.2..0.8).contains(&ratio),
            "about 0.4 logs per span, got {ratio}"
        );
    }
}
