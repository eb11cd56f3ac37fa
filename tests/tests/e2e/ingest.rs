//! OTLP ingest over raw HTTP and gRPC: OTLP/JSON, partial success, and every kind of bad
//! input answered with the right status while the collector keeps serving.

use std::io::Write;
use std::time::Duration;

use lookout_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use lookout_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceResponse;
use lookout_proto::otlp::logs::v1::LogRecord;
use lookout_proto::otlp::trace::v1::Span;
use lookout_tests::otlp::{kv, log_record, logs_request, now_ns, traces_request};
use lookout_tests::{get_json, poll, promtool_check_metrics, Collector, ProtobufBody, FAST_TRACES};
use prost::Message;
use serde_json::{json, Value};

fn span(trace: [u8; 16], id: u8, name: &str) -> Span {
    let t = now_ns();
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: t,
        end_time_unix_nano: t + 1_000_000,
        ..Default::default()
    }
}

fn logs(service: &str, bodies: &[&str]) -> ExportLogsServiceRequest {
    let records = bodies
        .iter()
        .map(|b| LogRecord {
            severity_number: 9,
            attributes: vec![kv("http.route", "/api/cart")],
            ..log_record(*b, now_ns())
        })
        .collect();
    logs_request(service, records)
}

async fn post(url: &str, ct: &str, gzip: bool, body: Vec<u8>) -> reqwest::Response {
    let client = reqwest::Client::new();
    let mut req = client.post(url).header("content-type", ct);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&body).expect("gzip");
        enc.finish().expect("gzip")
    } else {
        body
    };
    req.body(body).send().await.expect("POST")
}

/// POST an OTLP/JSON document, gzipped or not.
async fn post_json(url: &str, gzip: bool, doc: &Value) -> reqwest::Response {
    post(url, "application/json", gzip, doc.to_string().into_bytes()).await
}

/// POST a protobuf body with `content-encoding: encoding` (already encoded).
async fn post_encoded(url: &str, encoding: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("content-encoding", encoding)
        .protobuf(body)
        .send()
        .await
        .expect("POST")
}

async fn rpc_status(r: reqwest::Response) -> (u16, tonic_types::Status) {
    let code = r.status().as_u16();
    let bytes = r.bytes().await.expect("body");
    (
        code,
        tonic_types::Status::decode(bytes).expect("error body is a google.rpc.Status"),
    )
}

async fn log_total(c: &Collector, query: &str) -> u64 {
    let (status, body) = get_json(&c.api_url(&format!("/api/v1/logs?{query}"))).await;
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().expect("total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_logs_and_traces_are_searchable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);
    let t = now_ns().to_string();
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": t,
            "severityNumber": 17,
            "severityText": "ERROR",
            "body": {"stringValue": "jsonmarker payment declined"},
            "attributes": [
                {"key": "user.id", "value": {"stringValue": "u-42"}},
                {"key": "retries", "value": {"intValue": "3"}}
            ],
            "traceId": "5B8EFFF798038103D269B633813FC60C",
            "spanId": "EEE19B7EC3C1B174",
            "someFutureField": {"ignored": true}
        }]}]
    }]});
    let r = post_json(&c.http_url("/v1/logs"), false, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let resp: serde_json::Value = r.json().await.expect("json response");
    assert!(resp.get("partialSuccess").is_none(), "{resp}");

    let found = poll(Duration::from_secs(10), "json log searchable", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/logs?q=jsonmarker&service=json-svc")).await;
        (b["total"] == 1).then_some(b)
    })
    .await;
    let log = &found["logs"][0];
    assert_eq!(log["body"], "jsonmarker payment declined");
    assert_eq!(log["severity"], "error");
    assert_eq!(log["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(log["span_id"], "eee19b7ec3c1b174");
    assert_eq!(log["attributes"]["user.id"], "u-42");
    assert_eq!(log["attributes"]["retries"], 3);
    assert_eq!(log["resource"]["service.name"], "json-svc");
    // Query syntax over fields and attributes; severity filter is a minimum level.
    assert_eq!(log_total(&c, "q=attributes.user.id:u-42").await, 1);
    assert_eq!(log_total(&c, "q=severity:error%20AND%20payment").await, 1);
    assert_eq!(
        log_total(&c, "q=trace_id:5b8efff798038103d269b633813fc60c").await,
        1
    );
    assert_eq!(log_total(&c, "q=jsonmarker&severity=warn").await, 1);
    assert_eq!(log_total(&c, "q=jsonmarker&severity=fatal").await, 0);
    assert_eq!(log_total(&c, "q=jsonmarker&from=1h&to=now").await, 1);
    assert_eq!(log_total(&c, "q=jsonmarker&to=2h").await, 0);

    let trace = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
             "name": "POST /pay", "kind": 2, "startTimeUnixNano": t, "endTimeUnixNano": (now_ns() + 5_000_000).to_string(),
             "status": {"code": 2, "message": "declined"},
             "attributes": [{"key": "http.route", "value": {"stringValue": "/pay"}}]},
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "parentSpanId": "eee19b7ec3c1b174",
             "name": "db", "kind": 3, "startTimeUnixNano": t, "endTimeUnixNano": t}
        ]}]
    }]});
    let r = post_json(&c.http_url("/v1/traces"), true, &trace).await;
    assert_eq!(r.status(), 200);
    let t = poll(Duration::from_secs(10), "json trace", || async {
        let (s, b) = get_json(&c.api_url("/api/v1/traces/5B8EFFF798038103D269B633813FC60C")).await;
        (s == 200).then_some(b)
    })
    .await;
    assert_eq!(t["spans"].as_array().expect("spans").len(), 2);
    let root = &t["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["span_id"] == "eee19b7ec3c1b174")
        .expect("root")
        .clone();
    assert_eq!(root["status"], "error");
    assert_eq!(root["kind"], "server");
    assert_eq!(root["service"], "json-svc");
    let b = poll(Duration::from_secs(15), "completed json trace", || async {
        let (s, b) = get_json(
            &c.api_url("/api/v1/traces?service=json-svc&status=error&attr.http.route=/pay"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        (b["traces"].as_array().map(Vec::len) == Some(1)).then_some(b)
    })
    .await;
    assert_eq!(
        b["traces"][0]["trace_id"], "5b8efff798038103d269b633813fc60c",
        "{b}"
    );
    assert_eq!(b["traces"][0]["span_count"], 2, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_precise_errors_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]);
    let url = c.http_url("/v1/traces");

    // Garbage protobuf.
    let (code, st) =
        rpc_status(post(&url, "application/x-protobuf", false, vec![0xff; 64]).await).await;
    assert_eq!(code, 400);
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert!(
        st.message
            .contains("invalid protobuf ExportTraceServiceRequest"),
        "{}",
        st.message
    );

    // Truncated and wrong-typed JSON: JSON error bodies.
    for (body, needle) in [
        (
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "ab"#,
            "$",
        ),
        (r#"{"resourceSpans": "nope"}"#, "resourceSpans"),
        (
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc", "spanId": "eee19b7ec3c1b174"}]}]}]}"#,
            "traceId",
        ),
    ] {
        let r = post(&url, "application/json", false, body.as_bytes().to_vec()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.expect("json error body");
        assert_eq!(v["code"], 3);
        assert!(
            v["message"].as_str().expect("message").contains(needle),
            "{v}"
        );
    }

    // Wrong content type and encoding.
    assert_eq!(
        post(&url, "text/plain", false, b"hi".to_vec())
            .await
            .status(),
        415
    );
    let r = post_encoded(&url, "br", vec![1, 2, 3]).await;
    assert_eq!(r.status(), 415);

    // Over the size limit.
    let (code, st) =
        rpc_status(post(&url, "application/x-protobuf", false, vec![0; 5 << 20]).await).await;
    assert_eq!(code, 413);
    assert_eq!(st.code, tonic::Code::ResourceExhausted as i32);

    // A gzip bomb: 64 MiB of zeros in a few KiB.
    let (code, st) =
        rpc_status(post(&url, "application/x-protobuf", true, vec![0; 64 << 20]).await).await;
    assert_eq!(code, 413);
    assert!(
        st.message.contains("inflates past the limit"),
        "{}",
        st.message
    );

    // A zstd bomb, and a good zstd body.
    let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 3).expect("zstd");
    let (code, st) = rpc_status(post_encoded(&url, "zstd", bomb).await).await;
    assert_eq!(code, 413);
    assert!(
        st.message.contains("zstd body inflates past the limit"),
        "{}",
        st.message
    );
    let good = traces_request("zstd", vec![span([9u8; 16], 1, "zstd")]).encode_to_vec();
    let r = post_encoded(&url, "zstd", zstd::encode_all(&good[..], 3).expect("zstd")).await;
    assert_eq!(r.status(), 200);

    // Broken gzip.
    let r = post_encoded(&url, "gzip", vec![0x1f, 0x8b, 8, 0, 1, 2, 3]).await;
    assert_eq!(r.status(), 400);

    // Wrong method.
    let r = reqwest::get(&url).await.expect("GET");
    assert_eq!(r.status(), 405);

    // Partial success: the bad spans are named and counted, the good one is stored.
    let good = [7u8; 16];
    let mut bad_len = span(good, 2, "bad");
    bad_len.trace_id = vec![1; 5];
    let mut no_start = span(good, 3, "bad");
    no_start.start_time_unix_nano = 0;
    let mut future = span(good, 4, "bad");
    future.start_time_unix_nano = now_ns() + 86_400_000_000_000;
    let req = traces_request(
        "partial",
        vec![span(good, 1, "ok"), bad_len, no_start, future],
    );
    let r = post(&url, "application/x-protobuf", false, req.encode_to_vec()).await;
    assert_eq!(r.status(), 200);
    let resp =
        ExportTraceServiceResponse::decode(r.bytes().await.expect("body")).expect("response");
    let ps = resp.partial_success.expect("partial_success");
    assert_eq!(ps.rejected_spans, 3);
    assert!(
        ps.error_message
            .contains("trace_id must be 16 bytes, got 5"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("start_time_unix_nano is 0"),
        "{}",
        ps.error_message
    );
    assert!(
        ps.error_message.contains("too far in the future"),
        "{}",
        ps.error_message
    );

    // Every item invalid: 400.
    let mut zero = span([0; 16], 1, "zero");
    zero.trace_id = vec![0; 16];
    let r = post(
        &url,
        "application/x-protobuf",
        false,
        traces_request("zero", vec![zero]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);

    // Invalid UTF-8 in a string field (span name = field 5 of Span).
    let mut raw = traces_request("utf8", vec![span([9; 16], 9, "ABCD")]).encode_to_vec();
    let pos = raw
        .windows(4)
        .position(|w| w == b"ABCD")
        .expect("name bytes");
    raw[pos] = 0xff;
    let r = post(&url, "application/x-protobuf", false, raw).await;
    assert_eq!(r.status(), 400);

    // The server still works and the good span of the partial request is there.
    let t = poll(Duration::from_secs(10), "partial trace", || async {
        let (s, b) = get_json(&c.api_url(&format!("/api/v1/traces/{}", hex::encode(good)))).await;
        (s == 200).then_some(b)
    })
    .await;
    assert_eq!(t["spans"].as_array().expect("spans").len(), 1);
    let r = post(
        &c.http_url("/v1/logs"),
        "application/x-protobuf",
        true,
        logs("after", &["stillserving"]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let resp = ExportLogsServiceResponse::decode(r.bytes().await.expect("body")).expect("response");
    assert!(resp.partial_success.is_none());

    // The refusals are counted.
    let m = c.metrics().await;
    assert!(
        m.contains(
            r#"lookout_receiver_requests_total{outcome="invalid",signal="traces",transport="http"}"#
        ),
        "{m}"
    );
    assert_eq!(
        lookout_tests::metric_value(
            &m,
            r#"lookout_receiver_dropped_items_total{reason="invalid",signal="traces",transport="http"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_statuses_follow_otlp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]);
    let mut client = TraceServiceClient::connect(c.grpc_url())
        .await
        .expect("connect")
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20);

    // Gzip works and partial success is reported.
    let mut bad = span([3; 16], 2, "bad");
    bad.span_id = vec![1; 3];
    let resp = client
        .export(traces_request("grpc", vec![span([3; 16], 1, "ok"), bad]))
        .await
        .expect("export")
        .into_inner();
    let ps = resp.partial_success.expect("partial_success");
    assert_eq!(ps.rejected_spans, 1);
    assert!(
        ps.error_message.contains("span_id must be 8 bytes, got 3"),
        "{}",
        ps.error_message
    );

    // Every span invalid: INVALID_ARGUMENT.
    let e = client
        .export(traces_request("grpc", vec![span([0; 16], 1, "zero")]))
        .await
        .expect_err("must fail");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // Oversize: RESOURCE_EXHAUSTED (not OUT_OF_RANGE), without RetryInfo.
    let mut big = span([4; 16], 1, "big");
    big.attributes = (0..600)
        .map(|i| kv(&format!("k{i}"), &"x".repeat(10_000)))
        .collect();
    let mut plain = TraceServiceClient::connect(c.grpc_url())
        .await
        .expect("connect")
        .max_encoding_message_size(64 << 20);
    let e = plain
        .export(traces_request("grpc", vec![big]))
        .await
        .expect_err("must fail");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    use tonic_types::StatusExt;
    assert!(e.get_details_retry_info().is_none());

    // Garbage bytes on the wire: INVALID_ARGUMENT (tonic says INTERNAL).
    let garbage = raw_grpc_call(&c, vec![0xff; 32]).await;
    assert_eq!(garbage, Some("3".to_string()));

    // Still serving.
    client
        .export(traces_request("grpc", vec![span([5; 16], 1, "ok")]))
        .await
        .expect("export after errors");
}

/// POST a hand-framed gRPC request; returns the grpc-status.
async fn raw_grpc_call(c: &Collector, payload: Vec<u8>) -> Option<String> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = client
        .post(format!(
            "{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            c.grpc_url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame)
        .send()
        .await
        .expect("grpc POST");
    r.headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &[]);
    for (path, status, needle) in [
        ("/api/v1/logs?q=body:(unclosed", 400, "parameter `q`"),
        ("/api/v1/logs?q=nosuchfield:x", 400, "parameter `q`"),
        ("/api/v1/logs?limit=0", 400, "parameter `limit`"),
        ("/api/v1/logs?limit=many", 400, "parameter `limit`"),
        ("/api/v1/logs?from=yesterday", 400, "parameter `from`"),
        ("/api/v1/logs?from=1h&to=2h", 400, "after"),
        ("/api/v1/logs?severity=loud", 400, "parameter `severity`"),
        ("/api/v1/logs?serivce=x", 400, "unknown parameter `serivce`"),
        (
            "/api/v1/traces?min_duration=fast",
            400,
            "parameter `min_duration`",
        ),
        ("/api/v1/traces?status=ok", 400, "parameter `status`"),
        ("/api/v1/traces/xyz", 400, "32 hex"),
        (
            "/api/v1/traces/0123456789abcdef0123456789abcdef",
            404,
            "not found",
        ),
        ("/api/v1/nothing", 404, "no such endpoint"),
    ] {
        let (s, b) = get_json(&c.api_url(path)).await;
        assert_eq!(s, status, "{path}: {b}");
        let msg = b["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no error field in {b}"));
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let (s, b) = get_json(&c.api_url("/api/v1/logs?q=*&limit=5")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["total"], 0);
    let (s, b) = get_json(&c.api_url("/api/v1/cluster")).await;
    assert_eq!((s, &b["enabled"]), (200, &serde_json::json!(false)), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_passes_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &["--demo"]);
    // Let the demo produce traffic of every signal.
    poll(Duration::from_secs(15), "demo traffic indexed", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/logs?service=payment&limit=1")).await;
        (b["total"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    let text = c.metrics().await;
    assert!(
        text.contains(
            r#"lookout_receiver_accepted_items_total{signal="logs",transport="internal"}"#
        ),
        "{text}"
    );
    assert!(text.contains("lookout_wal_bytes"), "{text}");
    let (code, printed) = promtool_check_metrics(&text);
    assert_eq!(code, Some(0), "promtool check metrics failed:\n{printed}");
}
