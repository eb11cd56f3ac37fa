//! Tailer tests on real files in a temporary directory, with a recording sink.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use lookout_proto::attr;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::common::v1::any_value;
use lookout_proto::otlp::logs::v1::LogRecord;
use parking_lot::Mutex;
use prost::Message;
use tokio_util::sync::CancellationToken;

use super::*;

/// Records every stored entry; refuses the next `fail` appends.
#[derive(Default)]
struct TestSink {
    entries: Mutex<Vec<Entry>>,
    fail: AtomicU32,
}

impl Sink for TestSink {
    fn append(&self, entry: Entry) -> BoxFuture<'static, Result<(), SinkError>> {
        let res = if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Err(SinkError::Unavailable("test says no".into()))
        } else {
            self.entries.lock().push(entry);
            Ok(())
        };
        futures::future::ready(res).boxed()
    }
}

impl TestSink {
    fn records(&self) -> Vec<(ResourceLogs, LogRecord)> {
        let mut out = Vec::new();
        for e in self.entries.lock().iter() {
            assert_eq!(e.signal, Signal::Logs);
            let req = ExportLogsServiceRequest::decode(e.payload.clone()).unwrap();
            let mut n = 0;
            for rl in req.resource_logs {
                for sl in &rl.scope_logs {
                    assert_eq!(sl.scope.as_ref().unwrap().name, SCOPE_NAME);
                    for r in &sl.log_records {
                        n += 1;
                        out.push((rl.clone(), r.clone()));
                    }
                }
            }
            assert_eq!(e.items, n);
        }
        out
    }

    fn bodies(&self) -> Vec<String> {
        self.records().iter().map(|(_, r)| body(r)).collect()
    }

    fn last_position(&self) -> FilePosition {
        *self
            .entries
            .lock()
            .last()
            .unwrap()
            .positions
            .last()
            .unwrap()
    }
}

fn body(r: &LogRecord) -> String {
    match r.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("not a string body: {other:?}"),
    }
}

/// The string value of attribute `key`, if there is one.
fn str_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

struct Harness {
    max_batch: usize,
    dir: tempfile::TempDir,
    sink: Arc<TestSink>,
    registry: prometheus::Registry,
    metrics: TailMetrics,
}

struct Running {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .unwrap()
            .unwrap();
    }
}

impl Harness {
    fn new() -> Self {
        let registry = prometheus::Registry::new();
        let metrics = TailMetrics::new(&registry).unwrap();
        Self {
            max_batch: 1000,
            dir: tempfile::tempdir().unwrap(),
            sink: Arc::new(TestSink::default()),
            registry,
            metrics,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn entry(&self, glob: &str) -> TailConfig {
        TailConfig {
            paths: vec![self.path(glob).to_string_lossy().into_owned()],
            start_at: "beginning".into(),
            poll_interval: lookout_config::HumanDuration::from_millis(20),
            ..TailConfig::default()
        }
    }

    fn start_with(&self, entries: Vec<TailConfig>, recovered: HashMap<u64, u64>) -> Running {
        let token = CancellationToken::new();
        let setup = TailerSetup {
            entries,
            state_dir: self.path("state"),
            base_resource: vec![attr::string("host.name", "box")],
            recovered,
            sink: self.sink.clone(),
            metrics: self.metrics.clone(),
            max_batch_records: self.max_batch,
            batch_timeout: Duration::from_millis(20),
        };
        let retry = Retry {
            first: Duration::from_millis(20),
            max: Duration::from_millis(50),
        };
        let handle = spawn_with(setup, token.clone(), retry).unwrap();
        Running { token, handle }
    }

    fn start(&self, entry: TailConfig) -> Running {
        self.start_with(vec![entry], HashMap::new())
    }

    /// Tails `entry` until the sink holds exactly `want`, then stops.
    async fn tail_until(&self, entry: TailConfig, want: &[&str]) {
        let run = self.start(entry);
        wait_bodies(&self.sink, want).await;
        run.stop().await;
    }

    /// `lookout_agent_tail_errors_total` of `kind`.
    fn errors(&self, kind: &str) -> u64 {
        self.counter("lookout_agent_tail_errors_total", &[("kind", kind)])
    }

    /// `lookout_agent_tail_rotations_total` of `kind`.
    fn rotations(&self, kind: &str) -> u64 {
        self.counter("lookout_agent_tail_rotations_total", &[("kind", kind)])
    }

    /// Files tailed now, over all entries.
    fn files_watched(&self) -> u64 {
        self.counter("lookout_agent_tail_files_watched", &[])
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut total = 0.0;
        for mf in self.registry.gather() {
            if mf.name() != name {
                continue;
            }
            for m in mf.get_metric() {
                let ok = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if ok {
                    total += if mf.get_field_type() == prometheus::proto::MetricType::COUNTER {
                        m.get_counter().value()
                    } else {
                        m.get_gauge().value()
                    };
                }
            }
        }
        total as u64
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Wait (up to 3 s) until `f` holds.
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_bodies(sink: &TestSink, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = sink.bodies();
        if got.len() >= want.len() {
            assert_eq!(got, want);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nothing more arrives for a few polls.
async fn settle(sink: &TestSink, want: usize) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sink.bodies().len(), want, "{:?}", sink.bodies());
}

#[tokio::test]
async fn lines_arrive_in_order_with_crlf_and_resource() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "one\r\ntwo\n\n");
    let mut e = h.entry("*.log");
    e.service = "shop".into();
    e.attributes.insert("team".into(), "pay".into());
    let run = h.start(e);
    wait_bodies(&h.sink, &["one", "two"]).await;
    append(&log, "three\nfour");
    wait_bodies(&h.sink, &["one", "two", "three"]).await;
    append(&log, "\n");
    wait_bodies(&h.sink, &["one", "two", "three", "four"]).await;
    run.stop().await;

    let recs = h.sink.records();
    let (res, rec) = &recs[0];
    let res = res.resource.as_ref().unwrap();
    assert_eq!(
        str_attr(&res.attributes, "service.name").as_deref(),
        Some("shop")
    );
    assert_eq!(str_attr(&res.attributes, "team").as_deref(), Some("pay"));
    assert_eq!(
        str_attr(&res.attributes, "host.name").as_deref(),
        Some("box")
    );
    assert_eq!(
        str_attr(&rec.attributes, "log.file.path"),
        Some(log.to_string_lossy().into_owned())
    );
    assert_eq!(
        str_attr(&rec.attributes, "log.file.name").as_deref(),
        Some("app.log")
    );
    assert!(rec.observed_time_unix_nano > 0);
    assert_eq!(rec.time_unix_nano, 0);
    let len = std::fs::metadata(&log).unwrap().len();
    assert_eq!(h.sink.last_position().offset, len);
    assert_eq!(
        h.counter("lookout_agent_tail_records_total", &[("tail", "0")]),
        4
    );
    assert_eq!(h.counter("lookout_agent_tail_lines_read_total", &[]), 5);
    let cp = std::fs::read_to_string(h.path("state").join(CHECKPOINT_FILE_NAME)).unwrap();
    assert!(cp.contains(&format!("\"offset\": {len}")), "{cp}");
}

#[tokio::test]
async fn start_at_end_skips_old_lines_but_not_new_files() {
    let h = Harness::new();
    append(&h.path("a.log"), "old1\nold2\npart");
    let mut e = h.entry("*.log");
    e.start_at = "end".into();
    let run = h.start(e);
    tokio::time::sleep(Duration::from_millis(60)).await;
    append(&h.path("a.log"), "ial\nnew\n");
    wait_bodies(&h.sink, &["partial", "new"]).await;
    // A file that appears after the start is read from its beginning.
    append(&h.path("b.log"), "b1\nb2\n");
    wait_bodies(&h.sink, &["partial", "new", "b1", "b2"]).await;
    run.stop().await;

    let h = Harness::new();
    append(&h.path("a.log"), "old1\nold2\n");
    h.tail_until(h.entry("*.log"), &["old1", "old2"]).await;
}

#[tokio::test]
async fn restart_neither_loses_nor_repeats() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "line-0\n");
    let writer = {
        let log = log.clone();
        tokio::task::spawn_blocking(move || {
            for i in 1..600 {
                append(&log, &format!("line-{i}\n"));
                if i % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let run = h.start(h.entry("app.log"));
    tokio::time::sleep(Duration::from_millis(40)).await;
    run.stop().await;
    let first = h.sink.bodies().len();
    // start_at = "end" must not matter: the checkpoint says where to resume.
    let mut e = h.entry("app.log");
    e.start_at = "end".into();
    let run = h.start(e);
    writer.await.unwrap();
    let want: Vec<String> = (0..600).map(|i| format!("line-{i}")).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    wait_bodies(&h.sink, &want).await;
    run.stop().await;
    assert!(first > 0 && first < 600, "stopped mid-file: {first}");
    settle(&h.sink, 600).await;
}

#[tokio::test]
async fn recovered_offset_ahead_of_checkpoint_wins() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "a\nb\n");
    h.tail_until(h.entry("app.log"), &["a", "b"]).await;
    let pos = h.sink.last_position();
    assert_eq!(pos.offset, 4);
    // As if "c" was stored in the buffer but the agent died before the checkpoint.
    append(&log, "c\nd\n");
    let recovered = HashMap::from([(pos.file_id, 6)]);
    let run = h.start_with(vec![h.entry("app.log")], recovered);
    wait_bodies(&h.sink, &["a", "b", "d"]).await;
    run.stop().await;
    assert_eq!(
        h.sink.last_position(),
        FilePosition {
            file_id: pos.file_id,
            offset: 8
        }
    );
}

#[tokio::test]
async fn rotation_by_rename_during_writes_is_exactly_once() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "r-0\n");
    let run = h.start(h.entry("app.log"));
    let writer = {
        let log = log.clone();
        let dir = h.dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            for i in 1..300 {
                if i % 100 == 0 {
                    std::fs::rename(&log, dir.join(format!("app.log.{i}"))).unwrap();
                }
                append(&log, &format!("r-{i}\n"));
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    writer.await.unwrap();
    wait_until("300 records", || h.sink.bodies().len() >= 300).await;
    settle(&h.sink, 300).await;
    let mut got = h.sink.bodies();
    got.sort_by_key(|b| b[2..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..300).map(|i| format!("r-{i}")).collect();
    assert_eq!(got, want);
    wait_until("old files released", || h.rotations("rename") == 2).await;
    assert_eq!(h.files_watched(), 1);
    run.stop().await;
}

#[tokio::test]
async fn rotation_by_truncate_restarts_at_zero() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "line-one\nline-two\nline-three\n");
    let run = h.start(h.entry("app.log"));
    wait_bodies(&h.sink, &["line-one", "line-two", "line-three"]).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    append(&log, "x\ny\n");
    wait_bodies(&h.sink, &["line-one", "line-two", "line-three", "x", "y"]).await;
    assert_eq!(h.rotations("truncate"), 1);
    run.stop().await;
    assert_eq!(h.sink.last_position().offset, 4);
}

const TRACE: &str = "2024-05-01 10:00:00 ERROR request failed
java.lang.IllegalStateException: boom
\tat com.shop.Cart.add(Cart.java:42)
\tat com.shop.Api.post(Api.java:7)
Caused by: java.io.IOException: disk
\t... 2 more
2024-05-01 10:00:01 INFO next request
";

#[tokio::test]
async fn multiline_stack_trace_is_one_record_and_times_out() {
    let h = Harness::new();
    let log = h.path("app.log");
    let mut e = h.entry("app.log");
    e.multiline.start_pattern = r"^\d{4}-\d{2}-\d{2}".into();
    e.multiline.timeout = lookout_config::HumanDuration::from_millis(150);
    let run = h.start(e);
    let t0 = Instant::now();
    append(&log, TRACE);
    let first = TRACE.lines().take(6).collect::<Vec<_>>().join("\n");
    wait_bodies(&h.sink, &[&first]).await;
    // The last record is shipped once no line followed it for the timeout.
    wait_bodies(&h.sink, &[&first, "2024-05-01 10:00:01 INFO next request"]).await;
    assert!(t0.elapsed() >= Duration::from_millis(150));
    run.stop().await;
    assert_eq!(h.sink.last_position().offset, TRACE.len() as u64);
}

#[tokio::test]
async fn shutdown_ships_pending_multiline_record() {
    let h = Harness::new();
    let log = h.path("app.log");
    let mut e = h.entry("app.log");
    e.multiline.start_pattern = r"^\d{4}-".into();
    e.multiline.timeout = lookout_config::HumanDuration::from_secs(60);
    append(&log, "2024-01-01 a\n  b\n");
    let run = h.start(e);
    wait_until("line read", || {
        h.counter("lookout_agent_tail_lines_read_total", &[]) == 2
    })
    .await;
    assert!(h.sink.bodies().is_empty());
    run.stop().await;
    assert_eq!(h.sink.bodies(), ["2024-01-01 a\n  b"]);
}

#[tokio::test]
async fn json_lines_become_structured_records() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(
        &log,
        concat!(
            r#"{"@timestamp":"2024-05-01T10:00:00Z","level":"error","message":"payment failed","traceId":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","user":{"id":7,"vip":true}}"#,
            "\n",
            "not json at all\n",
        ),
    );
    let mut e = h.entry("app.log");
    e.format = "json".into();
    h.tail_until(e, &["payment failed", "not json at all"])
        .await;
    let recs = h.sink.records();
    let r = &recs[0].1;
    assert_eq!(r.severity_text, "error");
    assert_eq!(r.severity_number, 17);
    assert_eq!(r.time_unix_nano, 1_714_557_600_000_000_000);
    assert_eq!(r.trace_id.len(), 16);
    assert_eq!(r.span_id.len(), 8);
    let int = |k: &str| {
        r.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(int("user.id"), Some(any_value::Value::IntValue(7)));
    assert_eq!(int("user.vip"), Some(any_value::Value::BoolValue(true)));
    assert!(int("log.file.path").is_some());
    assert_eq!(recs[1].1.severity_number, 0);
    assert_eq!(h.counter("lookout_agent_tail_non_json_lines_total", &[]), 1);
}

#[tokio::test]
async fn ten_megabyte_line_is_truncated() {
    let h = Harness::new();
    let log = h.path("app.log");
    {
        let mut f = std::fs::File::create(&log).unwrap();
        f.write_all(b"first\n").unwrap();
        f.write_all(&vec![b'x'; 10 << 20]).unwrap();
        f.write_all(b"\nnext\n").unwrap();
    }
    let mut e = h.entry("app.log");
    e.max_line_length = lookout_config::ByteSize::kib(1);
    let run = h.start(e);
    let long = "x".repeat(1024);
    wait_bodies(&h.sink, &["first", &long, "next"]).await;
    run.stop().await;
    assert_eq!(
        h.counter("lookout_agent_tail_truncated_records_total", &[]),
        1
    );
    assert_eq!(
        h.counter("lookout_agent_tail_bytes_read_total", &[]),
        (10 << 20) + 12
    );
}

#[tokio::test]
async fn failing_sink_loses_and_repeats_nothing() {
    let h = Harness::new();
    let log = h.path("app.log");
    h.sink.fail.store(2, Ordering::SeqCst);
    append(&log, "a\nb\nc\n");
    let run = h.start(h.entry("app.log"));
    wait_bodies(&h.sink, &["a", "b", "c"]).await;
    append(&log, "d\n");
    wait_bodies(&h.sink, &["a", "b", "c", "d"]).await;
    run.stop().await;
    settle(&h.sink, 4).await;
    assert_eq!(h.errors("sink"), 2);
}

#[tokio::test]
async fn refused_at_shutdown_is_read_again_after_restart() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "a\n");
    let run = h.start(h.entry("app.log"));
    wait_bodies(&h.sink, &["a"]).await;
    h.sink.fail.store(u32::MAX, Ordering::SeqCst);
    append(&log, "b\n");
    wait_until("refusal", || h.errors("sink") > 0).await;
    run.stop().await;
    h.sink.fail.store(0, Ordering::SeqCst);
    h.tail_until(h.entry("app.log"), &["a", "b"]).await;
}

#[tokio::test]
async fn file_deleted_while_tailed_is_read_to_its_end() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "d1\n");
    let run = h.start(h.entry("app.log"));
    wait_bodies(&h.sink, &["d1"]).await;
    append(&log, "d2\nd3");
    std::fs::remove_file(&log).unwrap();
    wait_bodies(&h.sink, &["d1", "d2", "d3"]).await;
    wait_until("released", || h.files_watched() == 0).await;
    assert_eq!(h.rotations("delete"), 1);
    run.stop().await;
}

#[tokio::test]
async fn binary_and_unreadable_files_are_skipped() {
    let h = Harness::new();
    std::fs::write(
        h.path("blob.log"),
        b"\x7fELF\x02\x01\x01\x00\x00\x00\nmore\n",
    )
    .unwrap();
    append(&h.path("ok.log"), "fine\n");
    let secret = h.path("secret.log");
    append(&secret, "hidden\n");
    let root = unsafe { libc::geteuid() } == 0;
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let run = h.start(h.entry("*.log"));
    if root {
        // Root reads anything: the permission case cannot be exercised.
        wait_until("both text files", || h.sink.bodies().len() == 2).await;
    } else {
        wait_bodies(&h.sink, &["fine"]).await;
        wait_until("permission error", || h.errors("permission") == 1).await;
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        wait_bodies(&h.sink, &["fine", "hidden"]).await;
    }
    settle(&h.sink, 2).await;
    assert_eq!(h.errors("binary"), 1);
    assert_eq!(h.files_watched(), 2);
    run.stop().await;
}

#[tokio::test]
async fn exclude_and_several_entries() {
    let h = Harness::new();
    append(&h.path("a.log"), "a\n");
    append(&h.path("a.log.gz"), "gz\n");
    append(&h.path("b.txt"), "b\n");
    let mut e0 = h.entry("a.log*");
    e0.exclude = vec!["*.gz".into()];
    let mut e1 = h.entry("*.txt");
    e1.service = "other".into();
    let run = h.start_with(vec![e0, e1], HashMap::new());
    wait_until("two records", || h.sink.bodies().len() == 2).await;
    settle(&h.sink, 2).await;
    run.stop().await;
    let recs = h.sink.records();
    let svc = |b: &str| {
        let (rl, _) = recs.iter().find(|(_, r)| body(r) == b).unwrap();
        str_attr(&rl.resource.as_ref().unwrap().attributes, "service.name")
    };
    assert_eq!(svc("a"), None);
    assert_eq!(svc("b").as_deref(), Some("other"));
}

#[tokio::test]
async fn invalid_entry_is_refused_with_its_key() {
    let h = Harness::new();
    let mut e = h.entry("app.log");
    e.multiline.start_pattern = "(".into();
    let setup = TailerSetup {
        entries: vec![h.entry("x.log"), e],
        state_dir: h.path("state"),
        base_resource: Vec::new(),
        recovered: HashMap::new(),
        sink: h.sink.clone(),
        metrics: h.metrics.clone(),
        max_batch_records: 10,
        batch_timeout: Duration::from_millis(10),
    };
    let err = spawn(setup, CancellationToken::new())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("tail[1].multiline.start_pattern:"), "{err}");
}

#[tokio::test]
async fn identity_survives_growth_and_distinguishes_new_files() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "short\n");
    h.tail_until(h.entry("app.log"), &["short"]).await;
    let id = h.sink.last_position().file_id;
    // The file grows past the fingerprint length while the agent is stopped.
    let more: Vec<String> = (0..100)
        .map(|i| format!("grown line number {i:04}"))
        .collect();
    append(&log, &(more.join("\n") + "\n"));
    let run = h.start(h.entry("app.log"));
    wait_until("grown lines", || h.sink.bodies().len() == 101).await;
    run.stop().await;
    assert_eq!(h.sink.last_position().file_id, id);
    // A different file at the same path is a new file.
    std::fs::remove_file(&log).unwrap();
    append(&log, "brand new\n");
    let run = h.start(h.entry("app.log"));
    wait_until("new file", || h.sink.bodies().len() == 102).await;
    run.stop().await;
    assert_eq!(h.sink.bodies()[101], "brand new");
    assert_ne!(h.sink.last_position().file_id, id);
}

#[tokio::test]
async fn file_rewritten_while_stopped_is_read_from_the_start() {
    let h = Harness::new();
    let log = h.path("app.log");
    append(&log, "old-1\nold-2\n");
    h.tail_until(h.entry("app.log"), &["old-1", "old-2"]).await;
    // copytruncate while stopped, then more lines than before: same inode, new content.
    std::fs::write(&log, "new-1\nnew-2\nnew-3\n").unwrap();
    let mut e = h.entry("app.log");
    e.start_at = "end".into();
    h.tail_until(e, &["old-1", "old-2", "new-1", "new-2", "new-3"])
        .await;
}

#[tokio::test]
async fn batches_respect_max_records() {
    let mut h = Harness::new();
    h.max_batch = 3;
    let log = h.path("app.log");
    let lines: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
    append(&log, &(lines.join("\n") + "\n"));
    let run = h.start(h.entry("app.log"));
    let want: Vec<&str> = lines.iter().map(String::as_str).collect();
    wait_bodies(&h.sink, &want).await;
    run.stop().await;
    let entries = h.sink.entries.lock();
    assert!(entries.iter().all(|e| e.items <= 3));
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0].positions[0].offset, 9);
}

#[tokio::test]
async fn corrupt_checkpoint_file_is_set_aside() {
    let h = Harness::new();
    std::fs::create_dir_all(h.path("state")).unwrap();
    std::fs::write(h.path("state").join(CHECKPOINT_FILE_NAME), "{not json").unwrap();
    append(&h.path("app.log"), "a\n");
    h.tail_until(h.entry("app.log"), &["a"]).await;
    assert!(h.path("state").join("tail-checkpoints.json.bad").exists());
    assert_eq!(h.errors("checkpoint"), 1);
    let cp = std::fs::read_to_string(h.path("state").join(CHECKPOINT_FILE_NAME)).unwrap();
    assert!(cp.contains("\"version\": 1"), "{cp}");
}

/// The tailer writes only its checkpoint file, in the state directory, `0640` in a `0750`
/// directory — whatever the globs (`..` in them), the file names (`..x`, a newline) and
/// the service name (`../../escape`) look like: none of them becomes a path it writes.
#[tokio::test]
async fn state_stays_in_the_state_dir_with_restrictive_modes() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new();
    std::fs::create_dir(h.path("logs")).unwrap();
    append(&h.path("logs/..odd.log"), "a\n");
    append(&h.path("logs/new\nline.log"), "b\n");
    let mut e = h.entry("logs/../logs/*.log");
    e.service = "../../escape".into();
    let run = h.start(e);
    wait_until("both lines", || h.sink.bodies().len() == 2).await;
    run.stop().await;
    let mut top: Vec<String> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["logs", "state"]);
    let state: Vec<PathBuf> = std::fs::read_dir(h.path("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(state, [h.path("state").join(CHECKPOINT_FILE_NAME)]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.path("state")) & !0o750, 0);
    assert_eq!(mode(&state[0]) & !0o640, 0);
    assert_eq!(std::fs::read_dir(h.path("logs")).unwrap().count(), 2);
}
