//! Fault injection, in the style of the OpenTelemetry Collector's testbed: a proxy between
//! the agent and the collector refuses most export requests, and the collector and the
//! agent get SIGTERM in the middle of a write load. Whatever a sender got acknowledged
//! arrives, exactly once where the design promises it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use lookout_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use lookout_tests::{get_json, metric_value, poll, Agent, Collector, Stopped};
use prost::Message;
use rand::Rng;

use crate::util::{kv, now_ns};

// ---------------------------------------------------------------------------------------
// The fault proxy.

/// What the fault proxy saw and answered.
#[derive(Default)]
struct ProxyStats {
    /// Requests received.
    seen: AtomicU64,
    /// Answered 503 with `Retry-After: 1`.
    refused_with_hint: AtomicU64,
    /// Answered 503 without a hint.
    refused_without_hint: AtomicU64,
    /// Forwarded to the collector (whatever it answered).
    forwarded: AtomicU64,
    /// Forwarded and answered 200 by the collector.
    forwarded_ok: AtomicU64,
    /// Answered with a retryable 5xx (502..=504), by the proxy or the collector: each is
    /// one retry with reason `unavailable` at the agent.
    unavailable: AtomicU64,
}

impl ProxyStats {
    fn refused(&self) -> u64 {
        self.refused_with_hint.load(Ordering::Relaxed)
            + self.refused_without_hint.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    refuse: f64,
    stats: Arc<ProxyStats>,
}

/// An OTLP/HTTP proxy on loopback port 0 that answers 503 to a random `refuse` share of
/// requests (half of them with `Retry-After: 1`) and forwards the rest to `upstream`.
struct FaultProxy {
    url: String,
    stats: Arc<ProxyStats>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: String, refuse: f64) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(ProxyStats::default());
        let state = ProxyState {
            upstream,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("proxy client"),
            refuse,
            stats: stats.clone(),
        };
        let app = axum::Router::new().fallback(proxy).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            url: format!("http://{addr}"),
            stats,
            task,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(State(s): State<ProxyState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Read the whole request first, like a server that refuses after parsing.
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    s.stats.seen.fetch_add(1, Ordering::Relaxed);
    let (refuse, hint) = {
        let mut rng = rand::rng();
        (rng.random_bool(s.refuse), rng.random_bool(0.5))
    };
    if refuse {
        s.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        if hint {
            s.stats.refused_with_hint.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "fault injected",
            )
                .into_response();
        }
        s.stats.refused_without_hint.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "fault injected").into_response();
    }
    let mut out = s
        .client
        .post(format!("{}{}", s.upstream, parts.uri.path()))
        .body(body);
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::AUTHORIZATION,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    s.stats.forwarded.fetch_add(1, Ordering::Relaxed);
    match out.send().await {
        Ok(r) => {
            let status = r.status();
            if status == StatusCode::OK {
                s.stats.forwarded_ok.fetch_add(1, Ordering::Relaxed);
            } else if (502..=504).contains(&status.as_u16()) {
                s.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            let mut headers = axum::http::HeaderMap::new();
            for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
                if let Some(v) = r.headers().get(&name) {
                    headers.insert(name, v.clone());
                }
            }
            let body = r.bytes().await.unwrap_or_default();
            (status, headers, body).into_response()
        }
        Err(_) => {
            s.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            StatusCode::BAD_GATEWAY.into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers.

/// The agent ships over OTLP/HTTP (to the proxy) in small batches with quick retries, so
/// a 70% refusal rate still drains in seconds and the proxy sees hundreds of requests.
const FAULT_AGENT: &str = "[host_metrics]\nenabled = false\n[exporter]\nprotocol = \"http\"\nmax_batch_items = 500\nbatch_timeout = \"50ms\"\nconcurrency = 12\nretry_initial_interval = \"50ms\"\nretry_max_interval = \"200ms\"\n";

const SENT_LOGS: &str = "lookout_agent_exporter_sent_items_total{signal=\"logs\"}";
const RETRIES_UNAVAILABLE: &str =
    "lookout_agent_exporter_retries_total{reason=\"unavailable\",signal=\"logs\"}";

async fn log_total(c: &Collector, query: &str) -> u64 {
    let (_, b) = get_json(&c.api_url(&format!("/api/v1/logs?limit=1{query}"))).await;
    b["total"].as_u64().unwrap_or(0)
}

async fn wait_shipped(agent: &Agent, timeout: Duration) {
    poll(timeout, "agent buffer drained", || async {
        let (_, h) = get_json(&agent.api_url("/healthz")).await;
        (h["buffer_unacked_bytes"].as_u64() == Some(0)).then_some(())
    })
    .await;
}

/// SIGTERM without blocking the runtime the writers run on.
async fn terminate_collector(c: Collector) -> Stopped {
    tokio::task::spawn_blocking(move || c.terminate_within(Duration::from_secs(40)))
        .await
        .expect("terminate task")
}

async fn terminate_agent(a: Agent) -> Stopped {
    tokio::task::spawn_blocking(move || a.terminate_within(Duration::from_secs(40)))
        .await
        .expect("terminate task")
}

fn write_agent_config(dir: &std::path::Path) -> String {
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, FAULT_AGENT).expect("write agent config");
    cfg.display().to_string()
}

// ---------------------------------------------------------------------------------------
// 1. A proxy refusing 70% of the agent's exports.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_everything_exactly_once_through_a_proxy_refusing_70_percent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let proxy = FaultProxy::start(format!("http://{}", c.http), 0.7).await;
    let cfg = write_agent_config(dir.path());
    let agent = Agent::start(&dir.path().join("buffer"), &proxy.url, &["--config", &cfg]);

    // The real load generator: 10k log records/s for 10 s into the agent over OTLP/gRPC.
    let out = tokio::process::Command::new(lookout_tests::bin("lookout-loadgen"))
        .args([
            "--endpoint",
            &agent.grpc_url(),
            "--signal",
            "logs",
            "--rate",
            "10000",
            "--duration",
            "10s",
            "--batch",
            "500",
            "--concurrency",
            "8",
            "--json",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run lookout-loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lookout-loadgen failed: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("lookout-loadgen --json output");
    let acked = summary["items_acked"].as_u64().expect("items_acked");
    assert!(acked >= 50_000, "the agent took the load: {summary}");

    // Every acknowledged record gets past the faults...
    poll(
        Duration::from_secs(90),
        "the agent shipping everything through the faults",
        || async {
            let m = agent.metrics().await;
            let sent = metric_value(&m, SENT_LOGS).unwrap_or(0.0) as u64;
            let (_, h) = get_json(&agent.api_url("/healthz")).await;
            (sent >= acked && h["buffer_unacked_bytes"].as_u64() == Some(0)).then_some(())
        },
    )
    .await;
    let total = poll(Duration::from_secs(60), "every log indexed", || async {
        let t = log_total(&c, "").await;
        (t >= acked).then_some(t)
    })
    .await;
    // ...exactly once: the collector accepted and indexed as many as were acknowledged.
    let cm = c.metrics().await;
    assert_eq!(
        metric_value(
            &cm,
            "lookout_receiver_accepted_items_total{signal=\"logs\",transport=\"http\"}"
        ),
        Some(acked as f64),
        "the collector accepted each acknowledged record once (loadgen: {summary})"
    );
    assert_eq!(total, acked, "indexed exactly once");
    let m = agent.metrics().await;
    assert_eq!(metric_value(&m, SENT_LOGS), Some(acked as f64), "{m}");
    assert_eq!(
        metric_value(
            &m,
            "lookout_agent_receiver_accepted_items_total{signal=\"logs\",transport=\"grpc\"}"
        ),
        Some(acked as f64),
        "{m}"
    );

    // The proxy really refused about 70%, both kinds, and each refusal was one retry.
    let st = &proxy.stats;
    let seen = st.seen.load(Ordering::Relaxed);
    let refused = st.refused();
    let share = refused as f64 / seen as f64;
    eprintln!(
        "fault proxy: {seen} requests, {refused} refused ({:.1}%; {} with Retry-After), {} forwarded; loadgen: {summary}",
        share * 100.0,
        st.refused_with_hint.load(Ordering::Relaxed),
        st.forwarded.load(Ordering::Relaxed),
    );
    assert!(seen >= 100, "the proxy saw enough requests: {seen}");
    assert!(
        (0.6..=0.8).contains(&share),
        "refused {refused} of {seen} requests"
    );
    assert!(st.refused_with_hint.load(Ordering::Relaxed) > 0);
    assert!(st.refused_without_hint.load(Ordering::Relaxed) > 0);
    assert_eq!(
        st.forwarded_ok.load(Ordering::Relaxed),
        st.forwarded.load(Ordering::Relaxed),
        "the collector took every forwarded request"
    );
    let retries = metric_value(&m, RETRIES_UNAVAILABLE).unwrap_or(0.0) as u64;
    assert!(retries > 0, "{m}");
    assert_eq!(
        retries,
        st.unavailable.load(Ordering::Relaxed),
        "one retry per refusal"
    );
    assert!(agent.terminate().success());
}

// ---------------------------------------------------------------------------------------
// 2. SIGTERM under a steady write load.

const PER_REQUEST: usize = 20;

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", "sigterm")],
        ..Default::default()
    })
}

/// A request of `PER_REQUEST` logs of writer `w`, the `seq`th: their ids and the request.
/// Bodies read `MARK wrW idID`, so one query per writer finds them.
fn log_request(mark: &str, w: usize, seq: usize) -> (Vec<String>, ExportLogsServiceRequest) {
    let ids: Vec<String> = (0..PER_REQUEST).map(|i| format!("{w}x{seq}x{i}")).collect();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: ids
                    .iter()
                    .map(|id| LogRecord {
                        time_unix_nano: now_ns(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "{mark} wr{w} id{id}"
                            ))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (ids, req)
}

/// A whole three-span trace of writer `w`: its hex id and the request.
fn trace_request(w: usize, seq: usize) -> (String, ExportTraceServiceRequest) {
    let mut trace = [0u8; 16];
    trace[0] = 0xfa;
    trace[1] = w as u8;
    trace[8..].copy_from_slice(&(seq as u64).to_be_bytes());
    let t = now_ns();
    let spans = (1..=3u8)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op{i}"),
            start_time_unix_nano: t,
            end_time_unix_nano: t + 1000,
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (hex::encode(trace), req)
}

/// What the writers got acknowledged: log ids per writer, trace ids.
#[derive(Default)]
struct Acked {
    logs: Mutex<Vec<Vec<String>>>,
    traces: Mutex<Vec<String>>,
}

impl Acked {
    fn log_count(&self) -> usize {
        self.logs.lock().expect("lock").iter().map(Vec::len).sum()
    }
}

/// Writers 0 and 1 use OTLP/gRPC, 2 and 3 OTLP/HTTP; each sends logs, and every fourth
/// request a trace, until `stop`. A failed request (refused, connection closed) is not
/// acknowledged and the writer carries on after a short pause.
const WRITERS: usize = 4;

fn spawn_writers(
    grpc: String,
    http: String,
    mark: &'static str,
    with_traces: bool,
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    acked.logs.lock().expect("lock").resize(WRITERS, Vec::new());
    let timeout = Duration::from_secs(20);
    (0..WRITERS)
        .map(|w| {
            let (grpc, http, acked, stop) =
                (grpc.clone(), http.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let channel = tonic::transport::Endpoint::from_shared(grpc)
                    .expect("endpoint")
                    .connect_lazy();
                let mut logs_client = LogsServiceClient::new(channel.clone());
                let mut traces_client = TraceServiceClient::new(channel);
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .expect("client");
                let post = |path: &str, body: Vec<u8>| {
                    client
                        .post(format!("{http}{path}"))
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send()
                };
                let use_grpc = w < 2;
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let (ids, req) = log_request(mark, w, seq);
                    let ok = if use_grpc {
                        matches!(
                            tokio::time::timeout(timeout, logs_client.export(req)).await,
                            Ok(Ok(_))
                        )
                    } else {
                        post("/v1/logs", req.encode_to_vec())
                            .await
                            .is_ok_and(|r| r.status() == 200)
                    };
                    if ok {
                        acked.logs.lock().expect("lock")[w].extend(ids);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    if with_traces && seq % 4 == 0 {
                        let (id, req) = trace_request(w, seq);
                        let ok = if use_grpc {
                            matches!(
                                tokio::time::timeout(timeout, traces_client.export(req)).await,
                                Ok(Ok(_))
                            )
                        } else {
                            post("/v1/traces", req.encode_to_vec())
                                .await
                                .is_ok_and(|r| r.status() == 200)
                        };
                        if ok {
                            acked.traces.lock().expect("lock").push(id);
                        }
                    }
                }
            })
        })
        .collect()
}

/// How often each acknowledged log id of each writer is found on `c`; `None` while some
/// are missing.
async fn find_logs(c: &Collector, mark: &str, acked: &[Vec<String>]) -> Option<Vec<usize>> {
    let mut dups = Vec::new();
    for (w, ids) in acked.iter().enumerate() {
        assert!(ids.len() <= 10_000, "one page holds every log of a writer");
        let (_, b) =
            get_json(&c.api_url(&format!("/api/v1/logs?q={mark}%20AND%20wr{w}&limit=10000"))).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for body in b["logs"]
            .as_array()?
            .iter()
            .filter_map(|l| l["body"].as_str())
        {
            if let Some(id) = body.rsplit(' ').next().and_then(|s| s.strip_prefix("id")) {
                *seen.entry(id).or_default() += 1;
            }
        }
        if ids.iter().any(|id| !seen.contains_key(id.as_str())) {
            return None;
        }
        dups.push(seen.values().filter(|n| **n > 1).count());
    }
    Some(dups)
}

/// Both binaries give in-flight requests 10 s to finish once SIGTERM arrives (the
/// collector's `SHUTDOWN_GRACE`, the agent's receivers); a clean stop fits in it.
const STOP_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_sigterm_under_load_exits_0_and_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let c = Collector::start(&data, &[]);
    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(
        c.grpc_url(),
        format!("http://{}", c.http),
        "collterm",
        true,
        acked.clone(),
        stop.clone(),
    );
    poll(Duration::from_secs(30), "acknowledged writes", || async {
        (acked.log_count() >= 2000).then_some(())
    })
    .await;
    let before = acked.log_count();
    let stopped = terminate_collector(c).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let out = &stopped.output;
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "exit status {:?} after {:?}: {out}",
        stopped.status,
        stopped.took
    );
    assert!(
        stopped.took < STOP_WITHIN,
        "stopped after {:?}: {out}",
        stopped.took
    );
    assert!(out.lines().any(|l| l.ends_with(": stopped")), "{out}");
    let logs = acked.logs.lock().expect("lock").clone();
    let traces = acked.traces.lock().expect("lock").clone();
    let total: usize = logs.iter().map(Vec::len).sum();
    eprintln!(
        "collector stopped in {:?}: {total} logs ({before} when signalled) and {} traces acknowledged",
        stopped.took,
        traces.len()
    );

    // Everything acknowledged is there after the restart, once.
    let c = Collector::start(&data, &[]);
    let dups = poll(
        Duration::from_secs(60),
        "every acknowledged log after the restart",
        || find_logs(&c, "collterm", &logs),
    )
    .await;
    assert!(
        dups.iter().all(|d| *d == 0),
        "duplicated logs per writer: {dups:?}"
    );
    for id in &traces {
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
        assert_eq!(s, 200, "acknowledged trace {id} lost");
        assert_eq!(
            b["spans"].as_array().map(Vec::len),
            Some(3),
            "trace {id}: {b}"
        );
    }
    let stopped = terminate_collector(c).await;
    assert!(stopped.status.is_some_and(|s| s.success()), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigterm_under_load_exits_0_and_ships_everything_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    // Through the fault proxy, so that exports are in flight and retried when the agent
    // is stopped, and its buffer holds data not yet shipped.
    let proxy = FaultProxy::start(format!("http://{}", c.http), 0.7).await;
    let cfg = write_agent_config(dir.path());
    let buf = dir.path().join("buffer");
    let agent = Agent::start(&buf, &proxy.url, &["--config", &cfg]);
    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(
        agent.grpc_url(),
        format!("http://{}", agent.http),
        "agentterm",
        false,
        acked.clone(),
        stop.clone(),
    );
    poll(Duration::from_secs(30), "acknowledged writes", || async {
        (acked.log_count() >= 2000).then_some(())
    })
    .await;
    poll(Duration::from_secs(30), "exports under way", || async {
        let m = agent.metrics().await;
        (metric_value(&m, SENT_LOGS).unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    let stopped = terminate_agent(agent).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let out = &stopped.output;
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "exit status {:?} after {:?}: {out}",
        stopped.status,
        stopped.took
    );
    assert!(
        stopped.took < STOP_WITHIN,
        "stopped after {:?}: {out}",
        stopped.took
    );
    assert!(out.lines().any(|l| l.ends_with(": stopped")), "{out}");
    let logs = acked.logs.lock().expect("lock").clone();
    let total: usize = logs.iter().map(Vec::len).sum();

    // The stopped agent left data to ship: the restart has work to do.
    let inspect = std::process::Command::new(lookout_tests::bin("lookout-agent"))
        .args(["buffer", "inspect", "--json", "--buffer-dir"])
        .arg(&buf)
        .output()
        .expect("lookout-agent buffer inspect");
    let report: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("buffer inspect --json");
    assert_eq!(
        report["damaged"], 0,
        "a clean stop leaves no damage: {report}"
    );
    let unshipped = report["unacked_items"][1].as_u64().unwrap_or(0);
    eprintln!(
        "agent stopped in {:?}: {total} logs acknowledged, {unshipped} not yet shipped",
        stopped.took
    );
    // In-flight batches and their retries get the shutdown grace period, so a stop often
    // drains everything; when it does not, the restart must resume from the buffer.
    let agent = Agent::start(&buf, &proxy.url, &["--config", &cfg]);
    if unshipped > 0 {
        assert!(
            agent
                .output()
                .contains("holds data not yet shipped; resuming"),
            "{}",
            agent.output()
        );
    }
    let dups = poll(
        Duration::from_secs(90),
        "every acknowledged log at the collector",
        || find_logs(&c, "agentterm", &logs),
    )
    .await;
    wait_shipped(&agent, Duration::from_secs(60)).await;
    let dups: usize = find_logs(&c, "agentterm", &logs)
        .await
        .unwrap_or(dups)
        .iter()
        .sum();
    // At least once: only records past the persisted ack position may arrive twice (a
    // batch delivered but not yet acknowledged in order when the agent stopped); nothing
    // behind it is ever sent again.
    eprintln!("after the restart: {dups} of {unshipped} unshipped logs arrived twice");
    assert!(
        dups as u64 <= unshipped,
        "{dups} duplicates, {unshipped} not shipped"
    );
    let stopped = terminate_agent(agent).await;
    assert!(stopped.status.is_some_and(|s| s.success()), "{stopped:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Batches delivered out of order behind one cut off by SIGTERM are not sent again.

/// The record whose batch the first receiver never acknowledges.
const STALLED: &str = "record-000";

/// An OTLP/HTTP logs receiver on loopback port 0 that records the bodies of the records it
/// acknowledges; with `stall`, it never answers a request holding [`STALLED`].
struct Recorder {
    url: String,
    requests: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(stall: bool) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recorder");
        let addr = listener.local_addr().expect("recorder address");
        let requests = Arc::new(AtomicU64::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (r, b) = (requests.clone(), bodies.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (r, b) = (r.clone(), b.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let Ok(body) = axum::body::to_bytes(req.into_body(), 64 << 20).await else {
                    return StatusCode::BAD_REQUEST.into_response();
                };
                let Ok(export) = ExportLogsServiceRequest::decode(body.as_ref()) else {
                    return StatusCode::BAD_REQUEST.into_response();
                };
                let bodies: Vec<String> = export
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .flat_map(|sl| &sl.log_records)
                    .filter_map(|lr| match lr.body.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                if stall && bodies.iter().any(|b| b == STALLED) {
                    // Every attempt at this batch hangs (the agent's timeout cuts it).
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
                b.lock().expect("lock").extend(bodies);
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
                    .into_response()
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url: format!("http://{addr}"),
            requests,
            bodies,
            task,
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_delivered_behind_one_cut_off_by_sigterm_are_not_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[host_metrics]\nenabled = false\n[exporter]\nprotocol = \"http\"\ncompression = \"none\"\n\
         max_batch_items = 10\nbatch_timeout = \"20ms\"\nconcurrency = 4\ntimeout = \"2s\"\n",
    )
    .expect("write agent config");
    let cfg = cfg.display().to_string();
    let buffer = dir.path().join("buffer");

    // The first export hangs; the nine after it are acknowledged.
    let first = Recorder::start(true).await;
    let agent = Agent::start(&buffer, &first.url, &["--config", &cfg]);
    let client = reqwest::Client::new();
    let all: Vec<String> = (0..100).map(|i| format!("record-{i:03}")).collect();
    for chunk in all.chunks(10) {
        let body = crate::util::log_request("ooo", chunk.to_vec()).encode_to_vec();
        let r = client
            .post(agent.http_url("/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("POST to the agent");
        assert_eq!(r.status(), 200);
        // One buffer record per request, so batches of 10 items hold one request each.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    poll(
        Duration::from_secs(30),
        "nine batches acknowledged",
        || async { (first.bodies().len() >= 90).then_some(()) },
    )
    .await;
    assert_eq!(first.bodies().len(), 90, "one batch of 10 is stalled");
    let stopped = terminate_agent(agent).await;
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "agent exit: {}",
        stopped.output
    );
    assert!(
        stopped.output.contains("will not be sent again"),
        "{}",
        stopped.output
    );

    // After a restart only the stalled batch is sent.
    let second = Recorder::start(false).await;
    let agent = Agent::start(&buffer, &second.url, &["--config", &cfg]);
    wait_shipped(&agent, Duration::from_secs(30)).await;
    let mut delivered = first.bodies();
    let resent = second.bodies();
    assert_eq!(resent.len(), 10, "only the stalled batch again: {resent:?}");
    for r in &resent {
        assert!(!delivered.contains(r), "{r} was delivered twice");
    }
    delivered.extend(resent);
    delivered.sort();
    assert_eq!(delivered, all, "every record exactly once");
    assert_eq!(
        metric_value(
            &agent.metrics().await,
            "lookout_agent_exporter_skipped_items_total{signal=\"logs\"}"
        ),
        Some(90.0)
    );
    assert!(second.requests.load(Ordering::SeqCst) >= 1);
}
