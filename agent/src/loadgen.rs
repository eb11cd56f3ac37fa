//! `lookout-loadgen`: drives an OTLP receiver with realistic traces, logs or metrics at a
//! fixed rate or as fast as it answers, and reports what was acknowledged.
//!
//! Every request is generated fresh (ids from a fast PRNG, so they are unique in a run),
//! which costs well under a microsecond per item: far below what a receiver spends.
//! Overload answers (HTTP 429/503, gRPC UNAVAILABLE/RESOURCE_EXHAUSTED) are counted and
//! the sending worker waits the server's retry hint, like an OTLP exporter would, so the
//! acknowledged rate is the receiver's sustained rate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, ValueEnum};
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
use lookout_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde::Serialize;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

/// Which OTLP signal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalArg {
    /// Spans, in traces of 8.
    Traces,
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
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
    /// Items per second over all workers; 0 sends as fast as the receiver answers.
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

const SERVICES: [&str; 8] = [
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
const WORDS: [&str; 40] = [
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

fn kv(k: &str, v: impl Into<String>) -> KeyValue {
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

fn resource(service: &str, instance: usize) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.instance.id", format!("{service}-{instance}")),
            kv("host.name", format!("node-{instance}")),
        ],
        ..Default::default()
    })
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One generated request, as its message and its protobuf size.
enum Request {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

impl Request {
    fn encoded_len(&self) -> usize {
        match self {
            Request::Traces(r) => r.encoded_len(),
            Request::Logs(r) => r.encoded_len(),
            Request::Metrics(r) => r.encoded_len(),
        }
    }
}

fn traces(rng: &mut Rng, n: usize, services: usize) -> ExportTraceServiceRequest {
    let service = SERVICES[rng.below(services.min(SERVICES.len()))];
    let now = now_ns();
    let mut spans = Vec::with_capacity(n);
    while spans.len() < n {
        let trace = rng.id::<16>();
        let root = rng.id::<8>();
        let route = ROUTES[rng.below(ROUTES.len())];
        let total = 5_000_000 + rng.next() % 200_000_000;
        let failed = rng.below(50) == 0;
        for i in 0..8.min(n - spans.len()) {
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
            let start = now.saturating_sub(total) + (i as u64) * 1_000_000;
            let dur = if i == 0 { total } else { total / 10 };
            spans.push(Span {
                trace_id: trace.clone(),
                span_id: id,
                parent_span_id: parent,
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", route),
                    kv(
                        "url.path",
                        route.replace("{id}", &rng.below(10_000).to_string()),
                    ),
                    kv_int("http.response.status_code", if failed { 500 } else { 200 }),
                    kv("server.address", SERVICES[rng.below(SERVICES.len())]),
                    kv("network.protocol.version", "1.1"),
                    kv("enduser.id", format!("user-{}", rng.below(100_000))),
                    kv_int("request.size", rng.below(64_000) as i64),
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
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service, rng.below(3)),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
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
                    kv("http.route", ROUTES[rng.below(ROUTES.len())]),
                    kv("enduser.id", format!("user-{}", rng.below(100_000))),
                    kv("code.function", WORDS[rng.below(WORDS.len())]),
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
                kv("http.route", ROUTES[j % ROUTES.len()]),
                kv("zone", format!("z{}", rng.below(4))),
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

fn generate(args: &Args, rng: &mut Rng, start: u64) -> Request {
    match args.signal {
        SignalArg::Traces => Request::Traces(traces(rng, args.batch, args.services)),
        SignalArg::Logs => Request::Logs(logs(rng, args.batch, args.services)),
        SignalArg::Metrics => Request::Metrics(metrics(rng, args.batch, args.services, start)),
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
                let (path, body) = match (&req, *encoding) {
                    (Request::Traces(r), EncodingArg::Protobuf) => {
                        ("/v1/traces", r.encode_to_vec())
                    }
                    (Request::Traces(r), EncodingArg::Json) => {
                        ("/v1/traces", lookout_proto::json::encode_traces(r))
                    }
                    (Request::Logs(r), EncodingArg::Protobuf) => ("/v1/logs", r.encode_to_vec()),
                    (Request::Logs(r), EncodingArg::Json) => {
                        ("/v1/logs", lookout_proto::json::encode_logs(r))
                    }
                    (Request::Metrics(r), EncodingArg::Protobuf) => {
                        ("/v1/metrics", r.encode_to_vec())
                    }
                    (Request::Metrics(r), EncodingArg::Json) => {
                        ("/v1/metrics", lookout_proto::json::encode_metrics(r))
                    }
                };
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
                match rb.body(body).send().await {
                    Ok(resp) if resp.status().is_success() => {
                        let json = *encoding == EncodingArg::Json;
                        let bytes = resp.bytes().await.unwrap_or_default();
                        Outcome::Ok {
                            rejected: http_rejected(&req, &bytes, json),
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
        }
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
        let mut sender = sender(&args).await?;
        workers.push(tokio::spawn(async move {
            let mut rng =
                Rng(0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) * 0x1000_0000_01b3) ^ start_ns);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
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
                let req = generate(&args, &mut rng, start_ns);
                let size = req.encoded_len() as u64;
                let items = args.batch as u64;
                totals.sent.fetch_add(items, Ordering::Relaxed);
                let t = Instant::now();
                let outcome = sender.send(req).await;
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                match outcome {
                    Outcome::Ok { rejected } => {
                        totals.ok.fetch_add(1, Ordering::Relaxed);
                        totals
                            .acked
                            .fetch_add(items.saturating_sub(rejected), Ordering::Relaxed);
                        totals.rejected.fetch_add(rejected, Ordering::Relaxed);
                        totals.bytes.fetch_add(size, Ordering::Relaxed);
                    }
                    Outcome::Err { kind, retry } => {
                        totals.failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut e) = totals.errors.lock() {
                            *e.entry(kind).or_default() += 1;
                        }
                        if let Some(d) = retry {
                            let until = (Instant::now() + d).min(deadline);
                            tokio::time::sleep_until(until.into()).await;
                        }
                    }
                }
            }
            if let Ok(mut all) = totals.latencies_us.lock() {
                all.extend(lat);
            }
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
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = totals
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
    let acked = totals.acked.load(Ordering::Relaxed);
    Ok(Summary {
        items_sent: totals.sent.load(Ordering::Relaxed),
        items_acked: acked,
        items_rejected: totals.rejected.load(Ordering::Relaxed),
        requests_ok: totals.ok.load(Ordering::Relaxed),
        requests_failed: totals.failed.load(Ordering::Relaxed),
        errors: totals.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        elapsed_s: elapsed,
        items_per_s: acked as f64 / elapsed,
        mb_per_s: totals.bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        latency_max_ms: lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
    })
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
