//! The agent with the real collector: a collector outage and an agent `kill -9` lose
//! nothing the agent acknowledged, and a batch the collector refuses does not block the
//! ones after it.

use std::time::Duration;

use lookout_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_tests::otlp::{log_record, logs_request, now_ns};
use lookout_tests::{
    free_addr, get_json, metric_value, poll, write_agent_config, Agent, Collector, ProtobufBody,
};
use prost::Message;

const PER_REQUEST: usize = 50;

/// Logs of service `shop` with bodies `MARK nI` for `I` in `from..from + n`.
fn logs(mark: &str, from: usize, n: usize, time: u64) -> ExportLogsServiceRequest {
    logs_request(
        "shop",
        (from..from + n)
            .map(|i| log_record(format!("{mark} n{i}"), time))
            .collect(),
    )
}

/// Send `requests` requests of logs marked `mark` to the agent over OTLP/HTTP; all must
/// be acknowledged.
async fn send_http(agent: &Agent, mark: &str, requests: usize) -> usize {
    for r in 0..requests {
        let body = logs(mark, r * PER_REQUEST, PER_REQUEST, now_ns()).encode_to_vec();
        agent.post_ok("/v1/logs", body).await;
    }
    requests * PER_REQUEST
}

/// The same over OTLP/gRPC with gzip.
async fn send_grpc(agent: &Agent, mark: &str, requests: usize) -> usize {
    let mut client = LogsServiceClient::connect(agent.grpc_url())
        .await
        .expect("connect to the agent")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    for r in 0..requests {
        client
            .export(logs(mark, r * PER_REQUEST, PER_REQUEST, now_ns()))
            .await
            .expect("export to the agent");
    }
    requests * PER_REQUEST
}

async fn log_total(c: &Collector, q: &str) -> u64 {
    let (_, b) = get_json(&c.api_url(&format!("/api/v1/logs?q={q}&limit=1"))).await;
    b["total"].as_u64().unwrap_or(0)
}

/// Wait up to `secs` seconds until `c` finds at least `n` logs matching `q`.
async fn wait_for_logs(c: &Collector, q: &str, n: usize, secs: u64, what: &str) {
    poll(Duration::from_secs(secs), what, || async {
        (log_total(c, q).await >= n as u64).then_some(())
    })
    .await;
}

const FAST_RETRY: &str = "[exporter]\nretry_initial_interval = \"100ms\"\nretry_max_interval = \"500ms\"\nbatch_timeout = \"50ms\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_and_agent_kill_9_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, buf) = (dir.path().join("data"), dir.path().join("buffer"));
    let cfg = write_agent_config(dir.path(), FAST_RETRY);
    let grpc = free_addr();
    let collector_url = format!("http://{grpc}");
    let c = Collector::start_on(grpc, &data, &[]);
    let agent = Agent::start(&buf, &collector_url, &["--config", &cfg]);

    // Before the outage: shipped straight through, with the agent's resource attributes.
    let before = send_http(&agent, "agentmarkbefore", 10).await;
    poll(
        Duration::from_secs(30),
        "logs before the outage",
        || async { (log_total(&c, "agentmarkbefore").await == before as u64).then_some(()) },
    )
    .await;
    let (_, b) = get_json(&c.api_url("/api/v1/logs?q=agentmarkbefore&limit=1")).await;
    let resource = &b["logs"][0]["resource"];
    assert!(resource["host.name"].is_string(), "host.name added: {b}");
    assert!(
        resource["service.instance.id"].is_string(),
        "instance id added: {b}"
    );
    assert_eq!(
        resource["service.name"], "shop",
        "the sender's own name wins"
    );
    agent.wait_shipped(Duration::from_secs(30)).await;
    c.kill9();

    // The outage: the agent acknowledges into its buffer and keeps retrying.
    let during = send_grpc(&agent, "agentmarkduring", 20).await
        + send_http(&agent, "agentmarkduring", 10).await;
    poll(Duration::from_secs(10), "export retries", || async {
        let m = agent.metrics().await;
        (metric_value(
            &m,
            "lookout_agent_exporter_retries_total{reason=\"unavailable\",signal=\"logs\"}",
        )
        .unwrap_or(0.0)
            > 0.0)
            .then_some(())
    })
    .await;
    let (_, h) = get_json(&agent.api_url("/healthz")).await;
    assert!(h["buffer_unacked_bytes"].as_u64().unwrap_or(0) > 0, "{h}");
    // And then the agent crashes too.
    agent.kill9();

    // Both come back; everything arrives exactly once.
    let agent = Agent::start(&buf, &collector_url, &["--config", &cfg]);
    agent.assert_logged("holds data not yet shipped; resuming");
    let c = Collector::start_on(grpc, &data, &[]);
    let after = send_http(&agent, "agentmarkafter", 4).await;
    wait_for_logs(
        &c,
        "agentmarkduring",
        during,
        60,
        "logs sent during the outage",
    )
    .await;
    wait_for_logs(
        &c,
        "agentmarkafter",
        after,
        30,
        "logs sent after the restart",
    )
    .await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    assert_eq!(log_total(&c, "agentmarkbefore").await, before as u64);
    assert_eq!(
        log_total(&c, "agentmarkduring").await,
        during as u64,
        "no loss, no duplicates"
    );
    assert_eq!(log_total(&c, "agentmarkafter").await, after as u64);
    let m = agent.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "lookout_agent_exporter_sent_items_total{signal=\"logs\"}"
        ),
        Some((during + after) as f64),
        "{m}"
    );
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_dropped_and_counted_and_the_rest_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    // The agent takes timestamps up to two days ahead; the collector only one hour, so it
    // answers 400 to a batch of only such records.
    let cfg = write_agent_config(
        dir.path(),
        &format!("{FAST_RETRY}[limits]\nmax_future_skew = \"48h\"\n"),
    );
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &c.grpc_url(),
        &["--config", &cfg],
    );
    let future = now_ns() + 24 * 3600 * 1_000_000_000;
    let bad = logs("agentbad", 0, 30, future).encode_to_vec();
    agent.post_ok("/v1/logs", bad).await;
    poll(
        Duration::from_secs(20),
        "the refused batch counted",
        || async {
            let m = agent.metrics().await;
            (metric_value(
                &m,
                "lookout_agent_exporter_dropped_items_total{reason=\"invalid\",signal=\"logs\"}",
            ) == Some(30.0))
            .then_some(())
        },
    )
    .await;
    agent.assert_logged("refused a batch permanently");
    let good = send_http(&agent, "agentgood", 5).await;
    poll(Duration::from_secs(20), "the good batches", || async {
        (log_total(&c, "agentgood").await == good as u64).then_some(())
    })
    .await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    assert_eq!(log_total(&c, "agentbad").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailed_files_survive_rotation_and_kill_9_without_loss_or_duplicates() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).expect("mkdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let cfg = write_agent_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}[[tail]]\npaths = [\"{}/*.log\"]\nservice = \"tailsvc\"\nstart_at = \"beginning\"\npoll_interval = \"50ms\"\n",
            logs_dir.display()
        ),
    );
    let buf = dir.path().join("buffer");
    let agent = Agent::start(&buf, &c.grpc_url(), &["--config", &cfg]);
    let app = logs_dir.join("app.log");
    let write_lines = |from: usize, to: usize| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&app)
            .expect("open app.log");
        for i in from..to {
            writeln!(f, "tailmark line{i}").expect("write");
            if i % 50 == 0 {
                f.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    write_lines(0, 600);
    // Rotation by rename while lines keep coming: the old file is finished, the new one
    // read from its start.
    std::fs::rename(&app, logs_dir.join("app.log.1")).expect("rotate");
    write_lines(600, 1000);
    wait_for_logs(&c, "tailmark", 1000, 30, "tailed lines across the rotation").await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    // A crash between polls: the restart neither skips nor repeats lines.
    agent.kill9();
    write_lines(1000, 1300);
    let agent = Agent::start(&buf, &c.grpc_url(), &["--config", &cfg]);
    wait_for_logs(
        &c,
        "tailmark",
        1300,
        30,
        "lines written while the agent was down",
    )
    .await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        log_total(&c, "tailmark").await,
        1300,
        "every line exactly once"
    );
    let (_, b) = get_json(&c.api_url("/api/v1/logs?q=line1299&limit=1")).await;
    assert_eq!(b["logs"][0]["service"], "tailsvc", "{b}");
    // Newest first is the reverse of the file: the 300 lines read after the restart (a
    // few polls, many lines each) come back in exact order.
    let (_, b) = get_json(&c.api_url("/api/v1/logs?q=tailmark&limit=300")).await;
    let bodies: Vec<&str> = b["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["body"].as_str())
        .collect();
    let want: Vec<String> = (1000..1300)
        .rev()
        .map(|i| format!("tailmark line{i}"))
        .collect();
    assert_eq!(bodies, want, "newest first, in file order");
    assert!(
        b["logs"][0]["attributes"]["log.file.path"].is_string(),
        "{b}"
    );
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_pushes_back_and_the_http_exporter_delivers_afterwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Ship over OTLP/HTTP to a collector that is not there yet.
    let http = free_addr();
    let cfg = write_agent_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}protocol = \"http\"\ncompression = \"zstd\"\n[buffer]\nmax_size = \"256KiB\"\nsegment_size = \"64KiB\"\n"
        ),
    );
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &format!("http://{http}"),
        &["--config", &cfg],
    );
    let client = reqwest::Client::new();
    let mut accepted = 0usize;
    let mut throttled = None;
    for r in 0..200 {
        let body = logs("agentfull", r * PER_REQUEST, PER_REQUEST, now_ns()).encode_to_vec();
        let resp = client
            .post(agent.http_url("/v1/logs"))
            .protobuf(body)
            .send()
            .await
            .expect("POST");
        if resp.status() == 200 {
            accepted += PER_REQUEST;
            continue;
        }
        throttled = Some((
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string()),
        ));
        break;
    }
    assert_eq!(
        throttled,
        Some((429, Some("5".to_string()))),
        "HTTP answers 429 with Retry-After"
    );
    // gRPC gets RESOURCE_EXHAUSTED with RetryInfo, which OTLP clients retry.
    let mut grpc = LogsServiceClient::connect(agent.grpc_url())
        .await
        .expect("connect");
    let e = grpc
        .export(logs("agentfull", 0, PER_REQUEST, now_ns()))
        .await
        .expect_err("full");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    assert!(e.get_details_retry_info().is_some(), "RetryInfo attached");
    let m = agent.metrics().await;
    assert!(
        metric_value(
            &m,
            "lookout_agent_buffer_refused_appends_total{reason=\"full\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{m}"
    );

    // The collector appears on the HTTP port: everything accepted arrives.
    let c = Collector::start_at("127.0.0.1:0".parse().expect("addr"), http, &data, &[]);
    wait_for_logs(
        &c,
        "agentfull",
        accepted,
        60,
        "buffered logs over OTLP/HTTP",
    )
    .await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    assert_eq!(log_total(&c, "agentfull").await, accepted as u64);
    // With room again, the agent accepts.
    send_http(&agent, "agentroom", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_verify_finds_and_repairs_a_corrupt_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let buf = dir.path().join("buffer");
    // No collector: everything stays in the buffer; no host metrics, so the counts are exact.
    // The address is held by a listener that never answers, so that no other test's
    // collector can take the port meanwhile.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let cfg_arg = write_agent_config(dir.path(), "[host_metrics]\nenabled = false\n");
    let agent = Agent::start(
        &buf,
        &format!("http://{}", silent.local_addr().expect("addr")),
        &["--config", &cfg_arg],
    );
    send_http(&agent, "agentverify", 20).await;
    assert!(agent.terminate().success(), "SIGTERM exits 0");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(lookout_tests::bin("lookout-agent"))
            .args(args)
            .arg("--buffer-dir")
            .arg(&buf)
            .output()
            .expect("run lookout-agent buffer");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&["buffer", "verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("not yet shipped: 20 records (0 spans, 1000 log records"),
        "{text}"
    );
    // Flip a byte in the middle of the segment.
    let seg = std::fs::read_dir(buf.join("buffer"))
        .expect("buffer dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");
    let (code, text) = run(&["buffer", "verify"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    let (code, text) = run(&["buffer", "verify", "--repair"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["buffer", "inspect", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(report["records"], 19, "{report}");
    assert_eq!(report["damaged"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_process_metrics_reach_the_collectors_metrics_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let cfg = write_agent_config(
        dir.path(),
        &format!(
            "{FAST_RETRY}[resource]\nservice_name = \"sidecar\"\n[host_metrics]\ninterval = \"1s\"\npid = {}\n",
            std::process::id()
        ),
    );
    let agent = Agent::start(
        &dir.path().join("buffer"),
        &c.grpc_url(),
        &["--config", &cfg],
    );
    let text = poll(
        Duration::from_secs(30),
        "host metrics on /metrics",
        || async {
            let t = reqwest::get(c.api_url("/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (t.contains("process_memory_usage_bytes{")
                && t.contains("system_cpu_time_seconds_total{"))
            .then_some(t)
        },
    )
    .await;
    let line = text
        .lines()
        .find(|l| l.starts_with("process_memory_usage_bytes{"))
        .expect("process line");
    assert!(line.contains("job=\"sidecar\""), "{line}");
    let rss: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(rss > 1e6, "the test process has some RSS: {line}");
    assert!(text.contains("system_memory_usage_bytes{"), "memory");
    assert!(agent.terminate().success());
}
