//! Every limit answers with the right status and message, and the collector keeps
//! serving everyone else: items per request, per-service rate, slow clients, connection
//! slots, query length, clauses and time range.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use lookout_tests::otlp::log_request;
use lookout_tests::{get_json, metric_value, post_protobuf, Collector};
use prost::Message;

fn logs(service: &str, n: usize) -> Vec<u8> {
    log_request(service, (0..n).map(|i| format!("limited {i}"))).encode_to_vec()
}

async fn post(c: &Collector, body: Vec<u8>) -> reqwest::Response {
    post_protobuf(&reqwest::Client::new(), &c.http_url("/v1/logs"), body)
        .await
        .expect("POST")
}

/// Seconds until the server closes a connection that sent `prefix` and then nothing.
fn closed_after(addr: std::net::SocketAddr, prefix: &[u8]) -> Duration {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(prefix).expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            // A 408 or similar before closing is fine.
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_answers_precisely_and_the_collector_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = lookout_tests::write_config(
        dir.path(),
        r#"
[limits]
max_items_per_request = 100
max_items_per_second_per_service = 50

[otlp.connections]
header_read_timeout = "500ms"

[api.connections]
max_connections = 2
header_read_timeout = "500ms"
idle_timeout = "1s"

[query]
max_range = "2h"
max_query_length = "64B"
max_query_clauses = 4
"#,
    );
    let c = Collector::start(
        &dir.path().join("data"),
        &["--config", &config.display().to_string()],
    );

    // Items per request: 413, permanent (no Retry-After).
    let r = post(&c, logs("big", 101)).await;
    assert_eq!(r.status(), 413);
    assert!(r.headers().get("retry-after").is_none());
    let status = tonic_types::Status::decode(r.bytes().await.unwrap()).expect("Status");
    assert!(
        status
            .message
            .contains("101 log records in one request, more than the limit of 100"),
        "{}",
        status.message
    );

    // Per-service rate: the burst (2 × 50) passes, then 429 with a hint, for "noisy" only.
    assert_eq!(post(&c, logs("noisy", 100)).await.status(), 200);
    let r = post(&c, logs("noisy", 10)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let status = tonic_types::Status::decode(r.bytes().await.unwrap()).expect("Status");
    assert_eq!(
        status.code,
        tonic::Code::ResourceExhausted as i32,
        "{}",
        status.message
    );
    assert_eq!(post(&c, logs("quiet", 10)).await.status(), 200);

    // A slow client that never finishes its headers is cut off; others are served.
    for addr in [c.http, c.api] {
        let took = closed_after(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
        assert!(
            took < Duration::from_secs(5),
            "{addr}: slow client kept for {took:?}"
        );
    }
    // A kept-alive connection that goes quiet after a request is closed too.
    let took = closed_after(c.api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        took < Duration::from_secs(5),
        "idle keep-alive kept for {took:?}"
    );
    // Two silent connections fill the API's slots; they time out and a request gets in.
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(c.api).expect("connect"))
        .collect();
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(
        Duration::from_secs(10),
        get_json(&c.api_url("/api/v1/services")),
    )
    .await
    .expect("a connection slot freed by the header timeout");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slots were freed by the header timeout"
    );
    drop(idle);

    // Query limits: 400 with the key that limits, then a good query still works.
    for (path, needle) in [
        (
            format!("/api/v1/logs?q={}", "x".repeat(65)),
            "longer than query.max_query_length",
        ),
        (
            "/api/v1/logs?q=a%20b%20c%20d%20e".to_string(),
            "5 clauses, more than query.max_query_clauses",
        ),
        (
            "/api/v1/logs?from=3h".to_string(),
            "wider than query.max_range",
        ),
        (
            "/api/v1/traces?from=1d&to=1h".to_string(),
            "wider than query.max_range",
        ),
        (
            "/api/v1/traces?limit=10000".to_string(),
            "parameter `limit`: expected an integer from 1 to 1000",
        ),
    ] {
        let (status, body) = get_json(&c.api_url(&path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(needle),
            "{path}: {body}"
        );
    }
    let (status, body) = get_json(&c.api_url("/api/v1/logs?service=quiet&from=1h")).await;
    assert_eq!(status, 200, "{body}");
    // The Jaeger API keeps the same range limit, in Jaeger's error envelope.
    for path in [
        "/jaeger/api/traces?service=quiet&lookback=3h",
        "/jaeger/api/dependencies?lookback=10800000",
    ] {
        let (status, body) = get_json(&c.api_url(path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["errors"][0]["msg"]
                .as_str()
                .unwrap_or("")
                .contains("wider than query.max_range"),
            "{path}: {body}"
        );
    }
    let (status, body) = get_json(&c.api_url("/jaeger/api/traces?service=quiet&lookback=1h")).await;
    assert_eq!(status, 200, "{body}");

    let metrics = c.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "lookout_receiver_requests_total{outcome=\"too_large\",signal=\"logs\",transport=\"http\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "lookout_receiver_requests_total{outcome=\"throttled\",signal=\"logs\",transport=\"http\"}"
        ),
        Some(1.0)
    );
}

/// A trace past `[spans] max_trace_bytes` keeps its first spans; the rest are counted,
/// and a trace beside it in the same request is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_trace_is_capped_and_its_neighbours_are_whole() {
    use lookout_proto::attr;
    use lookout_proto::otlp::trace::v1::Span;
    use lookout_tests::otlp::traces_request;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), "[spans]\nmax_trace_bytes = \"64KiB\"\n");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let span = |trace: u8, i: u16| Span {
        trace_id: vec![trace; 16],
        span_id: [&[trace][..], &i.to_be_bytes()[..], &[1; 5][..]].concat(),
        name: "loop".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1000,
        attributes: vec![attr::string(
            "payload",
            format!("{i:04}{}", "x".repeat(1000)),
        )],
        ..Default::default()
    };
    let spans: Vec<Span> = (0..200)
        .map(|i| span(0xa1, i))
        .chain((0..3).map(|i| span(0xb2, i)))
        .collect();
    c.post_ok(
        "/v1/traces",
        traces_request("runaway", spans).encode_to_vec(),
    )
    .await;
    let count = |id: String| {
        let c = &c;
        async move {
            let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{id}"))).await;
            assert_eq!(s, 200, "{b}");
            b["spans"].as_array().map_or(0, Vec::len)
        }
    };
    let kept = count(hex::encode([0xa1; 16])).await;
    // About 1.1 KB a span: some 58 fit under 64 KiB.
    assert!((40..=70).contains(&kept), "kept {kept} of 200");
    assert_eq!(count(hex::encode([0xb2; 16])).await, 3);
    let m = c.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_spanstore_trace_too_large_spans_total"),
        Some((200 - kept) as f64),
        "{m}"
    );
}

/// An export request of one span with `attributes` empty attributes, built on the wire (2
/// bytes each) so that the test never holds it decoded.
fn attribute_bomb(attributes: usize) -> Vec<u8> {
    use prost::encoding::{bytes, encode_key, encode_varint, WireType};
    let mut span = Vec::with_capacity(2 * attributes + 64);
    bytes::encode(1, &vec![7u8; 16], &mut span);
    bytes::encode(2, &vec![9u8; 8], &mut span);
    let now = lookout_tests::otlp::now_ns();
    prost::encoding::fixed64::encode(7, &now, &mut span);
    prost::encoding::fixed64::encode(8, &(now + 1_000), &mut span);
    for _ in 0..attributes {
        encode_key(9, WireType::LengthDelimited, &mut span);
        encode_varint(0, &mut span);
    }
    let wrap = |field: u32, inner: &[u8]| {
        let mut out = Vec::with_capacity(inner.len() + 16);
        encode_key(field, WireType::LengthDelimited, &mut out);
        encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    };
    wrap(1, &wrap(2, &wrap(2, &span)))
}

/// One OTLP/JSON span with `attributes` empty attributes (`{}`, 3 bytes each).
fn json_attribute_bomb(attributes: usize) -> Vec<u8> {
    let now = lookout_tests::otlp::now_ns();
    let mut out = format!(
        "{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{{\"traceId\":\"{}\",\
         \"spanId\":\"{}\",\"name\":\"bomb\",\"startTimeUnixNano\":\"{now}\",\
         \"endTimeUnixNano\":\"{}\",\"attributes\":[",
        "07".repeat(16),
        "09".repeat(8),
        now + 1_000
    )
    .into_bytes();
    for i in 0..attributes {
        out.extend_from_slice(if i == 0 { b"{}" } else { b",{}" });
    }
    out.extend_from_slice(b"]}]}]}]}");
    out
}

/// Send `body` as it is to `TraceService/Export` at `addr`.
async fn export_raw_traces(
    addr: std::net::SocketAddr,
    body: Vec<u8>,
) -> Result<bytes::Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    grpc.unary(
        tonic::Request::new(bytes::Bytes::from(body)),
        path,
        lookout_ingest::grpc::RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(body).expect("gzip");
    enc.finish().expect("gzip")
}

/// A small gzip body that decodes into gigabytes (16M empty attributes in 31 KB) is
/// refused before it is decoded, by the collector and by the agent, over OTLP/HTTP and
/// OTLP/gRPC; memory stays near its idle size and both keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_amplification_is_refused_before_decoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let agent = lookout_tests::Agent::start(&dir.path().join("buffer"), &c.grpc_url(), &[]);
    let bomb = attribute_bomb(15_000_000);
    let gz = gzip(&bomb);
    assert!(gz.len() < 64 << 10, "{} bytes compressed", gz.len());
    // Four at once to each: before sizing on the wire, each took over 1 GB decoded.
    let client = reqwest::Client::new();
    let sends = [&c.http, &agent.http]
        .into_iter()
        .flat_map(|addr| std::iter::repeat_n(format!("http://{addr}/v1/traces"), 4))
        .map(|url| {
            let (client, gz) = (client.clone(), gz.clone());
            async move {
                client
                    .post(url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .body(gz)
                    .send()
                    .await
                    .expect("POST")
            }
        });
    // Each is refused as too large once inflated and sized; while others inflate at
    // the same time, the budget may have no room and the answer is 503 with a retry hint.
    let mut too_large = 0;
    for r in futures::future::join_all(sends).await {
        let code = r.status().as_u16();
        let status = tonic_types::Status::decode(r.bytes().await.expect("body")).expect("Status");
        match code {
            413 => {
                too_large += 1;
                assert!(
                    status
                        .message
                        .contains("bytes decoded, more than the whole ingest budget"),
                    "{}",
                    status.message
                );
            }
            503 => assert!(status.message.contains("overloaded"), "{}", status.message),
            other => panic!("{other}: {}", status.message),
        }
    }
    assert!(too_large >= 2, "{too_large} of 8 refused as too large");
    // The same over gRPC, uncompressed within the 4 MiB message limit (2M attributes).
    let grpc_bomb = attribute_bomb(2_000_000);
    for server in [c.grpc, agent.grpc] {
        let e = export_raw_traces(server, grpc_bomb.clone())
            .await
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("bytes decoded"), "{}", e.message());
    }
    // The same as OTLP/JSON: 10M empty attributes in 30 MB, 29 KB gzipped. Before the
    // JSON decoder counted what it allocates, four of these took the collector past 900 MiB
    // and were accepted.
    let json_bomb = gzip(&json_attribute_bomb(10_000_000));
    assert!(json_bomb.len() < 64 << 10, "{} bytes", json_bomb.len());
    let sends = [&c.http, &agent.http]
        .into_iter()
        .flat_map(|addr| std::iter::repeat_n(format!("http://{addr}/v1/traces"), 4))
        .map(|url| {
            let (client, body) = (client.clone(), json_bomb.clone());
            async move {
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .expect("POST")
            }
        });
    let mut too_large = 0;
    for r in futures::future::join_all(sends).await {
        let code = r.status().as_u16();
        let text = r.text().await.expect("body");
        match code {
            413 => {
                too_large += 1;
                assert!(
                    text.contains("decoded, more than the whole ingest budget"),
                    "{text}"
                );
            }
            503 => assert!(text.contains("overloaded"), "{text}"),
            other => panic!("{other}: {text}"),
        }
    }
    assert!(
        too_large >= 2,
        "{too_large} of 8 JSON bombs refused as too large"
    );
    for (name, peak) in [
        ("collector", c.peak_rss_bytes()),
        ("agent", agent.peak_rss_bytes()),
    ] {
        eprintln!("{name}: peak RSS {} MiB", peak >> 20);
        assert!(peak < 200 << 20, "{name} peaked at {} MiB", peak >> 20);
    }
    // Both still take ordinary requests.
    c.post_ok("/v1/logs", logs("after-the-bombs", 10)).await;
    agent.post_ok("/v1/logs", logs("after-the-bombs", 10)).await;
}
