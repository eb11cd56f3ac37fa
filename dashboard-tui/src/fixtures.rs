//! Sample answers of the query API for render tests and benchmarks.

use lookout_proto::api::*;
use serde_json::{json, Map, Value};

fn attrs(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

const T0: u64 = 1_764_532_800_000_000_000; // 2025-11-30T20:00:00Z

fn rfc3339(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn red(rate: f64, err: f64, p50: f64) -> RedStats {
    RedStats {
        requests: (rate * 300.0) as u64,
        errors: (rate * 300.0 * err) as u64,
        request_rate: rate,
        error_rate: err,
        p50_ms: p50,
        p90_ms: p50 * 1.8,
        p95_ms: p50 * 2.5,
        p99_ms: p50 * 6.0,
        rate_history: (0..30)
            .map(|i| rate * (1.0 + (i % 7) as f64 / 10.0))
            .collect(),
        exemplar_trace_ids: vec![],
        latency_buckets: Vec::new(),
    }
}

/// Four services of a small shop.
pub fn services() -> ServicesResponse {
    let svc = |name: &str, rate: f64, err: f64, p50: f64, ops: &[&str]| ServiceStats {
        signals: vec!["traces".into()],
        last_seen_unix_nano: 0,
        service: name.into(),
        stats: red(rate, err, p50),
        operations: ops
            .iter()
            .map(|o| OperationStats {
                operation: (*o).into(),
                stats: red(rate / ops.len() as f64, err, p50),
            })
            .collect(),
    };
    ServicesResponse {
        window_s: 300,
        services: vec![
            svc("checkout", 42.5, 0.031, 95.0, &["POST /checkout"]),
            svc(
                "frontend",
                120.0,
                0.0,
                12.0,
                &["GET /", "GET /cart", "GET /checkout"],
            ),
            svc("inventory", 85.0, 0.0, 4.0, &["GET /stock/{sku}"]),
            svc("payment", 40.1, 0.08, 75.0, &["POST /pay"]),
        ],
        warnings: Vec::new(),
    }
}

/// `n` log records, newest first, every third with a trace id, one with a hostile body.
pub fn logs(n: usize) -> LogsResponse {
    let sev = ["info", "debug", "warn", "error"];
    let logs = (0..n)
        .map(|i| {
            let ts = T0 - i as u64 * 250_000_000;
            let s = sev[i % sev.len()];
            LogEntry {
                timestamp: rfc3339(ts),
                timestamp_unix_nano: ts,
                service: ["frontend", "checkout", "payment"][i % 3].into(),
                severity: s.into(),
                severity_number: match s {
                    "debug" => 5,
                    "info" => 9,
                    "warn" => 13,
                    _ => 17,
                },
                severity_text: s.to_uppercase(),
                body: if i == 2 {
                    "multi\nline\u{1b}[2J body with an escape\tand a tab".into()
                } else {
                    format!("order {i} placed for user-{}", i * 7 % 100)
                },
                attributes: attrs(&[("enduser.id", json!(format!("user-{i}"))), ("n", json!(i))]),
                resource: attrs(&[
                    ("service.name", json!("frontend")),
                    ("host.name", json!("web-1")),
                ]),
                trace_id: (i % 3 == 0).then(|| format!("{:032x}", i + 1)),
                span_id: (i % 3 == 0).then(|| format!("{:016x}", i + 1)),
            }
        })
        .collect();
    LogsResponse {
        total: (n * 10) as u64,
        logs,
        took_ms: 1.5,
        warnings: Vec::new(),
    }
}

/// Trace search results.
pub fn traces(n: usize) -> TracesResponse {
    TracesResponse {
        traces: (0..n)
            .map(|i| TraceSummary {
                trace_id: format!("{:032x}", i + 1),
                root_service: "frontend".into(),
                root_operation: ["GET /checkout", "GET /cart"][i % 2].into(),
                start: rfc3339(T0 - i as u64 * 1_000_000_000),
                start_unix_nano: T0 - i as u64 * 1_000_000_000,
                duration_ns: 20_000_000 + (i as u64 % 10) * 30_000_000,
                span_count: 9,
                error_count: u64::from(i % 4 == 0),
                services: vec!["checkout".into(), "frontend".into(), "payment".into()],
                state: ["complete", "open", "updated_late"][i % 3].into(),
            })
            .collect(),
        took_ms: 2.0,
        warnings: Vec::new(),
    }
}

/// An assembled trace of `n` spans: a root, and below it a tree of fan-out 4 across five
/// services; one clock-skew warning, one error span, a critical path down the first branch.
pub fn trace(n: usize) -> TraceResponse {
    let services = ["frontend", "checkout", "payment", "inventory", "shipping"];
    let total: u64 = 1_000_000_000;
    // Parents in breadth-first numbering, then emitted in depth-first order.
    let n = n.max(1);
    let children = |i: usize| (1..=4).map(move |k| i * 4 + k).filter(move |&c| c < n);
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![(0usize, 0u32)];
    while let Some((i, d)) = stack.pop() {
        order.push((i, d));
        let mut kids: Vec<usize> = children(i).collect();
        kids.reverse();
        stack.extend(kids.into_iter().map(|c| (c, d + 1)));
    }
    let span_id = |i: usize| format!("{:016x}", i + 1);
    let offset = |i: usize, d: u32| (i as u64 * 7_919) % (total / 2) / u64::from(d + 1);
    let spans: Vec<SpanView> = order
        .iter()
        .map(|&(i, d)| {
            let off = if i == 0 { 0 } else { offset(i, d) };
            let dur = if i == 0 {
                total
            } else {
                (total - off) / (u64::from(d) + 2)
            };
            SpanView {
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                span_id: span_id(i),
                parent_span_id: (i > 0).then(|| span_id((i - 1) / 4)),
                depth: d,
                offset_ns: off,
                skew_adjustment_ns: if i == 3 { 1_500_000 } else { 0 },
                critical: i == 0 || i == 1 || i == 5,
                service: services[i % services.len()].into(),
                operation: format!("op-{i} /api/items/{{id}}"),
                kind: if i == 0 { "server" } else { "client" }.into(),
                start: rfc3339(T0 + off),
                start_unix_nano: T0 + off,
                duration_ns: dur,
                status: if i == 2 { "error" } else { "unset" }.into(),
                status_message: if i == 2 {
                    "card declined".into()
                } else {
                    String::new()
                },
                attributes: attrs(&[("http.route", json!("/api/items/{id}")), ("i", json!(i))]),
                resource: attrs(&[("service.name", json!(services[i % services.len()]))]),
                events: if i == 2 {
                    vec![SpanEvent {
                        timestamp: rfc3339(T0 + off + 1_000_000),
                        name: "exception".into(),
                        attributes: attrs(&[("exception.message", json!("declined"))]),
                    }]
                } else {
                    vec![]
                },
                links: vec![],
            }
        })
        .collect();
    TraceResponse {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        state: "complete".into(),
        root_span_id: Some(span_id(0)),
        start: rfc3339(T0),
        start_unix_nano: T0,
        duration_ns: total,
        span_count: n as u64,
        error_count: u64::from(n > 2),
        orphan_count: 0,
        services: services.iter().map(|s| s.to_string()).collect(),
        critical_path: vec![
            CriticalSegment {
                span_id: span_id(0),
                start_offset_ns: 0,
                end_offset_ns: 1_000_000,
            },
            CriticalSegment {
                span_id: span_id(1.min(n - 1)),
                start_offset_ns: 1_000_000,
                end_offset_ns: 400_000_000,
            },
            CriticalSegment {
                span_id: span_id(0),
                start_offset_ns: 400_000_000,
                end_offset_ns: total,
            },
        ],
        warnings: vec![TraceWarning {
            kind: "clock_skew".into(),
            span_id: Some(span_id(3.min(n - 1))),
            message: "shifted by +1.5ms: the child started before its parent on another host"
                .into(),
        }],
        spans,
    }
}

/// Two rules, one firing with a delivered and a failed notification.
pub fn alerts() -> AlertsResponse {
    let labels = |svc: &str| {
        [
            ("alertname", "CheckoutSlow"),
            ("service", svc),
            ("severity", "critical"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    AlertsResponse {
        rules: vec![
            AlertRuleStatus {
                name: "CheckoutSlow".into(),
                signal: "latency_p99".into(),
                service: Some("checkout".into()),
                operation: None,
                op: ">".into(),
                threshold: 500.0,
                window: "1m".into(),
                for_: "30s".into(),
                receivers: vec!["oncall".into()],
                state: "firing".into(),
                instances: vec![AlertInstanceStatus {
                    labels: labels("checkout"),
                    state: "firing".into(),
                    value: Some(812.5),
                    since: rfc3339(T0),
                    firing_since: Some(rfc3339(T0)),
                    fingerprint: "a1b2c3d4e5f60718".into(),
                    notifications: vec![
                        NotificationStatus {
                            receiver: "oncall".into(),
                            status: "firing".into(),
                            queued_at: rfc3339(T0),
                            result: "delivered".into(),
                            attempts: 1,
                            error: None,
                        },
                        NotificationStatus {
                            receiver: "chat".into(),
                            status: "firing".into(),
                            queued_at: rfc3339(T0),
                            result: "failed".into(),
                            attempts: 5,
                            error: Some("HTTP 500 from the receiver".into()),
                        },
                    ],
                }],
            },
            AlertRuleStatus {
                name: "ErrorsHigh".into(),
                signal: "error_rate".into(),
                service: None,
                operation: None,
                op: ">".into(),
                threshold: 0.05,
                window: "5m".into(),
                for_: "1m".into(),
                receivers: vec!["oncall".into()],
                state: "inactive".into(),
                instances: vec![],
            },
        ],
        receivers: vec![ReceiverStatus {
            name: "oncall".into(),
            kind: "webhook".into(),
            delivered: 3,
            failed: 0,
            pending: 0,
        }],
        warnings: Vec::new(),
    }
}

/// The shop's service graph.
pub fn dependencies() -> DependenciesResponse {
    let e = |a: &str, b: &str, calls: u64, errors: u64| DependencyEdge {
        caller: a.into(),
        callee: b.into(),
        calls,
        errors,
        avg_ms: 42.0,
        p95_ms: 120.0,
        inferred: false,
    };
    DependenciesResponse {
        edges: vec![
            e("frontend", "checkout", 1200, 30),
            e("checkout", "payment", 1150, 92),
            e("checkout", "inventory", 2400, 0),
        ],
        warnings: Vec::new(),
    }
}

/// The collector's `/metrics` at scrape `n` (one a second): two services' OTLP metrics
/// (a counter growing 5/s and 1/s, a gauge, a histogram) and two self-metrics.
pub fn exposition(n: u64) -> crate::state::metrics::Exposition {
    let text = format!(
        r#"# HELP http_server_requests_total Requests served.
# TYPE http_server_requests_total counter
http_server_requests_total{{job="checkout",instance="c-1",http_route="/pay"}} {pay}
http_server_requests_total{{job="frontend",instance="f-1",http_route="/cart"}} {cart}
# HELP process_memory_usage_bytes Resident memory.
# TYPE process_memory_usage_bytes gauge
process_memory_usage_bytes{{job="checkout",instance="c-1"}} {mem}
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{{job="checkout",le="0.1"}} {n}
http_server_request_duration_seconds_bucket{{job="checkout",le="+Inf"}} {n}
http_server_request_duration_seconds_sum{{job="checkout"}} {n}
http_server_request_duration_seconds_count{{job="checkout"}} {n}
# TYPE lookout_received_items counter
lookout_received_items_total{{signal="metrics",transport="grpc"}} {n}
# TYPE lookout_wal_bytes gauge
lookout_wal_bytes 4096
"#,
        pay = 1000 + 5 * n,
        cart = 1000 + n,
        mem = 50_000_000 + (n % 5) * 1_000_000,
    );
    crate::state::metrics::parse_exposition(&text).unwrap_or_default()
}

/// A cluster of three members and a gateway, as member `c1` sees it: `c2` did not
/// answer for its own figures, partition 15 is between owners.
pub fn cluster() -> ClusterResponse {
    let member =
        |node: &str, partitions: Vec<u32>, figures: Option<(u64, u64, u64)>| ClusterMember {
            node: node.into(),
            api: format!("http://{node}.lan:7070"),
            consume: true,
            partitions,
            lag_messages: figures.map(|f| f.0),
            consumed_messages: figures.map(|f| f.1),
            redelivered_messages: figures.map(|f| f.2),
        };
    ClusterResponse {
        enabled: true,
        node: "c1".into(),
        partitions: 16,
        connected: true,
        members: vec![
            member("c0", vec![0, 3, 6, 9, 12], Some((0, 48_213, 0))),
            member("c1", vec![1, 4, 7, 10, 13], Some((1_250, 51_002, 17))),
            member("c2", vec![2, 5, 8, 11, 14], None),
            ClusterMember {
                node: "gw".into(),
                api: "http://10.0.0.9:7070".into(),
                consume: false,
                ..ClusterMember::default()
            },
        ],
        unowned: vec![15],
        alerts_leader: Some("c0".into()),
        warnings: vec!["node c2 did not answer: timed out".into()],
    }
}
