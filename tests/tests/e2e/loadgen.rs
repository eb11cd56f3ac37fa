//! The load generator against a real collector (in-process, port 0): every signal over
//! both transports, gzip and JSON; what it counts as acknowledged is what the collector
//! counted as accepted.

use std::time::Duration;

use lookout_agent::loadgen::{run, Args, EncodingArg, ProtocolArg, SignalArg, Summary, TraceShape};
use lookout_collector::server;
use lookout_config::CollectorConfig;
use lookout_tests::{get_json, poll};
use tokio_util::sync::CancellationToken;

struct Running {
    grpc: String,
    http: String,
    api: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn collector() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = CollectorConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    cfg.otlp.grpc = "127.0.0.1:0".parse().expect("addr");
    cfg.otlp.http = "127.0.0.1:0".parse().expect("addr");
    cfg.api.listen = "127.0.0.1:0".parse().expect("addr");
    cfg.index.commit_interval = lookout_config::HumanDuration::from_millis(100);
    // These tests count what lookout-loadgen sends at full speed into a debug build;
    // overload refusals (503) are the subject of other tests, so the queue is roomy.
    cfg.ingest.max_pending_bytes = lookout_config::ByteSize::mib(256);
    let l = server::bind_listeners(&cfg).await.expect("bind");
    let (grpc, http, api) = (
        l.grpc.local_addr().expect("addr"),
        l.http.local_addr().expect("addr"),
        l.api.local_addr().expect("addr"),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::run(
        cfg,
        l,
        server::RunOptions::default(),
        shutdown.clone(),
    ));
    let api = format!("http://{api}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{api}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "collector not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        grpc: format!("http://{grpc}"),
        http: format!("http://{http}"),
        api,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Running {
    /// Stop the collector and wait for a clean exit.
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("clean stop");
    }
}

fn args(endpoint: &str, protocol: ProtocolArg, signal: SignalArg) -> Args {
    Args {
        endpoint: Some(endpoint.to_string()),
        protocol,
        encoding: EncodingArg::Protobuf,
        signal,
        rate: 0,
        duration: Duration::from_millis(700),
        batch: 100,
        concurrency: 2,
        gzip: false,
        services: 3,
        json: false,
        threads: 1,
        ..Args::default()
    }
}

/// `rate` items/s of `signal` for 1 s over OTLP/gRPC into `c`.
async fn run_at_rate(c: &Running, rate: u64, signal: SignalArg) -> Summary {
    run(Args {
        rate,
        duration: Duration::from_secs(1),
        ..args(&c.grpc, ProtocolArg::Grpc, signal)
    })
    .await
    .expect("run")
}

async fn accepted(api: &str, signal: &str, transport: &str) -> u64 {
    let text = reqwest::get(format!("{api}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let series = format!(
        "lookout_receiver_accepted_items_total{{signal=\"{signal}\",transport=\"{transport}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signal_and_transport_is_acknowledged_and_counted() {
    let c = collector().await;
    let mut expected = std::collections::HashMap::new();
    for (signal, name) in [
        (SignalArg::Traces, "traces"),
        (SignalArg::Logs, "logs"),
        (SignalArg::Metrics, "metrics"),
    ] {
        for (protocol, transport, endpoint) in [
            (ProtocolArg::Grpc, "grpc", &c.grpc),
            (ProtocolArg::Http, "http", &c.http),
        ] {
            for (gzip, encoding) in [
                (false, EncodingArg::Protobuf),
                (true, EncodingArg::Protobuf),
                (false, EncodingArg::Json),
            ] {
                if protocol == ProtocolArg::Grpc && encoding == EncodingArg::Json {
                    continue;
                }
                let a = Args {
                    gzip,
                    encoding,
                    ..args(endpoint, protocol, signal)
                };
                let s = run(a).await.expect("run");
                assert!(s.requests_ok > 0, "{name}/{transport}: {s}");
                assert_eq!(s.requests_failed, 0, "{name}/{transport}: {s}");
                assert_eq!(s.items_rejected, 0, "{name}/{transport}: {s}");
                assert_eq!(s.items_acked, s.requests_ok * 100);
                assert!(s.items_per_s > 0.0 && s.latency_p50_ms > 0.0);
                *expected.entry((name, transport)).or_insert(0u64) += s.items_acked;
            }
        }
    }
    for ((signal, transport), n) in expected {
        assert_eq!(
            accepted(&c.api, signal, transport).await,
            n,
            "{signal}/{transport}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_and_refusals_are_counted_by_kind() {
    let c = collector().await;
    let s = run_at_rate(&c, 2000, SignalArg::Logs).await;
    // 2000 items/s for 1 s in batches of 100: 20 requests, late ones too on a busy
    // machine, never a flood.
    assert_eq!(s.requests_ok, 20, "{s}");
    // Nothing listens here: every request fails, counted by kind, and the run still ends.
    let s = run(Args {
        duration: Duration::from_millis(300),
        ..args("http://127.0.0.1:9", ProtocolArg::Http, SignalArg::Traces)
    })
    .await
    .expect("run");
    assert_eq!(s.items_acked, 0);
    assert!(s.errors.get("connect").copied().unwrap_or(0) > 0, "{s}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_all_sends_correlated_spans_logs_and_metrics() {
    let c = collector().await;
    let s = run(Args {
        duration: Duration::from_millis(800),
        error_rate: 0.0,
        slow_rate: 0.0,
        ..args(&c.grpc, ProtocolArg::Grpc, SignalArg::All)
    })
    .await
    .expect("run");
    assert_eq!(s.requests_failed, 0, "{s}");
    assert_eq!(s.error_traces, 0, "{s}");
    assert!(s.traces > 0);
    let mut total = 0;
    for name in ["traces", "logs", "metrics"] {
        let sig = s.signals.get(name).expect(name);
        assert!(
            sig.items_acked > 0 && sig.items_acked == sig.items_sent,
            "{name}: {s}"
        );
        assert_eq!(sig.items_acked, sig.requests_ok * 100, "{name}");
        assert_eq!(
            accepted(&c.api, name, "grpc").await,
            sig.items_acked,
            "{name}"
        );
        total += sig.items_acked;
    }
    assert_eq!(total, s.items_acked);
    // Realistic proportions: more spans than logs, more logs than metric points.
    let n = |k: &str| s.signals[k].items_acked;
    assert!(n("traces") > n("logs") && n("logs") > n("metrics"), "{s}");

    // Logs carry the trace and span ids of spans that were sent, by the same service.
    let logs = poll(Duration::from_secs(20), "logs indexed", || async {
        let (st, v) = get_json(&format!("{}/api/v1/logs?limit=20", c.api)).await;
        let logs = v["logs"].as_array().cloned().unwrap_or_default();
        (st == 200 && logs.len() == 20).then_some(logs)
    })
    .await;
    for log in &logs {
        let trace_id = log["trace_id"].as_str().expect("trace_id");
        let span_id = log["span_id"].as_str().expect("span_id").to_string();
        let service = log["service"].as_str().unwrap_or_default().to_string();
        let url = format!("{}/api/v1/traces/{trace_id}", c.api);
        let span = poll(Duration::from_secs(20), "trace of a log", || async {
            let (st, v) = get_json(&url).await;
            (st == 200)
                .then(|| {
                    v["spans"]
                        .as_array()?
                        .iter()
                        .find(|sp| sp["span_id"].as_str() == Some(span_id.as_str()))
                        .cloned()
                })
                .flatten()
        })
        .await;
        assert_eq!(span["service"].as_str(), Some(service.as_str()), "{log}");
        assert_eq!(
            span["kind"].as_str().map(str::to_lowercase).as_deref(),
            Some("server")
        );
    }

    // A trace tree across services: client/server pairs, several services.
    let trace_id = logs[0]["trace_id"].as_str().expect("trace_id");
    let (_, t) = get_json(&format!("{}/api/v1/traces/{trace_id}", c.api)).await;
    assert!(
        t["services"].as_array().is_some_and(|s| s.len() >= 2),
        "{t}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_one_makes_every_trace_fail_visibly() {
    let c = collector().await;
    let s = run(Args {
        duration: Duration::from_millis(500),
        error_rate: 1.0,
        ..args(&c.http, ProtocolArg::Http, SignalArg::All)
    })
    .await
    .expect("run");
    assert_eq!(s.requests_failed, 0, "{s}");
    assert!(s.traces > 0 && s.error_traces == s.traces, "{s}");
    // The run stops at its deadline mid-stream, so the last trace of a worker may lack
    // the spans still queued (its root comes last): examine one whose root arrived.
    let whole = poll(
        Duration::from_secs(20),
        "a whole error trace indexed",
        || async {
            let (st, v) = get_json(&format!("{}/api/v1/traces?status=error&limit=20", c.api)).await;
            let t = v["traces"].as_array().cloned().unwrap_or_default();
            (st == 200)
                .then(|| t.into_iter().find(|t| t["root_service"] == "frontend"))
                .flatten()
        },
    )
    .await;
    let id = whole["trace_id"].as_str().expect("trace_id");
    let (_, t) = get_json(&format!("{}/api/v1/traces/{id}", c.api)).await;
    let spans = t["spans"].as_array().expect("spans");
    let failed: Vec<_> = spans
        .iter()
        .filter(|sp| {
            sp["status"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("error"))
        })
        .collect();
    assert!(!failed.is_empty(), "{t}");
    assert!(
        failed.iter().any(|sp| sp["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["name"] == "exception"))),
        "{t}"
    );
    // The root fails too, and an ERROR log names the trace.
    assert!(
        failed.iter().any(|sp| sp["parent_span_id"].is_null()),
        "{t}"
    );
    let logs = poll(Duration::from_secs(20), "error logs indexed", || async {
        let (_, v) = get_json(&format!("{}/api/v1/logs?severity=error&limit=50", c.api)).await;
        let l = v["logs"].as_array().cloned().unwrap_or_default();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert!(logs
        .iter()
        .all(|l| l["trace_id"].is_string() && l["severity_number"] == 17));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_all_holds_a_fixed_rate_and_dry_run_sends_nothing() {
    let c = collector().await;
    let s = run_at_rate(&c, 3000, SignalArg::All).await;
    // 3000 items/s for 1 s in batches of 100: 30 requests over every signal.
    assert_eq!(s.requests_ok, 30, "{s}");
    assert!(
        s.signals.contains_key("traces") && s.signals.contains_key("logs"),
        "{s}"
    );
    let s = run(Args {
        dry_run: true,
        duration: Duration::from_millis(200),
        trace_shape: TraceShape::Flat,
        ..args("http://127.0.0.1:9", ProtocolArg::Grpc, SignalArg::Traces)
    })
    .await
    .expect("run");
    assert!(
        s.dry_run && s.items_acked > 0 && s.requests_failed == 0,
        "{s}"
    );
    assert_eq!(s.items_acked, s.requests_ok * 100);
    c.stop().await;
}
