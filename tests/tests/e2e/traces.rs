//! Trace assembly, completeness, search, RED metrics, service graph and the Jaeger API,
//! against the real collector fed over OTLP/gRPC and OTLP/HTTP.

use std::time::Duration;

use lookout_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use lookout_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status};
use lookout_tests::otlp::{kv, now_ns};
use lookout_tests::{get_json, metric_value, poll, write_config, Collector, FAST_TRACES};
use prost::Message;
use serde_json::Value;

const MS: u64 = 1_000_000;

struct S {
    service: &'static str,
    host: &'static str,
    span: Span,
}

#[allow(clippy::too_many_arguments)]
fn s(
    service: &'static str,
    host: &'static str,
    trace: [u8; 16],
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: SpanKind,
    start: u64,
    end: u64,
) -> S {
    S {
        service,
        host,
        span: Span {
            trace_id: trace.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent
                .map(|p| vec![0, 0, 0, 0, 0, 0, 0, p])
                .unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        },
    }
}

fn request(spans: Vec<S>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: spans
            .into_iter()
            .map(|x| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", x.service), kv("host.name", x.host)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![x.span],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

async fn send_http(c: &Collector, req: &ExportTraceServiceRequest) {
    c.post_ok("/v1/traces", req.encode_to_vec()).await;
}

async fn send_grpc(c: &Collector, req: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(c.grpc_url())
        .await
        .expect("connect");
    let resp = client.export(req).await.expect("export").into_inner();
    assert!(resp.partial_success.is_none(), "{resp:?}");
}

fn span_by(t: &Value, id: u8) -> &Value {
    let hex = format!("{:016x}", id);
    t["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["span_id"] == hex.as_str())
        .unwrap_or_else(|| panic!("span {hex} missing: {t}"))
}

async fn search(c: &Collector, query: &str) -> Vec<String> {
    let (status, b) = get_json(&c.api_url(&format!("/api/v1/traces?{query}"))).await;
    assert_eq!(status, 200, "{b}");
    b["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| t["trace_id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_services_shuffled_two_transports_skew_and_a_late_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);
    let trace: [u8; 16] = *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36";
    let tid = hex::encode(trace);
    let t = now_ns() - 3_000 * MS;
    let at = |ms: u64| t + ms * MS;
    use SpanKind::*;
    let mut a = s(
        "frontend",
        "h1",
        trace,
        1,
        None,
        "GET /checkout",
        Server,
        at(0),
        at(200),
    );
    a.span.attributes.push(kv("http.route", "/checkout"));
    let mut c_srv = s(
        "checkout",
        "h2",
        trace,
        3,
        Some(2),
        "POST /checkout",
        Server,
        at(15),
        at(185),
    );
    c_srv.span.attributes.push(kv("user.id", "u-7"));
    // payment's clock is 500 ms behind: it reports 25..115 as -475..-385.
    let e = s(
        "payment",
        "h3",
        trace,
        5,
        Some(4),
        "POST /charge",
        Server,
        t - 475 * MS,
        t - 385 * MS,
    );
    let mut g = s(
        "inventory",
        "h4",
        trace,
        7,
        Some(6),
        "POST /reserve",
        Server,
        at(130),
        at(170),
    );
    g.span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "out of stock".into(),
    });
    let spans = vec![
        g,
        s(
            "email",
            "h5",
            trace,
            9,
            Some(8),
            "send receipt",
            Consumer,
            at(250),
            at(400),
        ),
        e,
        s(
            "checkout",
            "h2",
            trace,
            4,
            Some(3),
            "charge",
            Client,
            at(20),
            at(120),
        ),
        a,
        s(
            "checkout",
            "h2",
            trace,
            8,
            Some(3),
            "order.placed",
            Producer,
            at(180),
            at(182),
        ),
        c_srv,
        s(
            "frontend",
            "h1",
            trace,
            2,
            Some(1),
            "POST checkout",
            Client,
            at(10),
            at(190),
        ),
        s(
            "checkout",
            "h2",
            trace,
            6,
            Some(3),
            "reserve",
            Client,
            at(125),
            at(175),
        ),
    ];
    // Shuffled order, split over both transports, one span per request for a few.
    let mut grpc_part = Vec::new();
    let mut http_part = Vec::new();
    for (i, x) in spans.into_iter().enumerate() {
        if i % 2 == 0 {
            grpc_part.push(x);
        } else {
            http_part.push(x);
        }
    }
    let last_grpc = grpc_part.pop().expect("span");
    send_grpc(&c, request(grpc_part)).await;
    send_http(&c, &request(http_part)).await;
    send_grpc(&c, request(vec![last_grpc])).await;

    // Open while spans may still arrive, then complete after the 1 s idle window.
    let (_, first) = get_json(&c.api_url(&format!("/api/v1/traces/{tid}"))).await;
    if first.get("state").is_some() {
        assert_ne!(first["state"], "updated_late", "{first}");
    }
    let t1 = poll(Duration::from_secs(15), "complete trace", || async {
        let (st, b) = get_json(&c.api_url(&format!("/api/v1/traces/{tid}"))).await;
        (st == 200 && b["state"] == "complete").then_some(b)
    })
    .await;
    assert_eq!(t1["span_count"], 9, "{t1}");
    assert_eq!(t1["root_span_id"], "0000000000000001", "{t1}");
    assert_eq!(t1["orphan_count"], 0, "{t1}");
    assert_eq!(t1["error_count"], 1, "{t1}");
    assert_eq!(
        t1["services"],
        serde_json::json!(["checkout", "email", "frontend", "inventory", "payment"])
    );
    // The whole trace: from the root's start to the email consumer's end.
    assert_eq!(t1["duration_ns"], 400 * MS, "{t1}");
    assert_eq!(t1["spans"][0]["span_id"], "0000000000000001");
    let depth = |id| span_by(&t1, id)["depth"].as_u64().expect("depth");
    assert_eq!(
        (depth(1), depth(2), depth(3), depth(4), depth(5), depth(9)),
        (0, 1, 2, 3, 4, 4)
    );
    assert_eq!(span_by(&t1, 3)["offset_ns"], 15 * MS);
    // Clock skew: payment's span moved into its parent (Jaeger's rule: centred in the
    // 100 ms parent, 90 ms long → starts 5 ms after it), and a warning says so.
    let pay = span_by(&t1, 5);
    assert_eq!(pay["offset_ns"], 25 * MS, "{pay}");
    assert_eq!(pay["skew_adjustment_ns"], 500 * MS, "{pay}");
    let warnings = t1["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w["kind"] == "clock_skew" && w["span_id"] == "0000000000000005"),
        "{warnings:?}"
    );
    // Critical path: starts at the root, covers the root's whole window.
    let cp = t1["critical_path"].as_array().expect("critical path");
    assert!(!cp.is_empty());
    assert_eq!(cp[0]["span_id"], "0000000000000001");
    assert_eq!(cp[0]["start_offset_ns"], 0);
    assert!(span_by(&t1, 1)["critical"].as_bool().expect("critical"));
    assert!(span_by(&t1, 3)["critical"].as_bool().expect("critical"));

    // Search by the whole trace: no single span lasts 350 ms, the trace does.
    assert!(search(&c, "min_duration=350ms").await.contains(&tid));
    assert!(!search(&c, "max_duration=350ms").await.contains(&tid));
    assert!(search(&c, "service=inventory&status=error")
        .await
        .contains(&tid));
    assert!(!search(&c, "service=nobody").await.contains(&tid));
    // The attribute is on a checkout span; the service filter names another service.
    assert!(search(&c, "service=email&attr.user.id=u-7")
        .await
        .contains(&tid));
    assert!(search(
        &c,
        "attr.host.name=h3&service=frontend&operation=GET%20/checkout"
    )
    .await
    .contains(&tid));
    assert!(!search(&c, "attr.user.id=u-8").await.contains(&tid));
    let (_, found) = get_json(&c.api_url("/api/v1/traces?min_duration=350ms")).await;
    let summary = &found["traces"][0];
    assert_eq!(summary["root_service"], "frontend", "{found}");
    assert_eq!(summary["root_operation"], "GET /checkout", "{found}");
    assert_eq!(summary["span_count"], 9, "{found}");
    assert_eq!(summary["state"], "complete", "{found}");

    // A late span after completion: the trace is re-assembled and marked updated_late.
    send_http(
        &c,
        &request(vec![s(
            "email",
            "h5",
            trace,
            10,
            Some(9),
            "render",
            Internal,
            at(260),
            at(300),
        )]),
    )
    .await;
    let t2 = poll(Duration::from_secs(15), "updated trace", || async {
        let (_, b) = get_json(&c.api_url(&format!("/api/v1/traces/{tid}"))).await;
        (b["state"] == "updated_late" && b["span_count"] == 10).then_some(b)
    })
    .await;
    assert_eq!(span_by(&t2, 10)["depth"], 5, "{t2}");
    let (_, found) = poll(Duration::from_secs(15), "updated summary", || async {
        let (s, b) = get_json(&c.api_url("/api/v1/traces?service=email")).await;
        (b["traces"][0]["span_count"] == 10).then_some((s, b))
    })
    .await;
    assert_eq!(found["traces"].as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found["traces"][0]["state"], "updated_late");
    let m = c.metrics().await;
    assert_eq!(
        metric_value(&m, "lookout_traces_late_spans_total"),
        Some(1.0)
    );

    // Service graph: client/server and producer/consumer pairs.
    let (_, deps) = get_json(&c.api_url("/api/v1/dependencies")).await;
    let edge = |from: &str, to: &str| -> Value {
        deps["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["caller"] == from && e["callee"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("edge {from}->{to} missing: {deps}"))
    };
    assert_eq!(edge("frontend", "checkout")["calls"], 1);
    assert_eq!(edge("checkout", "payment")["calls"], 1);
    assert_eq!(edge("checkout", "inventory")["errors"], 1);
    assert_eq!(edge("checkout", "email")["calls"], 1);

    // Jaeger API: the same trace in Jaeger's model, services listed.
    let (st, j) = get_json(&c.api_url(&format!("/jaeger/api/traces/{tid}"))).await;
    assert_eq!(st, 200, "{j}");
    assert_eq!(j["data"][0]["spans"].as_array().map(Vec::len), Some(10));
    assert_eq!(
        j["data"][0]["processes"].as_object().map(|p| p.len()),
        Some(5)
    );
    let (_, svcs) = get_json(&c.api_url("/jaeger/api/services")).await;
    assert!(svcs["data"]
        .as_array()
        .expect("services")
        .iter()
        .any(|s| s == "payment"));
    let (_, ops) = get_json(&c.api_url("/jaeger/api/services/checkout/operations")).await;
    assert!(
        ops["data"]
            .as_array()
            .expect("ops")
            .iter()
            .any(|o| o == "charge"),
        "{ops}"
    );
    let (st, js) = get_json(&c.api_url(
        "/jaeger/api/traces?service=inventory&tags=%7B%22user.id%22%3A%22u-7%22%7D&lookback=1h",
    ))
    .await;
    assert_eq!(st, 200, "{js}");
    assert_eq!(js["data"][0]["traceID"], tid.as_str(), "{js}");
    let (st, bad) = get_json(&c.api_url("/jaeger/api/traces?minDuration=fast")).await;
    assert_eq!(st, 400);
    assert!(bad["errors"][0]["msg"]
        .as_str()
        .expect("msg")
        .contains("minDuration"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_figures_match_the_sent_spans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    // 200 server spans of 1..=200 ms, every 10th an error, ids in the paths.
    let now = now_ns();
    let mut spans = Vec::new();
    for i in 1..=200u64 {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&i.to_be_bytes());
        trace[15] = 1;
        let mut x = s(
            "red-svc",
            "h1",
            trace,
            1,
            None,
            &format!("GET /items/{}", 1000 + i),
            SpanKind::Server,
            now - i * MS,
            now,
        );
        if i % 10 == 0 {
            x.span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            });
        }
        spans.push(x);
    }
    // Client spans under a local parent do not count as requests.
    let mut trace = [9u8; 16];
    trace[0] = 2;
    let mut client = s(
        "red-svc",
        "h1",
        trace,
        2,
        Some(1),
        "GET /x",
        SpanKind::Client,
        now - MS,
        now,
    );
    client.span.flags = SpanFlags::ContextHasIsRemoteMask as u32;
    spans.push(client);
    let (grpc_half, http_half) = spans.split_at(100);
    let to_req = |v: &[S]| {
        request(
            v.iter()
                .map(|x| S {
                    service: x.service,
                    host: x.host,
                    span: x.span.clone(),
                })
                .collect(),
        )
    };
    send_grpc(&c, to_req(grpc_half)).await;
    send_http(&c, &to_req(http_half)).await;

    let svc = poll(Duration::from_secs(15), "RED figures", || async {
        let (_, b) = get_json(&c.api_url("/api/v1/services?window=5m")).await;
        b["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == "red-svc").cloned())
            .filter(|s| s["requests"] == 200)
    })
    .await;
    assert_eq!(svc["errors"], 20, "{svc}");
    assert!((svc["error_rate"].as_f64().expect("rate") - 0.1).abs() < 1e-9);
    let p = |k: &str| svc[k].as_f64().expect("percentile");
    // Exact p50 is 100 ms and p99 198 ms; histogram precision is a few percent.
    assert!((p("p50_ms") - 100.0).abs() <= 100.0 * 0.05, "{svc}");
    assert!((p("p99_ms") - 198.0).abs() <= 198.0 * 0.05, "{svc}");
    let ops = svc["operations"].as_array().expect("ops");
    assert_eq!(ops.len(), 1, "ids in paths are normalised: {svc}");
    assert_eq!(ops[0]["operation"], "GET /items/{id}");

    let m = c.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "lookout_span_calls_total{service=\"red-svc\",operation=\"GET /items/{id}\",status_code=\"STATUS_CODE_ERROR\"}"
        ),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "lookout_span_calls_total{service=\"red-svc\",operation=\"GET /items/{id}\",status_code=\"STATUS_CODE_UNSET\"}"
        ),
        Some(180.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "lookout_span_duration_seconds_count{service=\"red-svc\",operation=\"GET /items/{id}\"}"
        ),
        Some(200.0)
    );
    let (st, bad) = get_json(&c.api_url("/api/v1/services?window=forever")).await;
    assert_eq!(st, 400, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_traces_are_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);
    let trace = [7u8; 16];
    let tid = hex::encode(trace);
    let t = now_ns() - 1_000 * MS;
    use SpanKind::*;
    let spans = vec![
        // A 2-cycle, a self parent, a missing parent, a duplicate id, a span ending ten
        // years ahead (refused: past `limits.max_future_skew`), a span of 30 days ending
        // now (refused: longer than `limits.max_span_duration`, 7 days).
        s("a", "h", trace, 1, Some(2), "x", Server, t, t + MS),
        s("a", "h", trace, 2, Some(1), "y", Server, t, t + MS),
        s("a", "h", trace, 3, Some(3), "self", Server, t, t + MS),
        s("a", "h", trace, 4, Some(99), "orphan", Server, t, t + MS),
        s(
            "a",
            "h",
            trace,
            4,
            Some(99),
            "orphan again",
            Server,
            t,
            t + MS,
        ),
        s("a", "h", trace, 5, None, "root", Server, t, t + 500 * MS),
        s(
            "a",
            "h",
            trace,
            6,
            Some(5),
            "ten years",
            Server,
            t,
            t + 10 * 365 * 86_400_000 * MS,
        ),
        s(
            "a",
            "h",
            trace,
            7,
            Some(5),
            "thirty days",
            Server,
            t - 30 * 86_400_000 * MS,
            t,
        ),
    ];
    let r = lookout_tests::post_protobuf(
        &reqwest::Client::new(),
        &c.http_url("/v1/traces"),
        request(spans).encode_to_vec(),
    )
    .await
    .expect("POST");
    assert_eq!(r.status(), 200);
    let resp =
        ExportTraceServiceResponse::decode(r.bytes().await.expect("body")).expect("response");
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    for reason in [
        "end_time_unix_nano is too far in the future",
        "span lasts 30d, longer than limits.max_span_duration (7d)",
    ] {
        assert!(
            partial.error_message.contains(reason),
            "{}",
            partial.error_message
        );
    }
    let tr = poll(Duration::from_secs(15), "assembled", || async {
        let (st, b) = get_json(&c.api_url(&format!("/api/v1/traces/{tid}"))).await;
        (st == 200 && b["span_count"] == 5).then_some(b)
    })
    .await;
    let kinds: Vec<&str> = tr["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter_map(|w| w["kind"].as_str())
        .collect();
    for k in [
        "parent_cycle",
        "self_parent",
        "missing_parent",
        "duplicate_span_id",
    ] {
        assert!(kinds.contains(&k), "{k} missing in {kinds:?}");
    }
    assert_eq!(tr["root_span_id"], "0000000000000005");
    let m = c.metrics().await;
    assert!(
        metric_value(
            &m,
            "lookout_traces_assembly_warnings_total{kind=\"missing_parent\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    // The collector still serves.
    let (st, _) = get_json(&c.api_url("/api/v1/traces?limit=5")).await;
    assert_eq!(st, 200);
    let (st, _) = get_json(&c.api_url("/api/v1/traces/zz")).await;
    assert_eq!(st, 400);
    let (st, _) = get_json(&c.api_url(&format!("/api/v1/traces/{}", "0".repeat(31) + "1"))).await;
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_traces_survive_kill_9_and_completed_ones_are_not_counted_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), FAST_TRACES);
    let data = dir.path().join("data");
    let args = ["--config", cfg.to_str().expect("utf-8 path")];
    let c = Collector::start(&data, &args);
    let t = now_ns() - 500 * MS;
    let done = [0x11u8; 16];
    let open = [0x22u8; 16];
    use SpanKind::*;
    // A span of the open trace, of service b.
    let open_span = |id: u8, parent: Option<u8>, name: &str, kind: SpanKind, end: u64| {
        request(vec![s("b", "h", open, id, parent, name, kind, t, end)])
    };
    // The open trace starts first, so the replay after the crash starts before the
    // completed trace's spans and must not count them twice.
    send_http(&c, &open_span(1, None, "root", Server, t + 10 * MS)).await;
    send_grpc(
        &c,
        request(vec![
            s("a", "h", done, 1, None, "root", Server, t, t + 10 * MS),
            s("a", "h", done, 2, Some(1), "child", Internal, t, t + 5 * MS),
            s("a", "h", done, 3, Some(1), "child", Internal, t, t + 5 * MS),
        ]),
    )
    .await;
    let q = format!("/api/v1/traces/{}", hex::encode(done));
    // Keep the other trace open (a span every 300 ms) until the first is searchable.
    let mut next_id = 2u8;
    for _ in 0..60 {
        send_http(
            &c,
            &open_span(next_id, Some(1), "child", Internal, t + 5 * MS),
        )
        .await;
        next_id += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, b) = get_json(&c.api_url(&q)).await;
        if b["state"] == "complete" && search(&c, "service=a").await.len() == 1 {
            break;
        }
    }
    let (_, b) = get_json(&c.api_url(&format!("/api/v1/traces/{}", hex::encode(open)))).await;
    assert_eq!(b["state"], "open", "{b}");
    let open_spans = u64::from(next_id - 1);
    // Acknowledged, still open: crash now.
    c.kill9();

    let c = Collector::start(&data, &args);
    let found = poll(
        Duration::from_secs(20),
        "open trace completed after restart",
        || async {
            let (_, b) = get_json(&c.api_url("/api/v1/traces?service=b")).await;
            (b["traces"].as_array().map(Vec::len) == Some(1)).then_some(b)
        },
    )
    .await;
    assert_eq!(found["traces"][0]["span_count"], open_spans, "{found}");
    assert_eq!(found["traces"][0]["state"], "complete", "{found}");
    let (_, a) = get_json(&c.api_url("/api/v1/traces?service=a")).await;
    assert_eq!(a["traces"].as_array().map(Vec::len), Some(1), "{a}");
    assert_eq!(a["traces"][0]["span_count"], 3, "{a}");
    let (_, t1) = get_json(&c.api_url(&q)).await;
    assert_eq!(t1["span_count"], 3, "{t1}");
}
