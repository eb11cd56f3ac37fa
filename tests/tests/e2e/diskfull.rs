//! A full data disk: the collector refuses with a retryable status instead of
//! acknowledging what it cannot persist, counts it, resumes once space is freed, and
//! loses nothing it acknowledged (in the index and after a restart).
//!
//! The data directory is a size-limited tmpfs, so the test runs as root (as CI does).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lookout_proto::otlp::trace::v1::Span;
use lookout_tests::otlp::{log_request, now_ns, traces_request};
use lookout_tests::{get_json, metric_value, poll, post_protobuf, Collector};
use prost::Message;

/// A tmpfs of a fixed size, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn logs(batch: usize, n: usize) -> Vec<u8> {
    log_request(
        "filler",
        (0..n).map(|i| format!("diskfull b{batch} r{i} {}", "x".repeat(300))),
    )
    .encode_to_vec()
}

/// One root span of trace `batch` (ids derived from it), for the trace index.
fn trace(batch: usize) -> Vec<u8> {
    let mut trace_id = vec![0u8; 16];
    trace_id[8..].copy_from_slice(&(batch as u64 + 1).to_be_bytes());
    trace_id[0] = 0xdf;
    let now = now_ns();
    let span = Span {
        trace_id,
        span_id: (batch as u64 + 1).to_be_bytes().to_vec(),
        name: "fill".into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        ..Default::default()
    };
    traces_request("filler-traces", vec![span]).encode_to_vec()
}

/// Traces of service `filler-traces` found by trace search.
async fn traces_found(c: &Collector) -> u64 {
    let (status, body) =
        get_json(&c.api_url("/api/v1/traces?service=filler-traces&from=1h&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    body["traces"].as_array().map_or(0, |t| t.len() as u64)
}

async fn total(c: &Collector) -> u64 {
    let (status, body) = get_json(&c.api_url("/api/v1/logs?q=diskfull&from=1h&limit=1")).await;
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap_or(0)
}

/// Wait until `c` finds `logs` logs and `traces` traces, `when` (for the messages).
async fn wait_all_found(c: &Collector, logs: u64, traces: u64, when: &str) {
    poll(
        Duration::from_secs(30),
        &format!("every acknowledged log {when}"),
        || async { (total(c).await == logs).then_some(()) },
    )
    .await;
    poll(
        Duration::from_secs(30),
        &format!("every acknowledged trace {when}"),
        || async { (traces_found(c).await == traces).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_retryably_resumes_and_loses_nothing_acknowledged() {
    const PER: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("disk");
    let _fs = Tmpfs::mount(&mnt, "48m");
    let data = mnt.join("data");
    let config = lookout_tests::write_config(
        dir.path(),
        "[wal]\nsegment_size = \"1MiB\"\nreserve = \"1MiB\"\n\
         [index]\ncommit_interval = \"500ms\"\n\
         [traces]\ncompletion_window = \"1s\"\n",
    );
    let cfg_arg = config.display().to_string();
    let c = Collector::start(&data, &["--config", &cfg_arg]);
    // Leave a few MiB free.
    let filler = mnt.join("filler");
    let free = fs_free(&mnt);
    std::fs::write(&filler, vec![0u8; (free - (6 << 20)) as usize]).expect("fill");

    let client = reqwest::Client::new();
    let send = |b: usize| {
        let client = client.clone();
        let url = c.http_url("/v1/logs");
        async move {
            post_protobuf(&client, &url, logs(b, PER))
                .await
                .expect("POST")
        }
    };
    // One trace per batch of logs, so trace summaries are being written when the disk
    // fills too; counts only those acknowledged.
    let mut traces_acked = 0u64;
    let send_trace = |b: usize| {
        let client = client.clone();
        let url = c.http_url("/v1/traces");
        async move {
            post_protobuf(&client, &url, trace(b))
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    let mut acked = 0u64;
    let mut batch = 0;
    let refused = loop {
        if send_trace(batch).await == 200 {
            traces_acked += 1;
        }
        let r = send(batch).await;
        batch += 1;
        match r.status().as_u16() {
            200 => acked += PER as u64,
            503 => break r,
            other => panic!("unexpected {other}: {}", r.text().await.unwrap_or_default()),
        }
        assert!(batch < 2000, "the disk never filled");
    };
    assert!(
        refused.headers().get("retry-after").is_some(),
        "a full disk is retryable"
    );
    let msg = refused.text().await.unwrap_or_default();
    // Refused before the write (the WAL keeps wal.reserve free), or by the write itself
    // if something else took the last of the space in between.
    assert!(
        msg.contains("below wal.reserve") || msg.contains("No space left on device"),
        "{msg}"
    );
    // Refusals continue while the disk is full; the collector stays up and answers.
    // The collector frees space by itself (WAL segments behind a checkpoint, merged
    // index files), so top the disk up right before asking.
    let topup = mnt.join("topup");
    fill_up(&topup);
    assert_eq!(send(batch).await.status(), 503);
    assert_eq!(get_json(&c.api_url("/healthz")).await.0, 200);
    // Keep the disk full across several index commits (every 500 ms): they fail too.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Free the space: within 30 s new batches are acknowledged again.
    std::fs::remove_file(&filler).expect("free");
    std::fs::remove_file(&topup).expect("free");
    let started = Instant::now();
    poll(Duration::from_secs(30), "ingest resumes", || {
        let b = batch;
        let send = &send;
        async move { (send(b).await.status() == 200).then_some(()) }
    })
    .await;
    acked += PER as u64;
    batch += 1;
    assert!(started.elapsed() < Duration::from_secs(30));
    for b in batch..batch + 5 {
        assert_eq!(send(b).await.status(), 200);
        acked += PER as u64;
        assert_eq!(send_trace(b).await, 200);
        traces_acked += 1;
    }

    // Everything acknowledged is searchable, now and after a restart.
    wait_all_found(&c, acked, traces_acked, "found").await;
    let metrics = c.metrics().await;
    let unavailable = metric_value(
        &metrics,
        "lookout_receiver_requests_total{outcome=\"unavailable\",signal=\"logs\",transport=\"http\"}",
    )
    .unwrap_or(0.0);
    assert!(unavailable >= 2.0, "refusals counted: {unavailable}");
    assert!(c.terminate().success());
    let c = Collector::start(&data, &["--config", &cfg_arg]);
    wait_all_found(&c, acked, traces_acked, "after the restart").await;
}

/// WAL segment files in `data`'s write-ahead log.
fn wal_files(data: &Path) -> usize {
    std::fs::read_dir(data.join("wal"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
                .count()
        })
        .unwrap_or(0)
}

/// Issue 19: under load, the WAL used to fill a small volume to the last byte; then no
/// index commit or span block could be written, so no WAL segment could be deleted, and
/// the collector refused every batch until someone freed space by hand (each refusal also
/// started a new WAL segment file). With `wal.reserve`, the WAL stops taking batches
/// while the disk has less than that free, the stores commit into that room, their
/// checkpoints let the WAL delete its segments, and writes resume by themselves: nothing
/// is freed from outside here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_the_wal_drains_and_recovers_by_itself() {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const PER: usize = 100;
    const SENDERS: usize = 4;
    /// One trace with every this many log batches.
    const TRACE_EVERY: usize = 8;
    /// Refused batches to see before the load stops: enough that a WAL segment per
    /// refusal would show.
    const REFUSALS: u64 = 200;
    /// Segments of 1 MiB on a 48 MiB disk: there is never room for more than this.
    const MAX_WAL_FILES: usize = 48 + 2;

    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("disk");
    let _fs = Tmpfs::mount(&mnt, "48m");
    let data = mnt.join("data");
    // Span blocks every 2 s (and traces complete after 1 s), so the traces checkpoint
    // moves often and the WAL is trimmed as the load goes, as in production but sooner.
    let config = lookout_tests::write_config(
        dir.path(),
        "[wal]\nsegment_size = \"1MiB\"\nreserve = \"8MiB\"\n\
         [index]\ncommit_interval = \"500ms\"\n\
         [spans]\nblock_interval = \"2s\"\n\
         [traces]\ncompletion_window = \"1s\"\n",
    );
    let cfg_arg = config.display().to_string();
    let c = Collector::start(&data, &["--config", &cfg_arg]);

    // Load from a few concurrent senders (log batches, and now and then a one-span trace)
    // until the collector has refused enough batches; count what it acknowledged.
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let traces_acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let refusal: Arc<Mutex<Option<(bool, String)>>> = Arc::default();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (client, next, acked, traces_acked, refused, stop, refusal) = (
                client.clone(),
                next.clone(),
                acked.clone(),
                traces_acked.clone(),
                refused.clone(),
                stop.clone(),
                refusal.clone(),
            );
            let (logs_url, traces_url) = (c.http_url("/v1/logs"), c.http_url("/v1/traces"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    // Fewer traces than log batches: trace search lists at most 1,000.
                    if b % TRACE_EVERY == 0 {
                        let r = post_protobuf(&client, &traces_url, trace(b))
                            .await
                            .expect("POST");
                        match r.status().as_u16() {
                            200 => {
                                traces_acked.fetch_add(1, Ordering::Relaxed);
                            }
                            503 => {}
                            other => {
                                panic!("unexpected {other}: {}", r.text().await.unwrap_or_default())
                            }
                        }
                    }
                    let r = post_protobuf(&client, &logs_url, logs(b, PER))
                        .await
                        .expect("POST");
                    match r.status().as_u16() {
                        200 => {
                            acked.fetch_add(PER as u64, Ordering::Relaxed);
                        }
                        503 => {
                            // Under load the index backlog may refuse first ("collector
                            // is overloaded"); what is waited for is the reserve.
                            let retry = r.headers().get("retry-after").is_some();
                            let msg = r.text().await.unwrap_or_default();
                            if msg.contains("wal.reserve") {
                                refused.fetch_add(1, Ordering::Relaxed);
                                refusal.lock().expect("lock").get_or_insert((retry, msg));
                            }
                        }
                        other => {
                            panic!("unexpected {other}: {}", r.text().await.unwrap_or_default())
                        }
                    }
                }
            })
        })
        .collect();
    poll(Duration::from_secs(120), "the disk to fill up", || {
        let refused = refused.clone();
        async move { (refused.load(Ordering::Relaxed) >= REFUSALS).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.expect("sender");
    }
    let (mut acked, mut traces_acked) = (
        acked.load(Ordering::Relaxed),
        traces_acked.load(Ordering::Relaxed),
    );
    let (retry, msg) = refusal.lock().expect("lock").take().expect("a refusal");
    assert!(retry, "a full disk is retryable: {msg}");
    assert!(msg.contains("wal.reserve"), "{msg}");
    let files = wal_files(&data);
    assert!(
        files <= MAX_WAL_FILES,
        "{files} WAL segment files after {REFUSALS} refusals: a refusal must not start a new segment"
    );

    // The load has stopped; nothing is freed from outside. Within a bounded time a new
    // batch is acknowledged again.
    let batch = next.load(Ordering::Relaxed);
    let send = |b: usize| {
        let client = client.clone();
        let url = c.http_url("/v1/logs");
        async move {
            post_protobuf(&client, &url, logs(b, PER))
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    let started = Instant::now();
    poll(
        Duration::from_secs(60),
        "ingest to resume by itself",
        || {
            let send = &send;
            async move { (send(batch).await == 200).then_some(()) }
        },
    )
    .await;
    let resumed_after = started.elapsed();
    acked += PER as u64;
    // A client retries a 503 (the reserve, or the index backlog of a loaded machine).
    for b in batch + 1..batch + 6 {
        poll(Duration::from_secs(30), "a batch after resuming", || {
            let send = &send;
            async move { (send(b).await == 200).then_some(()) }
        })
        .await;
        acked += PER as u64;
        poll(Duration::from_secs(30), "a trace after resuming", || {
            let (client, url) = (&client, c.http_url("/v1/traces"));
            async move {
                let r = post_protobuf(client, &url, trace(b)).await.expect("POST");
                (r.status() == 200).then_some(())
            }
        })
        .await;
        traces_acked += 1;
    }

    // Everything acknowledged is searchable; the refusals are counted and the free space
    // shown; the WAL is trimmed back to its open segment.
    wait_all_found(&c, acked, traces_acked, "found").await;
    let metrics = c.metrics().await;
    let refusals = metric_value(&metrics, "lookout_wal_reserve_refusals_total").unwrap_or(0.0);
    assert!(refusals >= 1.0, "refusals counted: {refusals}");
    let free = metric_value(&metrics, "lookout_wal_disk_free_bytes").unwrap_or(0.0);
    assert!(free >= (8 << 20) as f64, "free bytes shown: {free}");
    poll(Duration::from_secs(30), "the WAL to be trimmed", || {
        let data = &data;
        async move { (wal_files(data) <= 2).then_some(()) }
    })
    .await;
    // Warned when refusals start, not per refused batch.
    let log = c.output();
    let warnings = log.matches("less free space than wal.reserve").count();
    let resumed = log.matches("the data disk has room again").count();
    assert!(
        (1..=resumed + 1).contains(&warnings) && (warnings as f64) < refusals,
        "{warnings} warnings, {resumed} resumptions, {refusals} refusals"
    );
    let index_failures = metric_value(&metrics, "lookout_index_failures_total{signal=\"logs\"}")
        .unwrap_or(0.0)
        + metric_value(&metrics, "lookout_index_failures_total{signal=\"traces\"}").unwrap_or(0.0);
    eprintln!(
        "acknowledged {acked} logs and {traces_acked} traces; {refusals} refusals; resumed {resumed_after:?} after the load stopped; {index_failures} failed index writes"
    );

    // And after a restart.
    assert!(c.terminate().success());
    let c = Collector::start(&data, &["--config", &cfg_arg]);
    wait_all_found(&c, acked, traces_acked, "after the restart").await;
    assert_eq!(
        send_to(&c, batch + 6).await,
        200,
        "a batch after the restart"
    );
}

/// POST the log batch `b` to `c`: the status.
async fn send_to(c: &Collector, b: usize) -> u16 {
    post_protobuf(
        &reqwest::Client::new(),
        &c.http_url("/v1/logs"),
        logs(b, 100),
    )
    .await
    .expect("POST")
    .status()
    .as_u16()
}

/// Append to `path` until the file system is full (to within a page).
fn fill_up(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open top-up file");
    for chunk in [1 << 20, 64 << 10, 4 << 10] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).is_ok() {}
    }
}

fn fs_free(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}
