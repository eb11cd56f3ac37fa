//! A data directory written before the span store (spans in tantivy partitions under
//! `spans/`, trace summaries under `traces/`) keeps answering after the upgrade: every old
//! trace is found whole and by search, new spans and summaries go to the block stores
//! beside them, and retention removes old partitions as before.

use std::path::Path;
use std::time::Duration;

use lookout_collector::store::indexer::DocMapper;
use lookout_collector::store::legacy::{LegacySpanStore, LegacyTraceStore};
use lookout_collector::store::partition::{PartitionMeta, TantivyWriter, WriterOptions};
use lookout_collector::store::traces::{Summary, TraceState};
use lookout_ingest::Batch;
use lookout_tests::otlp::{three_span_trace, writer_trace_id};
use lookout_tests::{get_json, metric_value, poll, Collector};
use prost::Message;

const SERVICE: &str = "upgraded";

/// Write `traces` three-span traces (writer `tag`) into partition `key` as releases before
/// the span store did; returns their ids.
fn write_legacy(data: &Path, key: i64, tag: u8, traces: usize) -> Vec<String> {
    let store =
        LegacySpanStore::open(&data.join("spans"), 3600, WriterOptions::default()).expect("open");
    let index = store.index();
    let (part, writer) = index.writer(key, 15 << 20, 1).expect("writer");
    let meta = PartitionMeta {
        lsn: 0,
        min_ts: u64::MAX,
        max_ts: 0,
    };
    let mut w = TantivyWriter { part, writer, meta };
    let mut mapper = store.mapper();
    let mut ids = Vec::new();
    for seq in 0..traces {
        let id = writer_trace_id(tag, 0, seq);
        let req = three_span_trace(SERVICE, id);
        mapper
            .add(&Batch::Traces(req), &mut w)
            .expect("add legacy spans");
        ids.push(hex::encode(id));
    }
    index
        .commit(&w.part, &mut w.writer, w.meta)
        .expect("commit legacy partition");
    ids
}

/// Write a summary of each trace in `ids` into partition `key` as releases before the
/// span store did.
fn write_legacy_summaries(data: &Path, key: i64, ids: &[String]) {
    let store =
        LegacyTraceStore::open(&data.join("traces"), 3600, WriterOptions::default()).expect("open");
    let index = store.index();
    let (part, writer) = index.writer(key, 15 << 20, 1).expect("writer");
    let mut w = TantivyWriter {
        part,
        writer,
        meta: PartitionMeta {
            lsn: 0,
            min_ts: u64::MAX,
            max_ts: 0,
        },
    };
    let start = u64::try_from(key).expect("key") * 1_000_000_000 + 1_000;
    for (i, id) in ids.iter().enumerate() {
        let trace_id: [u8; 16] = hex::decode(id).expect("hex").try_into().expect("16 bytes");
        let doc = Summary {
            trace_id,
            version: 1,
            state: TraceState::Complete,
            start: start + i as u64,
            end: start + i as u64 + 1000,
            span_count: 3,
            error_count: 0,
            late_spans: 0,
            root_service: SERVICE.into(),
            root_operation: "op1".into(),
            services: vec![SERVICE.into()],
            ops: vec![(SERVICE.into(), "op1".into())],
            attrs: Vec::new(),
            max_lsn: 0,
        };
        store.add(&mut w, &doc).expect("add legacy summary");
    }
    index
        .commit(&w.part, &mut w.writer, w.meta)
        .expect("commit legacy summaries");
}

async fn span_count(c: &Collector, id: &str) -> (u16, usize) {
    let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
    (s, b["spans"].as_array().map_or(0, Vec::len))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_written_before_the_span_store_are_found_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let this_hour = now / 3600 * 3600;
    let old = write_legacy(&data, this_hour, 0xa1, 40);
    write_legacy_summaries(&data, this_hour, &old);
    // A partition past the default retention (7 days).
    let expired_key = this_hour - 8 * 86400;
    let expired = write_legacy(&data, expired_key, 0xa2, 3);

    let c = Collector::start(&data, &[]);
    for id in &old {
        assert_eq!(span_count(&c, id).await, (200, 3), "old trace {id}");
    }
    let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces?service={SERVICE}&limit=100"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["traces"].as_array().map(Vec::len), Some(40), "{b}");
    let (_, b) = get_json(&c.api_url("/jaeger/api/services")).await;
    assert_eq!(b["data"], serde_json::json!([SERVICE]), "{b}");
    // Retention ran at start-up and removed the expired partition.
    assert_eq!(span_count(&c, &expired[0]).await.0, 404);
    assert!(!data.join("spans").join(expired_key.to_string()).exists());

    // New spans go to the span store; old and new are found after a restart.
    let new = writer_trace_id(0xa3, 0, 0);
    c.post_ok("/v1/traces", three_span_trace(SERVICE, new).encode_to_vec())
        .await;
    let new = hex::encode(new);
    poll(Duration::from_secs(30), "the new trace", || async {
        (span_count(&c, &new).await == (200, 3)).then_some(())
    })
    .await;
    // The SIGTERM below cuts the head into the first block.
    let m = c.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_spanstore_blocks_written_total{kind=\"spans\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(c.terminate().success());
    let c = Collector::start(&data, &[]);
    let m = c.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_spanstore_blocks{kind=\"spans\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "lookout_spanstore_unreadable_blocks{kind=\"spans\"}"),
        Some(0.0),
        "{m}"
    );
    for id in old.iter().chain([&new]) {
        assert_eq!(
            span_count(&c, id).await,
            (200, 3),
            "trace {id} after a restart"
        );
    }
    let mut blocks = 0;
    for part in std::fs::read_dir(data.join("spanstore").join("spans")).expect("span store") {
        blocks += std::fs::read_dir(part.expect("partition").path())
            .expect("partition")
            .count();
    }
    assert_eq!(blocks, 1, "the new spans are in one block");
}
