//! Alerting against the real collector and a real HTTP receiver: latency and error-rate
//! rules fire and resolve, webhook bodies are Alertmanager v4, a failing receiver gets
//! exactly one notification per change, state survives a restart, SIGHUP reloads rules.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::KeyValue;
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode as SpanStatus;
use lookout_proto::otlp::trace::v1::{Span, SpanFlags, Status};
use lookout_tests::otlp::{kv, now_ns, resource, traces_request};
use lookout_tests::{get_json, metric_value, poll, write_config, Collector};
use prost::Message;
use serde_json::Value;

/// What the receiver saw: every attempt, with the status it answered.
#[derive(Default)]
struct Seen {
    attempts: Vec<(u16, Option<String>, Value)>,
    fail_first: usize,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub(crate) async fn start(fail_first: usize) -> Receiver {
        let seen = Arc::new(Mutex::new(Seen {
            fail_first,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await });
        Receiver { url, seen }
    }

    /// Bodies answered with 200.
    pub(crate) fn delivered(&self) -> Vec<Value> {
        let s = self.seen.lock().expect("lock");
        s.attempts
            .iter()
            .filter(|(c, _, _)| *c == 200)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    fn attempts(&self) -> usize {
        self.seen.lock().expect("lock").attempts.len()
    }

    /// Wait up to 15 s for a delivered body with `status` (`firing`, `resolved`).
    pub(crate) async fn wait_for(&self, status: &str) -> Value {
        let what = format!("{status} notification");
        poll(Duration::from_secs(15), &what, || async {
            self.delivered().into_iter().find(|b| b["status"] == status)
        })
        .await
    }
}

async fn hook(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let mut s = seen.lock().expect("lock");
    let code = if s.attempts.len() < s.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    s.attempts.push((code.as_u16(), auth, v));
    code
}

/// `n` spans of `service` lasting `ms` each; every `error_every`-th has status error.
/// Spans of other kinds than server are children of a local parent, as an SDK marks
/// them, so they are not requests.
fn spans(
    service: &str,
    kind: SpanKind,
    n: u64,
    ms: u64,
    error_every: u64,
) -> ExportTraceServiceRequest {
    let now = now_ns();
    let seed: u64 = rand::random();
    let spans = (0..n)
        .map(|i| {
            let mut trace = [0u8; 16];
            trace[..8].copy_from_slice(&seed.to_be_bytes());
            trace[8..].copy_from_slice(&(i + 1).to_be_bytes());
            Span {
                trace_id: trace.to_vec(),
                span_id: (i + 1).to_be_bytes().to_vec(),
                parent_span_id: if kind == SpanKind::Server {
                    Vec::new()
                } else {
                    vec![0xaa; 8]
                },
                flags: SpanFlags::ContextHasIsRemoteMask as u32,
                name: "POST /pay".into(),
                kind: kind as i32,
                start_time_unix_nano: now - ms * 1_000_000,
                end_time_unix_nano: now,
                status: (error_every > 0 && i % error_every == 0).then(|| Status {
                    code: SpanStatus::Error as i32,
                    message: "boom".into(),
                }),
                ..Default::default()
            }
        })
        .collect();
    traces_request(service, spans)
}

async fn send(c: &Collector, req: &ExportTraceServiceRequest) {
    c.post_ok("/v1/traces", req.encode_to_vec()).await;
}

/// Checks every field of the Alertmanager webhook format version 4.
fn assert_v4(b: &Value) {
    let obj = b.as_object().expect("object");
    for k in [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ] {
        assert!(obj.contains_key(k), "missing {k}: {b}");
    }
    assert_eq!(b["version"], "4");
    assert!(b["groupKey"]
        .as_str()
        .expect("groupKey")
        .starts_with("{}:{"));
    assert!(b["truncatedAlerts"].is_u64());
    assert!(matches!(b["status"].as_str(), Some("firing" | "resolved")));
    assert!(b["externalURL"]
        .as_str()
        .expect("url")
        .starts_with("http://"));
    for m in ["groupLabels", "commonLabels", "commonAnnotations"] {
        assert!(
            b[m].as_object().expect(m).values().all(Value::is_string),
            "{m}"
        );
    }
    for a in b["alerts"].as_array().expect("alerts") {
        for k in [
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        ] {
            assert!(a.get(k).is_some(), "alert missing {k}: {a}");
        }
        assert!(matches!(a["status"].as_str(), Some("firing" | "resolved")));
        assert!(a["labels"]
            .as_object()
            .expect("labels")
            .values()
            .all(Value::is_string));
        assert!(a["annotations"]
            .as_object()
            .expect("ann")
            .values()
            .all(Value::is_string));
        for t in ["startsAt", "endsAt"] {
            let s = a[t].as_str().expect(t);
            assert!(
                s.len() >= 20 && s.ends_with('Z') && &s[10..11] == "T",
                "{t}: {s}"
            );
        }
        assert_eq!(a["fingerprint"].as_str().expect("fp").len(), 16);
    }
}

fn config(hook: &str, hook2: &str) -> String {
    format!(
        r#"
[alerting]
evaluation_interval = "200ms"

[[alerts]]
name = "PayP99"
service = "pay-svc"
signal = "latency_p99"
op = ">"
threshold = 300
window = "1m"
for = "1s"
severity = "critical"
summary = "p99 latency of {{{{service}}}} is {{{{value}}}} ms (threshold {{{{threshold}}}})"
description = "team {{{{labels.team}}}}"
labels = {{ team = "payments" }}
receivers = ["oncall"]

[[alerts]]
name = "Errors"
signal = "error_rate"
threshold = 0.2
window = "1m"
receivers = ["errors"]

[receivers.oncall]
url = "{hook}"
headers = {{ Authorization = "Bearer s3cret" }}
initial_backoff = "100ms"
allowed_networks = ["127.0.0.0/8"]

[receivers.errors]
url = "{hook2}"
initial_backoff = "100ms"
allowed_networks = ["127.0.0.0/8"]
group_by = ["alertname", "service"]
"#
    )
}

fn rule<'a>(alerts: &'a Value, name: &str) -> &'a Value {
    alerts["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("rule {name} missing: {alerts}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_error_rules_fire_resolve_and_survive_restart_and_reload() {
    let oncall = Receiver::start(2).await;
    let errors = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &config(&oncall.url, &errors.url));
    let data = dir.path().join("data");
    let c = Collector::start(&data, &["--config", cfg.to_str().expect("path")]);

    // Slow requests of pay-svc (no errors); error spans only on err-svc; ok-svc is slow
    // but healthy, and client error spans of ok-svc are not requests.
    let started = Instant::now();
    send(&c, &spans("pay-svc", SpanKind::Server, 50, 500, 0)).await;
    send(&c, &spans("err-svc", SpanKind::Server, 20, 5, 2)).await;
    send(&c, &spans("ok-svc", SpanKind::Server, 20, 900, 0)).await;
    send(&c, &spans("ok-svc", SpanKind::Client, 20, 5, 1)).await;

    // Fires within for (1 s) + one evaluation interval (+ 2 retries of the receiver).
    let firing = oncall.wait_for("firing").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "fired after {took:?}");
    assert_v4(&firing);
    assert_eq!(firing["receiver"], "oncall");
    assert_eq!(firing["groupLabels"]["alertname"], "PayP99");
    let a = &firing["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "PayP99");
    assert_eq!(a["labels"]["service"], "pay-svc");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["team"], "payments");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    let summary = a["annotations"]["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("p99 latency of pay-svc is 5"),
        "{summary}"
    );
    assert!(summary.ends_with("ms (threshold 300)"), "{summary}");
    assert_eq!(a["annotations"]["description"], "team payments");
    assert!(!a["annotations"]["trace_ids"]
        .as_str()
        .expect("trace ids")
        .is_empty());
    let query = a["annotations"]["query"].as_str().expect("query link");
    assert!(
        query.contains("/api/v1/traces?service=pay-svc") && query.contains("min_duration=300ms"),
        "{query}"
    );
    // The query link answers, with the slow traces.
    let (status, _) = get_json(query).await;
    assert_eq!(status, 200);
    {
        let s = oncall.seen.lock().expect("lock");
        assert_eq!(s.attempts[0].0, 500);
        assert_eq!(s.attempts[1].0, 500);
        assert_eq!(s.attempts[2].0, 200);
        assert_eq!(
            s.attempts[0].2, s.attempts[2].2,
            "retries carry the same body"
        );
        assert!(s
            .attempts
            .iter()
            .all(|(_, auth, _)| auth.as_deref() == Some("Bearer s3cret")));
    }

    // Error rate: err-svc only (ok-svc's slow spans and client errors do not count).
    let err_body = poll(
        Duration::from_secs(10),
        "error-rate notification",
        || async { errors.delivered().into_iter().next() },
    )
    .await;
    assert_v4(&err_body);
    let err_alerts = err_body["alerts"].as_array().expect("alerts");
    assert_eq!(err_alerts.len(), 1, "{err_body}");
    assert_eq!(err_alerts[0]["labels"]["service"], "err-svc");
    assert_eq!(err_alerts[0]["annotations"]["value"], "0.5");

    let (_, alerts) = get_json(&c.api_url("/api/v1/alerts")).await;
    let pay = rule(&alerts, "PayP99");
    assert_eq!(pay["state"], "firing", "{alerts}");
    assert_eq!(pay["instances"][0]["state"], "firing", "{alerts}");
    let note = &pay["instances"][0]["notifications"][0];
    assert_eq!(note["result"], "delivered", "{alerts}");
    assert_eq!(note["attempts"], 3);
    let errs = rule(&alerts, "Errors");
    let states: Vec<(&str, &str)> = errs["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["labels"]["service"].as_str().unwrap_or(""),
                i["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(states.contains(&("err-svc", "firing")), "{states:?}");
    assert!(states.contains(&("ok-svc", "inactive")), "{states:?}");
    assert!(states.contains(&("pay-svc", "inactive")), "{states:?}");

    // Crash and restart: the firing alerts are remembered and not notified again.
    c.kill9();
    let c = Collector::start(&data, &["--config", cfg.to_str().expect("path")]);
    let (_, alerts) = get_json(&c.api_url("/api/v1/alerts")).await;
    assert_eq!(
        rule(&alerts, "PayP99")["instances"][0]["state"],
        "firing",
        "{alerts}"
    );
    // Recovery: many fast requests bring p99 under the threshold.
    send(&c, &spans("pay-svc", SpanKind::Server, 10_000, 2, 0)).await;
    let resolved = oncall.wait_for("resolved").await;
    assert_v4(&resolved);
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let firing_count = oncall
        .delivered()
        .iter()
        .filter(|b| b["status"] == "firing")
        .count();
    assert_eq!(firing_count, 1, "exactly one firing notification");
    assert_eq!(
        oncall.attempts(),
        4,
        "2 failures, the firing and the resolved"
    );
    let metrics = c.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "lookout_alert_notifications_total{receiver=\"oncall\",result=\"delivered\"}"
        ),
        Some(1.0),
        "after the restart only the resolved one was sent"
    );

    // SIGHUP with a broken file: refused, the rules stay.
    std::fs::write(&cfg, "[[alerts]]\nname = \"X\"\nsignal = \"latency_p98\"\n").expect("write");
    c.signal("HUP");
    poll(Duration::from_secs(10), "refused reload logged", || async {
        c.output().contains("config reload refused").then_some(())
    })
    .await;
    assert!(
        c.output().contains("latency_p98"),
        "the log names the problem"
    );
    let (_, alerts) = get_json(&c.api_url("/api/v1/alerts")).await;
    assert_eq!(alerts["rules"].as_array().map(Vec::len), Some(2));
    // A valid file: the new rule set applies, state of kept rules stays.
    let mut text = config(&oncall.url, &errors.url);
    text.push_str("\n[[alerts]]\nname = \"Quiet\"\nservice = \"pay-svc\"\nsignal = \"request_rate\"\nop = \"<\"\nthreshold = 0.001\nreceivers = [\"oncall\"]\n");
    std::fs::write(&cfg, text).expect("write");
    c.signal("HUP");
    let alerts = poll(Duration::from_secs(10), "reloaded rules", || async {
        let (_, a) = get_json(&c.api_url("/api/v1/alerts")).await;
        (a["rules"].as_array().map(Vec::len) == Some(3)).then_some(a)
    })
    .await;
    assert_eq!(
        rule(&alerts, "PayP99")["instances"][0]["state"],
        "resolved",
        "{alerts}"
    );
}

fn metrics_request(service: &str, depth: f64, processed: f64) -> Vec<u8> {
    use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use lookout_proto::otlp::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    let now = now_ns();
    let point = |v: f64, attrs: Vec<KeyValue>| NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: now - 60_000_000_000,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(service),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "queue.depth".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![
                                point(depth, vec![kv("queue", "orders")]),
                                point(depth * 10.0, vec![kv("queue", "audit")]),
                            ],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "jobs.processed".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![point(processed, vec![])],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_rules_fire_on_otlp_metrics() {
    let hook = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(
        dir.path(),
        &format!(
            r#"
[alerting]
evaluation_interval = "200ms"

[[alerts]]
name = "Backlog"
metric = "queue_depth"
matchers = {{ queue = "orders" }}
aggregation = "max"
op = ">="
threshold = 1000
summary = "{{{{service}}}} has {{{{value}}}} orders waiting"
receivers = ["hook"]

[[alerts]]
name = "Busy"
metric = "jobs_processed_total"
aggregation = "increase"
threshold = 200
window = "1m"
receivers = ["hook"]

[receivers.hook]
url = "{}"
group_by = ["..."]
allowed_networks = ["127.0.0.0/8"]
"#,
            hook.url
        ),
    );
    // Below threshold for "orders" (the "audit" queue is above it but does not match).
    c.post_ok("/v1/metrics", metrics_request("worker", 500.0, 100.0))
        .await;
    poll(Duration::from_secs(10), "metric instances", || async {
        let (_, a) = get_json(&c.api_url("/api/v1/alerts")).await;
        (rule(&a, "Backlog")["instances"][0]["value"] == 500.0).then_some(())
    })
    .await;
    assert!(hook.delivered().is_empty());
    c.post_ok("/v1/metrics", metrics_request("worker", 1500.0, 400.0))
        .await;
    let bodies = poll(Duration::from_secs(10), "two firing alerts", || async {
        let d = hook.delivered();
        (d.len() >= 2).then_some(d)
    })
    .await;
    let mut names: Vec<String> = bodies
        .iter()
        .map(|b| {
            assert_v4(b);
            b["alerts"][0]["labels"]["alertname"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["Backlog", "Busy"]);
    let backlog = bodies
        .iter()
        .find(|b| b["alerts"][0]["labels"]["alertname"] == "Backlog")
        .expect("backlog");
    assert_eq!(backlog["alerts"][0]["labels"]["service"], "worker");
    assert_eq!(
        backlog["alerts"][0]["annotations"]["summary"],
        "worker has 1500 orders waiting"
    );
    let busy = bodies
        .iter()
        .find(|b| b["alerts"][0]["labels"]["alertname"] == "Busy")
        .expect("busy");
    assert_eq!(busy["alerts"][0]["annotations"]["value"], "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_fixed_by_a_reload_gets_the_firing_alert_it_missed() {
    let hook = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Loopback without allowed_networks: the request-forgery guard refuses it.
    let refused = config(&hook.url, &hook.url).replace(
        "allowed_networks = [\"127.0.0.0/8\"]\n\n[receivers.errors]",
        "\n[receivers.errors]",
    );
    let cfg = write_config(dir.path(), &refused);
    // --check-config says so before anything runs.
    let check = std::process::Command::new(lookout_tests::bin("lookout-collector"))
        .args(["--config", cfg.to_str().expect("path"), "--check-config"])
        .output()
        .expect("run --check-config");
    assert!(check.status.success(), "{check:?}");
    let warned = String::from_utf8_lossy(&check.stderr);
    assert!(
        warned.contains("warning: receivers.oncall.url: 127.0.0.1 is in a loopback range"),
        "{warned}"
    );
    assert!(!warned.contains("receivers.errors"), "{warned}");

    let c = Collector::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().expect("path")],
    );
    send(&c, &spans("pay-svc", SpanKind::Server, 50, 500, 0)).await;
    let note = |a: &Value| a["rules"][0]["instances"][0]["notifications"][0].clone();
    let failed = poll(Duration::from_secs(15), "failed notification", || async {
        let (_, a) = get_json(&c.api_url("/api/v1/alerts")).await;
        (note(&a)["result"] == "failed").then_some(a)
    })
    .await;
    assert_eq!(note(&failed)["attempts"], 1, "{failed}");
    assert_eq!(hook.attempts(), 0);

    // Fixed and reloaded: the firing alert is sent now, not after repeat_interval (4 h).
    std::fs::write(&cfg, config(&hook.url, &hook.url)).expect("write");
    c.signal("HUP");
    let firing = hook.wait_for("firing").await;
    assert_eq!(firing["alerts"][0]["labels"]["alertname"], "PayP99");
    let (_, after) = get_json(&c.api_url("/api/v1/alerts")).await;
    assert_eq!(note(&after)["result"], "delivered", "{after}");
    // The receiver's counts survive the reload: one failed, one delivered.
    let oncall = after["receivers"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "oncall"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (oncall["failed"].clone(), oncall["delivered"].clone()),
        (1.into(), 1.into()),
        "{after}"
    );
    // Exactly once: a second reload with nothing changed sends nothing more.
    c.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.delivered().len(), 1);
}
