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
use lookout_proto::otlp::common::v1::any_value;
use lookout_tests::otlp::{log_request, three_span_trace, writer_trace_id};
use lookout_tests::{
    get_json, metric_value, poll, post_acknowledged, write_agent_config, Agent, Collector, Stopped,
};
use prost::Message;
use rand::Rng;

use crate::util::assert_traces_whole;

// ---------------------------------------------------------------------------------------
// The fault proxy.

/// An HTTP server of a router on loopback port 0; aborted on drop.
struct Served {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(app: axum::Router) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a test server");
        let addr = listener.local_addr().expect("test server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Served {
            url: format!("http://{addr}"),
            task,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
    server: Served,
    stats: Arc<ProxyStats>,
}

impl FaultProxy {
    async fn start(upstream: String, refuse: f64) -> FaultProxy {
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
        FaultProxy {
            server: Served::start(app).await,
            stats,
        }
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

/// How long a SIGTERM may take before the process is killed (and the test fails).
const TERM_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------
// 1. A proxy refusing 70% of the agent's exports.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_everything_exactly_once_through_a_proxy_refusing_70_percent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let proxy = FaultProxy::start(format!("http://{}", c.http), 0.7).await;
    let cfg = write_agent_config(dir.path(), FAULT_AGENT);
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &proxy.server.url,
        &["--config", &cfg],
    );

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
const SERVICE: &str = "sigterm";

/// A request of `PER_REQUEST` logs of writer `w`, the `seq`th: their ids and the request.
/// Bodies read `MARK wrW idID`, so one query per writer finds them.
fn writer_logs(mark: &str, w: usize, seq: usize) -> (Vec<String>, ExportLogsServiceRequest) {
    let ids: Vec<String> = (0..PER_REQUEST).map(|i| format!("{w}x{seq}x{i}")).collect();
    let req = log_request(SERVICE, ids.iter().map(|id| format!("{mark} wr{w} id{id}")));
    (ids, req)
}

/// A whole three-span trace of writer `w`: its hex id and the request.
fn writer_trace(w: usize, seq: usize) -> (String, ExportTraceServiceRequest) {
    let trace = writer_trace_id(0xfa, w, seq);
    (hex::encode(trace), three_span_trace(SERVICE, trace))
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
/// request a trace, until stopped. A failed request (refused, connection closed) is not
/// acknowledged and the writer carries on after a short pause.
const WRITERS: usize = 4;

/// The running writers.
struct Writers {
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Start the writers against OTLP/gRPC `grpc` and OTLP/HTTP `http` (both URLs), with
    /// `mark` in every log body; returns once 2000 logs are acknowledged.
    async fn start(grpc: String, http: String, mark: &'static str, with_traces: bool) -> Writers {
        let acked = Arc::new(Acked::default());
        acked.logs.lock().expect("lock").resize(WRITERS, Vec::new());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (grpc, http, acked, stop) =
                    (grpc.clone(), http.clone(), acked.clone(), stop.clone());
                tokio::spawn(write(w, grpc, http, mark, with_traces, acked, stop))
            })
            .collect();
        poll(Duration::from_secs(30), "acknowledged writes", || async {
            (acked.log_count() >= 2000).then_some(())
        })
        .await;
        Writers { acked, stop, tasks }
    }

    /// Stop the writers and wait for them; returns the acknowledged log ids per writer and
    /// trace ids.
    async fn stop(self) -> (Vec<Vec<String>>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer");
        }
        let logs = self.acked.logs.lock().expect("lock").clone();
        let traces = self.acked.traces.lock().expect("lock").clone();
        (logs, traces)
    }
}

/// Writer `w` of [`Writers`].
async fn write(
    w: usize,
    grpc: String,
    http: String,
    mark: &str,
    with_traces: bool,
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
) {
    let timeout = Duration::from_secs(20);
    let channel = tonic::transport::Endpoint::from_shared(grpc)
        .expect("endpoint")
        .connect_lazy();
    let mut logs_client = LogsServiceClient::new(channel.clone());
    let mut traces_client = TraceServiceClient::new(channel);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("client");
    let (logs_url, traces_url) = (format!("{http}/v1/logs"), format!("{http}/v1/traces"));
    let use_grpc = w < 2;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let (ids, req) = writer_logs(mark, w, seq);
        let ok = if use_grpc {
            finished_ok(timeout, logs_client.export(req)).await
        } else {
            post_acknowledged(&client, &logs_url, req.encode_to_vec()).await
        };
        if ok {
            acked.logs.lock().expect("lock")[w].extend(ids);
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if with_traces && seq % 4 == 0 {
            let (id, req) = writer_trace(w, seq);
            let ok = if use_grpc {
                finished_ok(timeout, traces_client.export(req)).await
            } else {
                post_acknowledged(&client, &traces_url, req.encode_to_vec()).await
            };
            if ok {
                acked.traces.lock().expect("lock").push(id);
            }
        }
    }
}

/// Whether a gRPC call succeeded within `timeout`.
async fn finished_ok<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> bool {
    matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_)))
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

/// A clean stop: exit status 0 within [`STOP_WITHIN`], and the last word logged.
fn assert_clean_stop(stopped: &Stopped) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_sigterm_under_load_exits_0_and_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let c = Collector::start(&data, &[]);
    let writers =
        Writers::start(c.grpc_url(), format!("http://{}", c.http), "collterm", true).await;
    let before = writers.acked.log_count();
    let stopped = c.stop_within(TERM_TIMEOUT).await;
    let (logs, traces) = writers.stop().await;
    assert_clean_stop(&stopped);
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
    assert_traces_whole(&c, &traces).await;
    let stopped = c.stop_within(TERM_TIMEOUT).await;
    assert!(stopped.status.is_some_and(|s| s.success()), "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigterm_under_load_exits_0_and_ships_everything_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    // Through the fault proxy, so that exports are in flight and retried when the agent
    // is stopped, and its buffer holds data not yet shipped.
    let proxy = FaultProxy::start(format!("http://{}", c.http), 0.7).await;
    let cfg = write_agent_config(dir.path(), FAULT_AGENT);
    let buf = dir.path().join("buffer");
    let agent = Agent::start(&buf, &proxy.server.url, &["--config", &cfg]);
    let writers = Writers::start(
        agent.grpc_url(),
        format!("http://{}", agent.http),
        "agentterm",
        false,
    )
    .await;
    poll(Duration::from_secs(30), "exports under way", || async {
        let m = agent.metrics().await;
        (metric_value(&m, SENT_LOGS).unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    let stopped = agent.stop_within(TERM_TIMEOUT).await;
    let (logs, _) = writers.stop().await;
    assert_clean_stop(&stopped);
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
    let agent = Agent::start(&buf, &proxy.server.url, &["--config", &cfg]);
    if unshipped > 0 {
        agent.assert_logged("holds data not yet shipped; resuming");
    }
    let dups = poll(
        Duration::from_secs(90),
        "every acknowledged log at the collector",
        || find_logs(&c, "agentterm", &logs),
    )
    .await;
    agent.wait_shipped(Duration::from_secs(60)).await;
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
    let stopped = agent.stop_within(TERM_TIMEOUT).await;
    assert!(stopped.status.is_some_and(|s| s.success()), "{stopped:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Batches delivered out of order behind one cut off by SIGTERM are not sent again.

/// The record whose batch the first receiver never acknowledges.
const STALLED: &str = "record-000";

/// An OTLP/HTTP logs receiver on loopback port 0 that records the bodies of the records it
/// acknowledges; with `stall`, it never answers a request holding [`STALLED`].
struct Recorder {
    server: Served,
    requests: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(stall: bool) -> Recorder {
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
        Recorder {
            server: Served::start(app).await,
            requests,
            bodies,
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().expect("lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_delivered_behind_one_cut_off_by_sigterm_are_not_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_agent_config(
        dir.path(),
        "[host_metrics]\nenabled = false\n[exporter]\nprotocol = \"http\"\ncompression = \"none\"\n\
         max_batch_items = 10\nbatch_timeout = \"20ms\"\nconcurrency = 4\ntimeout = \"2s\"\n",
    );
    let buffer = dir.path().join("buffer");

    // The first export hangs; the nine after it are acknowledged.
    let first = Recorder::start(true).await;
    let agent = Agent::start(&buffer, &first.server.url, &["--config", &cfg]);
    let all: Vec<String> = (0..100).map(|i| format!("record-{i:03}")).collect();
    for chunk in all.chunks(10) {
        agent
            .post_ok(
                "/v1/logs",
                log_request("ooo", chunk.to_vec()).encode_to_vec(),
            )
            .await;
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
    let stopped = agent.stop_within(TERM_TIMEOUT).await;
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
    let agent = Agent::start(&buffer, &second.server.url, &["--config", &cfg]);
    agent.wait_shipped(Duration::from_secs(30)).await;
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
