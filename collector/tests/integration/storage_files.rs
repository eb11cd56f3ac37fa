//! What the collector leaves on disk: every directory `0750` and every file at most `0640`
//! (ours exactly `0640`), quarantined records under `DATA_DIR/quarantine/`, and nothing
//! outside the data directory or named after request data (service names, alert rule and
//! receiver names).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lookout_collector::store::partition::{PartitionMeta, PartitionedIndex};
use lookout_ingest::fsutil;
use lookout_ingest::signal::Signal;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::logs::v1::{ResourceLogs, ScopeLogs};
use lookout_proto::otlp::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use lookout_tests::files::{mode, walk};
use lookout_tests::otlp::{log_record, now_ns, resource};
use lookout_tests::Collector;
use prost::Message;

/// Service names that would leave the data directory if they ever became paths.
fn hostile_services() -> Vec<String> {
    vec![
        "../../escape-svc".into(),
        "/tmp/escape-abs".into(),
        "escape\0nul".into(),
        "..".into(),
        format!("escape-long-{}", "x".repeat(5000)),
    ]
}

fn logs_request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: hostile_services()
            .iter()
            .map(|s| ResourceLogs {
                resource: resource(s),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![log_record("hello", now_ns())],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn traces_request() -> ExportTraceServiceRequest {
    let now = now_ns();
    ExportTraceServiceRequest {
        resource_spans: hostile_services()
            .iter()
            .enumerate()
            .map(|(i, s)| ResourceSpans {
                resource: resource(s),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![i as u8 + 1; 16],
                        span_id: vec![i as u8 + 1; 8],
                        name: "../../escape-op".into(),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: now - 5_000_000,
                        end_time_unix_nano: now,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// A WAL segment holding one logs record (LSN 1) whose payload prost cannot decode.
fn poison_segment(wal: &Path) {
    let payload = [0xffu8; 8];
    let lsn = 1u64;
    let tag = Signal::Logs.tag();
    let mut h = crc32fast::Hasher::new();
    h.update(&lsn.to_le_bytes());
    h.update(&[tag]);
    h.update(&payload);
    let mut rec = Vec::new();
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.extend_from_slice(&h.finalize().to_le_bytes());
    rec.extend_from_slice(&lsn.to_le_bytes());
    rec.push(tag);
    rec.extend_from_slice(&payload);
    fsutil::create_dir_all(wal).unwrap();
    let path = wal.join(format!("{:020}.wal", 1));
    let mut f = fsutil::create_file(&path).unwrap();
    std::io::Write::write_all(&mut f, &rec).unwrap();
}

/// The real binary (which sets umask 027 at start-up) with a poison record in its WAL, an
/// alert rule and a receiver with path-like names, and logs and spans of services named
/// `../../…`, `/tmp/…`, with NUL bytes or 5000 bytes long. Afterwards every directory in
/// the data directory is `0750`, every file we write `0640` and tantivy's at most `0640`;
/// the poison record is in `quarantine/`; and nothing was created outside the data
/// directory or named after any of those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_modes_quarantine_and_no_path_from_request_data() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    poison_segment(&data.join("wal"));
    let config = root.path().join("collector.toml");
    std::fs::write(
        &config,
        r#"
[alerting]
evaluation_interval = "200ms"

[[alerts]]
name = ".."
signal = "request_rate"
op = ">="
threshold = 0
window = "1m"
for = "0s"
receivers = ["../../escape-recv"]

[receivers."../../escape-recv"]
url = "http://127.0.0.1:9/hook"
"#,
    )
    .unwrap();
    let c = Collector::start(&data, &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/v1/logs", logs_request().encode_to_vec()),
        ("/v1/traces", traces_request().encode_to_vec()),
    ] {
        let resp = lookout_tests::post_protobuf(&client, &c.http_url(path), body)
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
    }
    // The alert instances of the hostile services are saved in alerts/state.json.
    let state = data.join("alerts").join("state.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("escape-svc")) {
        assert!(Instant::now() < deadline, "no alert state written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A clean stop commits the indexes.
    let stopped = c.stop_within(Duration::from_secs(60)).await;
    let output = stopped.output;
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "{:?}\n{output}",
        stopped.status
    );

    // The poison record was set aside under its WAL position.
    let q = data.join("quarantine");
    let quarantined: Vec<PathBuf> = walk(&q);
    assert_eq!(quarantined.len(), 1, "{quarantined:?}\n{output}");
    assert_eq!(
        quarantined[0].file_name().unwrap(),
        "00000000000000000001-0000000000-lsn00000000000000000001.logs"
    );
    assert_eq!(std::fs::read(&quarantined[0]).unwrap(), [0xff; 8]);
    assert!(output.contains("quarantine"), "{output}");

    // Nothing outside the data directory.
    let top: Vec<PathBuf> = walk(root.path())
        .into_iter()
        .filter(|p| !p.starts_with(&data))
        .collect();
    assert_eq!(top, [config], "created outside the data directory");
    let mut tantivy_files = 0;
    let mut ours = 0;
    let mut seen = vec![(data.clone(), mode(&data))];
    for p in walk(&data) {
        seen.push((p.clone(), mode(&p)));
    }
    for (p, m) in &seen {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(!name.contains("escape") && name != "..", "{}", p.display());
        let rel = p.strip_prefix(&data).unwrap();
        if p.is_dir() {
            assert_eq!(*m, 0o750, "{}: {m:o}", p.display());
            continue;
        }
        // Files under a partition directory (logs/<start>/...) are tantivy's own.
        let in_partition = rel.components().count() == 3
            && ["logs", "spans", "traces"]
                .iter()
                .any(|d| rel.starts_with(d));
        if in_partition {
            tantivy_files += 1;
            assert_eq!(m & !0o640, 0, "{}: {m:o}", p.display());
        } else {
            ours += 1;
            assert_eq!(*m, 0o640, "{}: {m:o}", p.display());
        }
    }
    assert!(tantivy_files > 0 && ours >= 3, "{seen:#?}");
    let modes: Vec<String> = seen
        .iter()
        .map(|(p, m)| format!("{m:o} {}", p.strip_prefix(root.path()).unwrap().display()))
        .collect();
    println!("{}", modes.join("\n"));
}

/// Under the usual umask 022 and without our start-up umask, tantivy creates its index
/// files as 0644 (and the ones it writes through a temporary file as 0600): readable by
/// everyone, which is why both binaries set umask 027. Our own directories are 0750 either
/// way.
#[test]
fn tantivy_files_follow_the_umask() {
    let previous = fsutil::set_umask(0o022);
    let dir = tempfile::tempdir().unwrap();
    let mut b = tantivy::schema::Schema::builder();
    let ts = b.add_u64_field("ts", tantivy::schema::INDEXED | tantivy::schema::STORED);
    let idx =
        PartitionedIndex::open(&dir.path().join("logs"), Signal::Logs, b.build(), 3600).unwrap();
    let (part, mut w) = idx.writer(0, 15_000_000, 1).unwrap();
    let mut doc = tantivy::TantivyDocument::default();
    doc.add_u64(ts, 1);
    w.add_document(doc).unwrap();
    idx.commit(
        &part,
        &mut w,
        PartitionMeta {
            lsn: 1,
            min_ts: 1,
            max_ts: 1,
        },
    )
    .unwrap();
    fsutil::set_umask(previous);
    assert_eq!(mode(&dir.path().join("logs")), 0o750);
    assert_eq!(mode(&dir.path().join("logs/0")), 0o750);
    let files: Vec<(String, u32)> = walk(&dir.path().join("logs/0"))
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                mode(p),
            )
        })
        .collect();
    println!("{files:#?}");
    assert!(!files.is_empty());
    for (name, m) in &files {
        assert_eq!(m & !0o644, 0, "{name}: {m:o}");
    }
}
