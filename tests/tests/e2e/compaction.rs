//! Compaction in the running collector: blocks cut every second are merged in runs, and
//! every trace is found whole and once (by id and by search), before and after a restart.

use std::time::Duration;

use lookout_tests::otlp::{three_span_trace, writer_trace_id};
use lookout_tests::{get_json, metric_value, poll, Collector};
use prost::Message;

const SERVICE: &str = "compacted";

const CONFIG: &str = "[traces]\ncompletion_window = \"1s\"\n\
[spans]\nblock_interval = \"1s\"\ncompact_interval = \"2s\"\nblock_spans = 1000\n";

async fn spans_of(c: &Collector, id: &str) -> (u16, usize) {
    let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
    (s, b["spans"].as_array().map_or(0, Vec::len))
}

fn compactions(m: &str, kind: &str) -> f64 {
    metric_value(
        m,
        &format!("lookout_spanstore_compactions_total{{kind=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blocks_are_merged_and_every_trace_stays_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), CONFIG);
    let mut ids = Vec::new();
    // Batches over several seconds: one small span block (and summary block) each.
    for round in 0..6 {
        for seq in 0..5 {
            let id = writer_trace_id(0xc0, round, seq);
            c.post_ok("/v1/traces", three_span_trace(SERVICE, id).encode_to_vec())
                .await;
            ids.push(hex::encode(id));
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let m = poll(
        Duration::from_secs(60),
        "compactions of both kinds",
        || async {
            let m = c.metrics().await;
            (compactions(&m, "spans") >= 1.0 && compactions(&m, "summaries") >= 1.0).then_some(m)
        },
    )
    .await;
    let merged = metric_value(
        &m,
        "lookout_spanstore_compacted_blocks_total{kind=\"spans\"}",
    )
    .unwrap_or(0.0);
    assert!(merged >= 2.0, "{m}");
    for id in &ids {
        assert_eq!(spans_of(&c, id).await, (200, 3), "trace {id}");
    }
    let search = format!("/api/v1/traces?service={SERVICE}&limit=100");
    let b = poll(
        Duration::from_secs(30),
        "every trace summarised",
        || async {
            let (_, b) = get_json(&c.api_url(&search)).await;
            (b["traces"].as_array().map(Vec::len) == Some(ids.len())).then_some(b)
        },
    )
    .await;
    let mut found: Vec<&str> = b["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .filter_map(|t| t["trace_id"].as_str())
        .collect();
    found.sort_unstable();
    found.dedup();
    assert_eq!(found.len(), ids.len(), "each trace once: {b}");
    assert!(c.terminate().success());

    let c = Collector::start_with_config(dir.path(), CONFIG);
    for id in &ids {
        assert_eq!(
            spans_of(&c, id).await,
            (200, 3),
            "trace {id} after a restart"
        );
    }
    let (_, b) = get_json(&c.api_url(&search)).await;
    assert_eq!(b["traces"].as_array().map(Vec::len), Some(ids.len()), "{b}");
    let m = c.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_spanstore_unreadable_blocks{kind=\"spans\"}"),
        Some(0.0),
        "{m}"
    );
}
