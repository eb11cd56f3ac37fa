//! Nothing acknowledged is lost: `kill -9` the collector in the middle of a write load,
//! restart it on the same data directory, and find every acknowledged item.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookout_tests::otlp::{log_request, three_span_trace, writer_trace_id};
use lookout_tests::{get_json, poll, post_acknowledged, write_config, Collector, FAST_TRACES};
use prost::Message;

use crate::util::assert_traces_whole;

const WRITERS: usize = 4;
const PER_REQUEST: usize = 20;
const SERVICE: &str = "durable";

fn log_batch(writer: usize, seq: usize) -> (Vec<String>, Vec<u8>) {
    let ids: Vec<String> = (0..PER_REQUEST)
        .map(|i| format!("w{writer}s{seq}i{i}"))
        .collect();
    let req = log_request(SERVICE, ids.iter().map(|id| format!("durablemark {id}")));
    (ids, req.encode_to_vec())
}

fn trace_batch(writer: usize, seq: usize) -> (String, Vec<u8>) {
    let trace = writer_trace_id(0xd0, writer, seq);
    let req = three_span_trace(SERVICE, trace);
    (hex::encode(trace), req.encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]);
    let acked_logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked_traces = Arc::new(Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (client, logs_url, traces_url) = (
            client.clone(),
            c.http_url("/v1/logs"),
            c.http_url("/v1/traces"),
        );
        let (acked_logs, acked_traces) = (acked_logs.clone(), acked_traces.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0.. {
                let (ids, body) = log_batch(w, seq);
                if !post_acknowledged(&client, &logs_url, body).await {
                    return;
                }
                acked_logs.lock().expect("lock").extend(ids);
                if seq % 4 == 0 {
                    let (id, body) = trace_batch(w, seq);
                    if !post_acknowledged(&client, &traces_url, body).await {
                        return;
                    }
                    acked_traces.lock().expect("lock").push(id);
                }
            }
        }));
    }
    // Crash once a fair amount is acknowledged, while the writers are still going.
    poll(Duration::from_secs(30), "acknowledged writes", || async {
        (acked_logs.lock().expect("lock").len() >= 3000).then_some(())
    })
    .await;
    let data_dir = c.data_dir.clone();
    c.kill9();
    for t in tasks {
        t.await.expect("writer");
    }
    let acked_logs: HashSet<String> = acked_logs.lock().expect("lock").iter().cloned().collect();
    let acked_traces = acked_traces.lock().expect("lock").clone();
    assert!(acked_logs.len() >= 3000);

    let c = Collector::start(&data_dir, &[]);
    let out = c.output();
    assert!(out.contains("write-ahead log replayed"), "{out}");
    // Every acknowledged log is searchable after the restart.
    let found = poll(Duration::from_secs(30), "replayed logs", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/logs?q=durablemark&limit=10000")).await;
        let total = b["total"].as_u64().unwrap_or(0);
        (total as usize >= acked_logs.len()).then_some(b)
    })
    .await;
    let bodies: HashSet<String> = found["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["body"].as_str())
        .filter_map(|b| b.strip_prefix("durablemark "))
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = acked_logs
        .iter()
        .filter(|id| !bodies.contains(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged logs lost: {missing:?} (of {})",
        acked_logs.len()
    );
    // And every acknowledged trace, whole.
    assert_traces_whole(&c, &acked_traces).await;

    // A clean stop commits; the next start replays nothing it already has.
    assert!(c.terminate().success());
    let c = Collector::start(&data_dir, &[]);
    let (_, b) = get_json(&c.api_url("/api/v1/logs?q=durablemark&limit=1")).await;
    assert_eq!(
        b["total"].as_u64(),
        found["total"].as_u64(),
        "no duplicates after a clean restart"
    );
}

/// `/readyz` means what the WAL replay restored answers queries: right after a restart
/// from `kill -9`, acknowledged traces are found whole without waiting (their spans were
/// in the WAL only: no block had been cut), the last ones replayed included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_spans_answer_as_soon_as_ready() {
    const REQUESTS: usize = 120;
    const PER_REQUEST: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "[spans]\nblock_interval = \"1h\"\n");
    let cfg = cfg.display().to_string();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--config", &cfg]);
    let client = reqwest::Client::new();
    let url = c.http_url("/v1/traces");
    let mut ids = Vec::new();
    for r in 0..REQUESTS {
        let mut req = three_span_trace(SERVICE, writer_trace_id(0xe0, r, 0));
        ids.push(hex::encode(writer_trace_id(0xe0, r, 0)));
        for t in 1..PER_REQUEST {
            let id = writer_trace_id(0xe0, r, t);
            req.resource_spans
                .extend(three_span_trace(SERVICE, id).resource_spans);
            ids.push(hex::encode(id));
        }
        assert!(
            post_acknowledged(&client, &url, req.encode_to_vec()).await,
            "request {r}"
        );
    }
    c.kill9();
    let c = Collector::start(&data, &["--config", &cfg]);
    // The last traces replayed first, then a spread of the others.
    let sample = ids.iter().rev().take(200).chain(ids.iter().step_by(97));
    let mut missing = Vec::new();
    let mut checked = 0;
    for id in sample {
        checked += 1;
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
        if s != 200 || b["spans"].as_array().map(Vec::len) != Some(3) {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {checked} acknowledged traces missing right after ready: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Beside the only block under `store` (a block store's directory), a copy with a damaged
/// footer; returns the copy's path.
fn add_damaged_block(store: &std::path::Path) -> String {
    let mut blocks = Vec::new();
    for part in std::fs::read_dir(store).expect("block store dir") {
        for b in std::fs::read_dir(part.expect("entry").path()).expect("partition") {
            blocks.push(b.expect("entry").path());
        }
    }
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let damaged = blocks[0].with_file_name("00000000000000000999.blk");
    let mut bytes = std::fs::read(&blocks[0]).expect("read block");
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&damaged, bytes).expect("write");
    damaged.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_partitions_are_named_and_lookups_answer_from_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), FAST_TRACES);
    let cfg = cfg.display().to_string();
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--config", &cfg]);
    let (id, body) = trace_batch(0, 1);
    c.post_ok("/v1/traces", body).await;
    // Complete and summarised.
    poll(Duration::from_secs(30), "the trace summary", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/traces?limit=1")).await;
        (b["traces"][0]["trace_id"] == id.as_str()).then_some(())
    })
    .await;
    assert!(c.terminate().success());
    let spans = add_damaged_block(&data.join("spanstore").join("spans"));
    let traces = add_damaged_block(&data.join("spanstore").join("summaries"));

    // The collector starts; a lookup answers from the readable blocks and partitions and
    // names the damaged ones in warnings.
    let c = Collector::start(&data, &["--config", &cfg]);
    let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["spans"].as_array().map(Vec::len), Some(3), "{b}");
    assert_eq!(b["state"], "complete", "{b}");
    for damaged in [&spans, &traces] {
        let named = b["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|w| {
                w["kind"] == "unreadable_partition"
                    && w["message"].as_str().is_some_and(|m| m.contains(damaged))
            })
        });
        assert!(named, "{damaged}: {b}");
    }
    // An id found nowhere else might be in the damaged block: not a 404.
    let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{}", "ab".repeat(16)))).await;
    assert_eq!(s, 500, "{b}");
    assert!(
        b["error"].as_str().is_some_and(|m| m.contains(&spans)),
        "{b}"
    );
    // Jaeger's service list: what the readable partitions hold, and an error beside it.
    let (s, b) = get_json(&c.api_url("/jaeger/api/services")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], serde_json::json!(["durable"]), "{b}");
    assert!(
        b["errors"][0]["msg"]
            .as_str()
            .is_some_and(|m| m.contains(&traces)),
        "{b}"
    );
    // Ingest goes on, and new traces are found the same way.
    let (id, body) = trace_batch(0, 2);
    c.post_ok("/v1/traces", body).await;
    let b = poll(Duration::from_secs(30), "the new trace", || async {
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
        (s == 200).then_some(b)
    })
    .await;
    assert_eq!(b["spans"].as_array().map(Vec::len), Some(3), "{b}");
    let m = c.metrics().await;
    assert!(
        m.contains("lookout_traces_assembly_warnings_total{kind=\"unreadable_partition\"}"),
        "{m}"
    );
}

/// A second collector on a running one's data directory, a second agent on a running
/// one's buffer, and `buffer verify --repair` under a running agent are refused before
/// they read anything, naming the PID that holds the directory; the first keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_belongs_to_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let c = Collector::start(&data, &[]);
    let buffer = dir.path().join("buffer");
    let agent = lookout_tests::Agent::start(&buffer, &c.grpc_url(), &[]);
    // Runs `bin args`; it must exit (not start serving) within 10 s, saying who holds the
    // directory.
    let refused = |bin: &str, args: &[&str], holder: u32| {
        let mut child = std::process::Command::new(lookout_tests::bin(bin))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{bin} {args:?} started on a directory in use");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
            .expect("stderr");
        assert!(!status.success(), "{bin} {args:?}: {err}");
        assert!(
            err.contains(&format!("in use by another process (pid {holder})")),
            "{bin} {args:?}: {err}"
        );
    };
    let listen = [
        "--otlp-grpc",
        "127.0.0.1:0",
        "--otlp-http",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ];
    let data_arg = data.display().to_string();
    refused(
        "lookout-collector",
        &[&listen[..], &["--data-dir", &data_arg]].concat(),
        c.pid(),
    );
    let buffer_arg = buffer.display().to_string();
    refused(
        "lookout-agent",
        &[
            &listen[..],
            &["--buffer-dir", &buffer_arg, "--collector", &c.grpc_url()],
        ]
        .concat(),
        agent.pid(),
    );
    refused(
        "lookout-agent",
        &["buffer", "verify", "--repair", "--buffer-dir", &buffer_arg],
        agent.pid(),
    );
    // The first ones still take data and answer.
    agent
        .post_ok(
            "/v1/logs",
            log_request("locked", ["still here".to_string()]).encode_to_vec(),
        )
        .await;
    c.post_ok(
        "/v1/logs",
        log_request("locked", ["still here".to_string()]).encode_to_vec(),
    )
    .await;
    // Once the holder is gone, the directory can be opened again.
    drop(agent);
    let c2_dir = data.clone();
    drop(c);
    let again = Collector::start(&c2_dir, &[]);
    let (status, _) = lookout_tests::get_json(&again.api_url("/readyz")).await;
    assert_eq!(status, 200);
}
