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

    // Refusal and drop counters exist at 0 before the first, so rate() and alerts on
    // them have data.
    let m = c.metrics().await;
    for name in [
        "lookout_receiver_refused_items_total{reason=\"too_large\",signal=\"logs\",transport=\"http\"}",
        "lookout_receiver_refused_items_total{reason=\"overloaded\",signal=\"traces\",transport=\"grpc\"}",
        "lookout_receiver_dropped_items_total{reason=\"invalid\",signal=\"metrics\",transport=\"grpc\"}",
        "lookout_receiver_dropped_items_total{reason=\"rate_limited\",signal=\"logs\",transport=\"http\"}",
    ] {
        assert_eq!(metric_value(&m, name), Some(0.0), "{name}");
    }

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
    // Which of eight at once gets 413 rather than 503 depends on who holds the budget
    // when; alone, each is refused as too large.
    eprintln!("{too_large} of 8 concurrent JSON bombs refused as too large");
    for addr in [&c.http, &agent.http] {
        let r = client
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(json_bomb.clone())
            .send()
            .await
            .expect("POST");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("more than the whole ingest budget"), "{text}");
    }
    for (name, peak) in [
        ("collector", c.peak_rss_bytes()),
        ("agent", agent.peak_rss_bytes()),
    ] {
        eprintln!("{name}: peak RSS {} MiB", peak >> 20);
        // The 64 MiB budget, plus what it does not count: a growing array's old copy
        // during a reallocation, the gzip'd bodies, a debug build's heap (183–203 MiB
        // seen). Without the accounting one bomb took 959 MiB.
        assert!(peak < 256 << 20, "{name} peaked at {} MiB", peak >> 20);
    }
    // Both still take ordinary requests.
    c.post_ok("/v1/logs", logs("after-the-bombs", 10)).await;
    agent.post_ok("/v1/logs", logs("after-the-bombs", 10)).await;
}

/// The HTTP/2 client preface, a SETTINGS frame and the start of a HEADERS frame: what a
/// client trickling its first request sends, a byte at a time.
fn h2_opening() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // HEADERS, 64 bytes announced, END_HEADERS, stream 1; its payload never ends.
    out.extend_from_slice(&[0, 0, 64, 0x1, 0x4, 0, 0, 0, 1]);
    out.extend(std::iter::repeat_n(0x82u8, 64));
    out
}

/// How long the server keeps a connection that sends `fast` at once and then `slow` a
/// byte every `gap`: until a read sees the end, a write fails, or `give_up`.
async fn kept_while_trickling(
    addr: std::net::SocketAddr,
    fast: &[u8],
    slow: &[u8],
    gap: Duration,
    give_up: Duration,
) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(fast).await.expect("write");
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let writer = async {
        if slow.is_empty() {
            std::future::pending::<()>().await;
        }
        for b in slow.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(gap).await;
        }
    };
    tokio::select! {
        _ = reader => {}
        () = writer => {}
        () = tokio::time::sleep(give_up) => {}
    }
    started.elapsed()
}

/// A gRPC Export whose body comes a byte per DATA frame every 300 ms: its `grpc-status`
/// and how long the server took to end it.
async fn grpc_trickled_body(addr: std::net::SocketAddr) -> (Option<String>, Duration) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut body) = client.send_request(req, false).expect("send");
    let started = Instant::now();
    let trickle = async {
        // A message header announcing 1,000 bytes, then the bytes one at a time.
        let mut first = vec![0u8];
        first.extend_from_slice(&1_000u32.to_be_bytes());
        if body.send_data(bytes::Bytes::from(first), false).is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if body
                .send_data(bytes::Bytes::from_static(&[0]), false)
                .is_err()
            {
                return;
            }
        }
    };
    let status = tokio::select! {
        r = response => match r {
            Ok(mut r) => {
                let status = r.headers().get("grpc-status").map(|v| v.to_str().unwrap_or("?").to_owned());
                match status {
                    Some(s) => Some(s),
                    None => {
                        let trailers = r.body_mut().trailers().await.ok().flatten();
                        trailers.and_then(|t| t.get("grpc-status").map(|v| v.to_str().unwrap_or("?").to_owned()))
                    }
                }
            }
            Err(e) => Some(format!("stream error: {e}")),
        },
        () = trickle => Some("body refused".to_owned()),
        () = tokio::time::sleep(Duration::from_secs(15)) => None,
    };
    (status, started.elapsed())
}

/// One attacker's connection, again and again from `from` until `stop`: it sends nothing,
/// or trickles the opening of an HTTP/2 request a byte every 300 ms, and reconnects as
/// soon as it is closed.
async fn hostile(
    addr: std::net::SocketAddr,
    from: std::net::IpAddr,
    trickle: bool,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let opening = h2_opening();
    while !stop.load(Ordering::Relaxed) {
        let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
            return;
        };
        if sock.bind(std::net::SocketAddr::new(from, 0)).is_err() {
            return;
        }
        if let Ok(s) = sock.connect(addr).await {
            let (mut rd, mut wr) = s.into_split();
            let mut buf = [0u8; 1024];
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                if trickle {
                    if wr.write_all(&opening[sent..=sent]).await.is_err() {
                        break;
                    }
                    sent = (sent + 1) % opening.len();
                }
                match tokio::time::timeout(Duration::from_millis(300), rd.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Thousands of connections that never send a request (silent, or trickling HTTP/2
/// frames a byte at a time, reconnecting when closed) cannot starve a real client: the
/// HTTP/2 preface, frames and header blocks have the header timeout as HTTP/1.1 headers
/// do (the server's own SETTINGS do not count as the peer being heard), and one address
/// holds at most `max_connections_per_address` of a listener's slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_cannot_starve_a_real_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(
        dir.path(),
        "[otlp.connections]\nheader_read_timeout = \"2s\"\nmax_connections_per_address = 200\n\
         request_timeout = \"3s\"\n",
    );
    // An OTLP/HTTP body trickled a byte every 300 ms is cut at request_timeout (408).
    let took = kept_while_trickling(
        c.http,
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
          Content-Length: 100000\r\n\r\n",
        b"x",
        Duration::from_millis(300),
        Duration::from_secs(15),
    )
    .await;
    eprintln!("trickled OTLP/HTTP body ended after {took:?}");
    assert!(took < Duration::from_secs(6), "trickled body kept {took:?}");
    // The same over gRPC, one small DATA frame every 300 ms (each frame complete, so only
    // the call's deadline applies): the call ends at request_timeout with an error status.
    let (status, took) = grpc_trickled_body(c.grpc).await;
    eprintln!("trickled gRPC body ended after {took:?}, grpc-status {status:?}");
    assert!(
        took < Duration::from_secs(6),
        "trickled gRPC body kept {took:?}"
    );
    assert!(
        status.as_deref().is_some_and(|s| s != "0"),
        "grpc-status {status:?}"
    );

    // Silent on gRPC: closed at the header timeout although the server wrote SETTINGS.
    let took = kept_while_trickling(
        c.grpc,
        b"",
        b"",
        Duration::from_secs(60),
        Duration::from_secs(15),
    )
    .await;
    eprintln!("silent gRPC connection closed after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "silent gRPC connection kept {took:?}"
    );
    // A HEADERS frame trickled a byte every 300 ms, on gRPC and on OTLP/HTTP (h2c): every
    // byte is activity, but the frame must be finished within the header timeout.
    let opening = h2_opening();
    for addr in [c.grpc, c.http] {
        let took = kept_while_trickling(
            addr,
            &opening[..33],
            &opening[33..],
            Duration::from_millis(300),
            Duration::from_secs(15),
        )
        .await;
        eprintln!("{addr}: trickled HEADERS closed after {took:?}");
        assert!(
            took < Duration::from_secs(5),
            "{addr}: trickled HEADERS kept {took:?}"
        );
    }

    // 1,200 attackers on each OTLP listener from 127.0.0.2, more than the 1,024 slots.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker: std::net::IpAddr = [127, 0, 0, 2].into();
    let mut tasks = Vec::new();
    for addr in [c.grpc, c.http] {
        for i in 0..1_200 {
            tasks.push(tokio::spawn(hostile(
                addr,
                attacker,
                i % 2 == 0,
                stop.clone(),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = c.metrics().await;
    for listener in ["otlp_grpc", "otlp_http"] {
        let open = metric_value(
            &m,
            &format!("lookout_listener_open_connections{{listener=\"{listener}\"}}"),
        )
        .unwrap_or(0.0);
        eprintln!("{listener}: {open} connections open among the attackers");
        assert!(open <= 210.0, "{listener}: {open} open");
    }

    // A real client exports over both transports the whole time, within a 3 s timeout.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let started = Instant::now();
    let mut exports = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let r = http
            .post(c.http_url("/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(logs("steady", 5))
            .send()
            .await
            .expect("OTLP/HTTP export within 3 s among hostile connections");
        assert_eq!(r.status(), 200);
        let grpc = tokio::time::timeout(
            Duration::from_secs(3),
            export_raw_traces(c.grpc, Vec::new()),
        )
        .await
        .expect("OTLP/gRPC export within 3 s among hostile connections");
        grpc.expect("gRPC export");
        exports += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert!(exports >= 10, "{exports} exports in 8 s");

    let m = c.metrics().await;
    for listener in ["otlp_grpc", "otlp_http"] {
        for family in ["refused", "timed_out"] {
            let name =
                format!("lookout_listener_{family}_connections_total{{listener=\"{listener}\"}}");
            let n = metric_value(&m, &name).unwrap_or(0.0);
            assert!(n > 0.0, "{name} = {n}");
        }
    }
    // Still serving once they are gone.
    assert_eq!(post(&c, logs("after", 1)).await.status(), 200);
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client opening streams and resetting them at
/// once gets a GOAWAY, and the HTTP/2 library's warning about it is logged once per
/// 10 s however many connections do it, not once per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_resets_end_in_goaway_and_do_not_flood_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), "");
    let mut goaways = 0;
    for _ in 0..20 {
        let tcp = tokio::net::TcpStream::connect(c.grpc)
            .await
            .expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
        let driver = tokio::spawn(connection);
        let mut client = client;
        for _ in 0..5_000 {
            let Ok(ready) = client.clone().ready().await else {
                break;
            };
            client = ready;
            let req = http::Request::post(format!(
                "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                c.grpc
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
            match client.send_request(req, false) {
                Ok((_response, mut body)) => body.send_reset(h2::Reason::CANCEL),
                Err(_) => break,
            }
        }
        drop(client);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("the connection ends")
        {
            if e.is_go_away() {
                goaways += 1;
            }
        }
    }
    eprintln!("{goaways} of 20 connections got GOAWAY");
    assert!(goaways >= 5, "{goaways} of 20 connections got GOAWAY");
    // The collector still serves.
    assert_eq!(post(&c, logs("after-resets", 1)).await.status(), 200);
    let log = c.output();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("h2::"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} h2 warnings for {goaways} GOAWAYs:\n{log}"
    );
}
