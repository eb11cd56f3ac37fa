//! The load generator against a real collector (in-process, port 0): every signal over
//! both transports, gzip and JSON; what it counts as acknowledged is what the collector
//! counted as accepted.

use std::time::Duration;

use lookout_agent::loadgen::{run, Args, EncodingArg, ProtocolArg, SignalArg};
use lookout_collector::server::{self, Listeners};
use lookout_config::CollectorConfig;
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
    let l = Listeners::bind(&cfg).await.expect("bind");
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
    }
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
    c.shutdown.cancel();
    c.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_and_refusals_are_counted_by_kind() {
    let c = collector().await;
    let s = run(Args {
        rate: 2000,
        duration: Duration::from_secs(1),
        ..args(&c.grpc, ProtocolArg::Grpc, SignalArg::Logs)
    })
    .await
    .expect("run");
    // 2000 items/s for 1 s in batches of 100: 20 requests.
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
    c.shutdown.cancel();
    c.task.await.expect("join").expect("clean stop");
}
