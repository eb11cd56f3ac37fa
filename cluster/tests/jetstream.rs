//! Publishing split batches to a real 3-node `nats-server` cluster (R3 stream): every span
//! lands once, in its trace's partition, through the loss of a node and resends.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use lookout_cluster::jetstream::{ConnectError, JetStream, JetStreamOptions};
use lookout_cluster::{partition, publish_batch};
use lookout_ingest::Batch;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::trace::v1::Span;
use lookout_tests::nats::NatsCluster;
use lookout_tests::otlp::traces_request;
use prost::Message;

const PARTITIONS: u32 = 4;

/// Batch `b`: 5 traces of 2 spans from `web` (ids unique per batch).
fn batch(b: u32) -> Batch {
    let spans = (0..10u32)
        .map(|i| {
            let mut trace = [0u8; 16];
            trace[..4].copy_from_slice(&b.to_be_bytes());
            trace[4] = 1;
            trace[12..].copy_from_slice(&(i / 2 * 7919 + b).to_be_bytes());
            Span {
                trace_id: trace.to_vec(),
                span_id: [&b.to_be_bytes()[..], &i.to_be_bytes()[..]].concat(),
                name: format!("op {b}.{i}"),
                ..Default::default()
            }
        })
        .collect();
    Batch::Traces(traces_request("web", spans))
}

fn options(c: &NatsCluster, partitions: u32) -> JetStreamOptions {
    JetStreamOptions {
        urls: c.urls(),
        partitions,
        // The first stream request waits for the meta leader election (~10 s here).
        timeout: Duration::from_secs(60),
        ..JetStreamOptions::default()
    }
}

/// Publish batch `b`, resending until it is acknowledged, as the agent's buffer does.
async fn publish_until_acked(js: &JetStream, b: u32) -> u32 {
    let mut tries = 0;
    loop {
        tries += 1;
        match publish_batch(js, batch(b), PARTITIONS).await {
            Ok(_) => return tries,
            Err(e) if tries < 50 => {
                eprintln!("batch {b}: {e}; resending");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("batch {b} never acknowledged: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_batches_land_once_in_their_partition_through_a_node_loss() {
    let mut nats = NatsCluster::start();
    let js = JetStream::connect(options(&nats, PARTITIONS))
        .await
        .unwrap();
    let mut resent = 0;
    for b in 0..60 {
        if b == 30 {
            // A node dies: the R3 stream keeps its quorum; while a new stream leader is
            // elected, publishes fail and are resent.
            nats.kill(1);
        }
        resent += publish_until_acked(&js, b).await - 1;
        // The same batch sent again (a client retry after a lost answer): not stored twice.
        if b % 10 == 0 {
            publish_until_acked(&js, b).await;
        }
    }
    eprintln!("resends: {resent}");

    // Read each partition back through its own durable pull consumer.
    let asked = std::time::Instant::now();
    let stream = loop {
        match js.context().get_stream("LOOKOUT").await {
            Ok(s) => break s,
            Err(e) if asked.elapsed() > Duration::from_secs(60) => panic!("stream: {e}"),
            Err(e) => {
                eprintln!("stream: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let mut seen: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    let mut spans = 0;
    for p in 0..PARTITIONS {
        // Right after a node loss the JetStream API may time out while a new meta leader
        // is elected: retried, as a consuming node does.
        let started = std::time::Instant::now();
        let consumer = loop {
            let config = pull::Config {
                durable_name: Some(format!("test-{p}")),
                filter_subject: js.partition_filter(p),
                ..Default::default()
            };
            match stream
                .get_or_create_consumer(&format!("test-{p}"), config)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    eprintln!("consumer {p}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("consumer {p}: {e}"),
            }
        };
        let mut msgs = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        while let Some(m) = msgs.next().await {
            let m = m.unwrap();
            let req = ExportTraceServiceRequest::decode(m.payload.clone()).unwrap();
            for s in req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                assert_eq!(partition::of_trace(&s.trace_id, PARTITIONS), Some(p));
                *seen.entry(s.span_id.clone()).or_default() += 1;
                spans += 1;
            }
            m.ack().await.unwrap();
        }
    }
    assert_eq!(seen.len(), 600, "every span of the 60 batches");
    assert_eq!(spans, 600, "and none twice");

    // The node comes back; the stream serves on. A node configured with another partition
    // count is refused.
    nats.restart(1);
    publish_until_acked(&js, 1000).await;
    match JetStream::connect(options(&nats, PARTITIONS * 2)).await {
        Err(ConnectError::Partitions {
            found, configured, ..
        }) => {
            assert_eq!((found, configured), (PARTITIONS, PARTITIONS * 2));
        }
        Err(e) => panic!("expected a partition mismatch, got {e}"),
        Ok(_) => panic!("expected a partition mismatch"),
    }
}
