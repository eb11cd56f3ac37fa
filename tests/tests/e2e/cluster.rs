//! The agent in cluster mode (`--nats`) against a real 3-node `nats-server` cluster: what
//! its clients send is published to the JetStream stream, each span in its trace's
//! partition, exactly once (a part too large for one NATS message in several), through
//! the loss of every NATS node and a `kill -9` of the agent while it publishes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use futures::StreamExt;
use lookout_cluster::partition;
use lookout_ingest::values::service_name;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::trace::v1::Span;
use lookout_tests::nats::NatsCluster;
use lookout_tests::otlp::{log_record, logs_request, now_ns, traces_request};
use lookout_tests::{metric_value, poll, write_agent_config, Agent};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::util::flush_and_shut_down;

/// Partitions of the test stream.
const P: u32 = 4;

/// The agent's config: 4 partitions, fast retries, no host metrics (so that the stream
/// holds only what the test sent), and `extra`.
fn agent_config(dir: &Path, extra: &str) -> String {
    write_agent_config(
        dir,
        &format!(
            "[host_metrics]\nenabled = false\n\
             [exporter]\nretry_initial_interval = \"100ms\"\nretry_max_interval = \"1s\"\n{extra}\n\
             [cluster]\npartitions = {P}\ntimeout = \"5s\"\n"
        ),
    )
}

/// Everything read back from the stream: how often each span and each log record was
/// there; every item was checked to be in its partition.
#[derive(Default)]
struct Seen {
    spans: BTreeMap<Vec<u8>, u32>,
    logs: BTreeMap<String, u32>,
    messages: usize,
}

impl Seen {
    fn span_total(&self) -> u32 {
        self.spans.values().sum()
    }

    fn log_total(&self) -> u32 {
        self.logs.values().sum()
    }

    /// Spans of `ids` not seen, and spans seen more than once.
    fn assert_spans_once<'a>(&self, ids: impl IntoIterator<Item = &'a Vec<u8>>, what: &str) {
        let mut n = 0;
        for id in ids {
            n += 1;
            assert_eq!(
                self.spans.get(id),
                Some(&1),
                "{what}: span {} once",
                hex::encode(id)
            );
        }
        assert_eq!(self.span_total(), n, "{what}: nothing else in the stream");
    }
}

/// A durable pull consumer over every subject of the stream, read incrementally.
struct StreamReader {
    consumer: PullConsumer,
    seen: Seen,
}

/// Retry a JetStream API request for up to 60 s: the meta leader is elected some seconds
/// after the servers start (and again after they restart).
async fn retried<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

impl StreamReader {
    /// Open the stream the agent created (waiting for it) with consumer `name`.
    async fn open(nats: &NatsCluster, name: &str) -> StreamReader {
        let client = async_nats::connect(nats.urls()).await.expect("connect");
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(5));
        let stream = retried("stream LOOKOUT", || js.get_stream("LOOKOUT")).await;
        let config = pull::Config {
            durable_name: Some(name.to_string()),
            filter_subject: "lookout.>".into(),
            ack_policy: AckPolicy::None,
            ..Default::default()
        };
        let consumer = retried("consumer", || {
            stream.get_or_create_consumer(name, config.clone())
        })
        .await;
        StreamReader {
            consumer,
            seen: Seen::default(),
        }
    }

    /// Read what arrived since the last call; check each item's partition.
    async fn read(&mut self) {
        loop {
            let batch = self
                .consumer
                .fetch()
                .max_messages(500)
                .messages()
                .await
                .expect("fetch");
            let messages: Vec<_> = batch.collect().await;
            if messages.is_empty() {
                return;
            }
            for m in messages {
                let m = m.expect("message");
                self.seen.messages += 1;
                let subject = m.subject.as_str();
                let (signal, p) = subject
                    .strip_prefix("lookout.")
                    .and_then(|s| s.split_once('.'))
                    .unwrap_or_else(|| panic!("subject {subject}"));
                let p: u32 = p.parse().expect("partition number");
                assert!(p < P, "{subject}");
                match signal {
                    "traces" => {
                        let req = ExportTraceServiceRequest::decode(m.payload.clone())
                            .expect("a traces request");
                        for s in req
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .flat_map(|s| &s.spans)
                        {
                            assert_eq!(
                                partition::of_trace(&s.trace_id, P),
                                Some(p),
                                "span {} in {subject}",
                                hex::encode(&s.span_id)
                            );
                            *self.seen.spans.entry(s.span_id.clone()).or_default() += 1;
                        }
                    }
                    "logs" => {
                        let req = ExportLogsServiceRequest::decode(m.payload.clone())
                            .expect("a logs request");
                        for r in &req.resource_logs {
                            let attrs = r.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                            let service = service_name(attrs);
                            for l in r.scope_logs.iter().flat_map(|s| &s.log_records) {
                                let want = partition::of_trace(&l.trace_id, P)
                                    .unwrap_or_else(|| partition::of_names(&[&service], P));
                                let body = format!("{:?}", l.body);
                                assert_eq!(want, p, "log {body} in {subject}");
                                *self.seen.logs.entry(body).or_default() += 1;
                            }
                        }
                    }
                    other => panic!("unexpected signal {other} in {subject}"),
                }
            }
        }
    }

    /// Read until `done` holds of what was seen, for up to `secs` seconds.
    async fn read_until(&mut self, secs: u64, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.read().await;
            if done(&self.seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {} spans, {} logs in {} messages",
                self.seen.span_total(),
                self.seen.log_total(),
                self.seen.messages
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Request `r` of `n` spans of service `svc`, in traces of 5 spans; span ids are `tag`,
/// `r` and the span's number, so every span of a test is distinct.
fn spans(tag: u8, r: u32, n: u32) -> ExportTraceServiceRequest {
    let t = now_ns();
    let spans = (0..n)
        .map(|i| {
            let mut trace = [0u8; 16];
            trace[0] = tag;
            trace[4..8].copy_from_slice(&r.to_be_bytes());
            // The partition comes from the last 8 bytes: spread them.
            trace[8..].copy_from_slice(
                &u64::from(i / 5 + 1)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    .to_be_bytes(),
            );
            trace[15] |= 1;
            let mut span_id = [tag, 0, 0, 0, 0, 0, 0, 0];
            span_id[1..5].copy_from_slice(&r.to_be_bytes());
            span_id[5..7].copy_from_slice(&(i as u16).to_be_bytes());
            span_id[7] = 1;
            Span {
                trace_id: trace.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("op {i}"),
                start_time_unix_nano: t,
                end_time_unix_nano: t + 1000,
                ..Default::default()
            }
        })
        .collect();
    traces_request("shop", spans)
}

fn span_ids(reqs: &[ExportTraceServiceRequest]) -> Vec<Vec<u8>> {
    reqs.iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.span_id.clone())
        .collect()
}

async fn metric(agent: &Agent, series: &str) -> f64 {
    metric_value(&agent.metrics().await, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_agent_publishes_sdk_spans_and_logs_once_each_in_its_partition() {
    let nats = NatsCluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = agent_config(dir.path(), "");
    let agent = Agent::start_publishing(
        &dir.path().join("buffer"),
        &nats.urls(),
        &["--config", &cfg],
    );
    agent.assert_logged("ships_to=stream LOOKOUT at nats://127.0.0.1:");

    // The OpenTelemetry SDK sends over OTLP/gRPC while the stream may not be up yet.
    let resource = Resource::builder().with_service_name("checkout").build();
    let span_exp = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(agent.grpc_url())
        .build()
        .expect("span exporter");
    let log_exp = LogExporter::builder()
        .with_tonic()
        .with_endpoint(agent.grpc_url())
        .build()
        .expect("log exporter");
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exp)
        .with_resource(resource.clone())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exp)
        .with_resource(resource)
        .build();
    let tracer = tracer_provider.tracer("lookout-e2e");
    let logger = logger_provider.logger("lookout-e2e");
    let mut sent_spans = Vec::new();
    let mut traced_logs = 0;
    for t in 0..40 {
        let root = tracer.start(format!("GET /cart/{t}"));
        sent_spans.push(root.span_context().span_id().to_bytes().to_vec());
        let cx = Context::current_with_span(root);
        for i in 0..4 {
            let mut child = tracer.start_with_context(format!("step {i}"), &cx);
            sent_spans.push(child.span_context().span_id().to_bytes().to_vec());
            if i == 0 {
                let mut rec = logger.create_log_record();
                rec.set_body(AnyValue::from(format!("clusterlog trace {t}")));
                rec.set_trace_context(
                    child.span_context().trace_id(),
                    child.span_context().span_id(),
                    None,
                );
                logger.emit(rec);
                traced_logs += 1;
            }
            child.end();
        }
        cx.span().end();
    }
    for i in 0..10 {
        let mut rec = logger.create_log_record();
        rec.set_body(AnyValue::from(format!("clusterlog background {i}")));
        logger.emit(rec);
    }
    flush_and_shut_down(
        tracer_provider,
        Some(logger_provider),
        SdkMeterProvider::builder().build(),
    )
    .await;
    // And a 2.6 MB request of one service's logs without trace ids, such as a tailed
    // file makes: all in one partition, more than a NATS message may hold (1 MiB).
    let big = logs_request(
        "tailed",
        (0..2500)
            .map(|i| log_record(format!("clusterbig {i} {}", "x".repeat(1000)), now_ns()))
            .collect(),
    );
    agent.post_ok("/v1/logs", big.encode_to_vec()).await;
    let logs = traced_logs + 10 + 2500;

    let mut reader = StreamReader::open(&nats, "e2e-sdk").await;
    reader
        .read_until(60, "the SDK's spans and logs in the stream", |s| {
            s.span_total() >= 200 && s.log_total() >= logs
        })
        .await;
    agent.wait_shipped(Duration::from_secs(30)).await;
    reader.read().await;
    reader.seen.assert_spans_once(&sent_spans, "SDK spans");
    assert_eq!(reader.seen.logs.len(), logs as usize, "every log record");
    assert!(reader.seen.logs.values().all(|n| *n == 1), "none twice");
    assert!(reader.seen.messages > 1, "split across partitions");

    let m = agent.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_agent_cluster_connected"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "lookout_agent_exporter_sent_items_total{signal=\"traces\"}"
        ),
        Some(200.0),
        "{m}"
    );
    let published = metric_value(
        &m,
        "lookout_agent_cluster_published_messages_total{signal=\"traces\"}",
    )
    .unwrap_or(0.0)
        + metric_value(
            &m,
            "lookout_agent_cluster_published_messages_total{signal=\"logs\"}",
        )
        .unwrap_or(0.0);
    assert_eq!(published, reader.seen.messages as f64, "{m}");
    agent.assert_logged("connected to the cluster's stream");
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_agent_buffers_while_every_nats_node_is_down_and_publishes_once_after() {
    let mut nats = NatsCluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = agent_config(dir.path(), "");
    let agent = Agent::start_publishing(
        &dir.path().join("buffer"),
        &nats.urls(),
        &["--config", &cfg],
    );
    let client = reqwest::Client::new();
    let mut sent = Vec::new();

    // Before: published.
    for r in 0..5 {
        let req = spans(1, r, 20);
        agent.post_ok("/v1/traces", req.encode_to_vec()).await;
        sent.push(req);
    }
    let mut reader = StreamReader::open(&nats, "e2e-outage").await;
    reader
        .read_until(60, "spans sent before the outage", |s| {
            s.span_total() >= 100
        })
        .await;
    agent.wait_shipped(Duration::from_secs(30)).await;

    // Every node dies: the agent still answers 200 / OK and keeps the data in its buffer.
    drop(reader);
    tokio::task::block_in_place(|| (0..3).for_each(|i| nats.kill(i)));
    let mut grpc = TraceServiceClient::connect(agent.grpc_url())
        .await
        .expect("connect to the agent");
    for r in 5..15 {
        let req = spans(1, r, 20);
        if r % 2 == 0 {
            let resp = lookout_tests::post_protobuf(
                &client,
                &agent.http_url("/v1/traces"),
                req.encode_to_vec(),
            )
            .await
            .expect("POST");
            assert_eq!(resp.status(), 200, "answered during the outage");
        } else {
            grpc.export(req.clone())
                .await
                .expect("gRPC OK during the outage");
        }
        sent.push(req);
    }
    poll(Duration::from_secs(30), "publish retries", || async {
        let retries = metric(
            &agent,
            "lookout_agent_exporter_retries_total{reason=\"unavailable\",signal=\"traces\"}",
        )
        .await;
        let connected = metric(&agent, "lookout_agent_cluster_connected").await;
        (retries > 0.0 && connected == 0.0).then_some(())
    })
    .await;
    let (_, h) = lookout_tests::get_json(&agent.api_url("/healthz")).await;
    assert!(h["buffer_unacked_bytes"].as_u64().unwrap_or(0) > 0, "{h}");

    // The nodes come back: everything arrives, once.
    tokio::task::block_in_place(|| (0..3).for_each(|i| nats.restart(i)));
    agent.wait_shipped(Duration::from_secs(60)).await;
    let mut reader = StreamReader::open(&nats, "e2e-outage-after").await;
    reader
        .read_until(30, "every span after the outage", |s| s.span_total() >= 300)
        .await;
    reader
        .seen
        .assert_spans_once(&span_ids(&sent), "spans around the outage");
    assert_eq!(metric(&agent, "lookout_agent_cluster_connected").await, 1.0);
    assert!(agent.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_agent_killed_while_publishing_resends_without_duplicates() {
    let nats = NatsCluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let buf = dir.path().join("buffer");
    // One record at a time, so that the kill lands in the middle of the backlog.
    let cfg = agent_config(dir.path(), "concurrency = 1\n");
    let agent = Agent::start_publishing(&buf, &nats.urls(), &["--config", &cfg]);
    // Sent while the stream is still being set up (its meta leader is elected ~10 s after
    // the servers start): a backlog builds in the buffer.
    let mut sent = Vec::new();
    let client = reqwest::Client::new();
    for r in 0..400 {
        let req = spans(2, r, 25);
        assert!(
            lookout_tests::post_acknowledged(
                &client,
                &agent.http_url("/v1/traces"),
                req.encode_to_vec()
            )
            .await,
            "request {r} acknowledged"
        );
        sent.push(req);
    }
    let total: u32 = 400 * 25;
    poll(Duration::from_secs(60), "publishing under way", || async {
        let published = metric(
            &agent,
            "lookout_agent_exporter_sent_items_total{signal=\"traces\"}",
        )
        .await;
        // A quarter: past the first persisted acknowledgements.
        (published >= f64::from(total / 4)).then_some(())
    })
    .await;
    let (_, h) = lookout_tests::get_json(&agent.api_url("/healthz")).await;
    agent.kill9();
    assert!(
        h["buffer_unacked_bytes"].as_u64().unwrap_or(0) > 0,
        "killed before the backlog was published: {h}"
    );
    // The buffer as the crash left it, for a second restart below.
    let snapshot = dir.path().join("snapshot");
    copy_dir(&buf, &snapshot);

    let mut reader = StreamReader::open(&nats, "e2e-kill").await;
    reader.read().await;
    let before = reader.seen.span_total();

    // A new agent on the same buffer resumes from the acknowledged position, which lags
    // the publishes: records published before the kill are sent again, and the stream
    // recognises them by their message ids.
    let agent = Agent::start_publishing(&buf, &nats.urls(), &["--config", &cfg]);
    agent.assert_logged("holds data not yet shipped; resuming");
    agent.wait_shipped(Duration::from_secs(60)).await;
    reader
        .read_until(30, "every acknowledged span", |s| s.span_total() >= total)
        .await;
    reader
        .seen
        .assert_spans_once(&span_ids(&sent), "spans across the kill");
    // Its acknowledged position lagged the publishes (persisted every 200 ms): it sent
    // again spans the stream had, and the stream recognised them.
    let resent = metric(
        &agent,
        "lookout_agent_exporter_sent_items_total{signal=\"traces\"}",
    )
    .await;
    eprintln!("{before} spans in the stream after the kill; the new agent sent {resent}");
    assert!(
        resent > f64::from(total - before),
        "sent {resent}, {} were missing",
        total - before
    );
    assert!(agent.terminate().success());

    // The same crashed buffer with its acknowledged position lost: every record is sent
    // again, and still none is stored twice.
    let _ = std::fs::remove_file(snapshot.join("buffer").join("ack.pos"));
    let agent = Agent::start_publishing(&snapshot, &nats.urls(), &["--config", &cfg]);
    agent.wait_shipped(Duration::from_secs(60)).await;
    assert_eq!(
        metric(
            &agent,
            "lookout_agent_exporter_sent_items_total{signal=\"traces\"}"
        )
        .await,
        f64::from(total),
        "every record sent again"
    );
    reader.read().await;
    reader
        .seen
        .assert_spans_once(&span_ids(&sent), "spans sent twice by the agent");
    assert!(agent.terminate().success());
}

/// Copy directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}
