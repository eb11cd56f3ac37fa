//! `/metrics` for Prometheus: OTLP metrics sent by the OpenTelemetry Rust SDK (delta and
//! cumulative temporality) appear under their converted names with `job`, `instance` and
//! `target_info`; and a real Prometheus server scrapes the collector (negotiating
//! OpenMetrics) and answers queries for a RED metric, an OTLP metric and a RED exemplar.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lookout_tests::{poll, promtool_check_metrics, Collector, FAST_TRACES};

use crate::util::flush_and_shut_down;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::metrics::{SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One sample of an exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse the sample lines of a text exposition (label values with `\"`, `\\`, `\n`).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).expect("sample name");
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = i + 1;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line}");
                        let mut v = String::new();
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next().map(|x| x.1) {
                                    Some('n') => v.push('\n'),
                                    Some(c) => v.push(c),
                                    None => break,
                                },
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), v);
                    }
                    c => key.push(c),
                }
            }
            rest = &body[end..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| match v {
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                v => v.parse().ok(),
            })
            .unwrap_or_else(|| panic!("no value in {line}"));
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Value of the sample `name` whose labels include every pair of `want`.
fn find(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(c: &Collector, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(c.api_url("/metrics"));
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await.expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (ct, r.text().await.expect("body"))
}

fn meter_provider(c: &Collector, instance: &str, temporality: Temporality) -> SdkMeterProvider {
    let exporter = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(c.grpc_url())
        .with_temporality(temporality)
        .build()
        .expect("metric exporter");
    SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("e2e-prom")
                .with_attributes([
                    KeyValue::new("service.namespace", "shop"),
                    KeyValue::new("service.instance.id", instance.to_string()),
                    KeyValue::new("deployment.environment", "test"),
                ])
                .build(),
        )
        .build()
}

/// Flush `p` off the runtime's workers (the SDK blocks on its own threads).
async fn flush(p: &SdkMeterProvider) {
    let p = p.clone();
    tokio::task::spawn_blocking(move || p.force_flush().expect("flush metrics"))
        .await
        .expect("flush task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_on_the_metrics_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let providers = [
        ("delta-1", meter_provider(&c, "delta-1", Temporality::Delta)),
        (
            "cumulative-1",
            meter_provider(&c, "cumulative-1", Temporality::Cumulative),
        ),
    ];
    struct Instruments {
        requests: opentelemetry::metrics::Counter<u64>,
        queue: opentelemetry::metrics::UpDownCounter<i64>,
        temperature: opentelemetry::metrics::Gauge<f64>,
        duration: opentelemetry::metrics::Histogram<f64>,
    }
    let instruments: Vec<Instruments> = providers
        .iter()
        .map(|(_, p)| {
            let m = p.meter("lookout-e2e");
            Instruments {
                requests: m
                    .u64_counter("e2e.requests")
                    .with_unit("{request}")
                    .with_description("Requests handled.")
                    .build(),
                queue: m
                    .i64_up_down_counter("e2e.queue.depth")
                    .with_unit("{item}")
                    .build(),
                temperature: m.f64_gauge("e2e.temperature").with_unit("Cel").build(),
                duration: m
                    .f64_histogram("e2e.request.duration")
                    .with_unit("ms")
                    .with_boundaries(vec![10.0, 100.0, 1000.0])
                    .build(),
            }
        })
        .collect();
    let route = [KeyValue::new("http.route", "/pay")];
    // Two export rounds: the delta provider sends 3 then 4, the cumulative one 3 then 7.
    for i in &instruments {
        i.requests.add(3, &route);
        i.queue.add(5, &[]);
        i.queue.add(-2, &[]);
        i.temperature.record(21.5, &[]);
        for v in [5.0, 50.0, 500.0] {
            i.duration.record(v, &route);
        }
    }
    for (_, p) in &providers {
        flush(p).await;
    }
    for i in &instruments {
        i.requests.add(4, &route);
        i.queue.add(1, &[]);
        i.temperature.record(22.0, &[]);
        i.duration.record(5000.0, &route);
    }
    for (_, p) in &providers {
        flush(p).await;
    }

    let text = poll(Duration::from_secs(20), "both export rounds", || async {
        let (_, text) = scrape(&c, None).await;
        let s = parse(&text);
        let done = ["delta-1", "cumulative-1"].iter().all(|inst| {
            find(&s, "e2e_requests_total", &[("instance", inst)]) == Some(7.0)
                && find(
                    &s,
                    "e2e_request_duration_milliseconds_count",
                    &[("instance", inst)],
                ) == Some(4.0)
        });
        done.then_some(text)
    })
    .await;
    let s = parse(&text);
    for inst in ["delta-1", "cumulative-1"] {
        let base = [
            ("job", "shop/e2e-prom"),
            ("instance", inst),
            ("otel_scope_name", "lookout-e2e"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            base.iter().chain(extra).copied().collect()
        };
        let route = with(&[("http_route", "/pay")]);
        assert_eq!(
            find(&s, "e2e_requests_total", &route),
            Some(7.0),
            "{inst}\n{text}"
        );
        assert_eq!(
            find(&s, "e2e_queue_depth", &base),
            Some(4.0),
            "{inst}\n{text}"
        );
        assert_eq!(
            find(&s, "e2e_temperature_celsius", &base),
            Some(22.0),
            "{inst}\n{text}"
        );
        for (le, want) in [("10", 1.0), ("100", 2.0), ("1000", 3.0), ("+Inf", 4.0)] {
            let mut l = route.clone();
            l.push(("le", le));
            assert_eq!(
                find(&s, "e2e_request_duration_milliseconds_bucket", &l),
                Some(want),
                "{inst} le={le}\n{text}"
            );
        }
        assert_eq!(
            find(&s, "e2e_request_duration_milliseconds_sum", &route),
            Some(5555.0),
            "{inst}\n{text}"
        );
        assert_eq!(
            find(
                &s,
                "target_info",
                &[
                    ("job", "shop/e2e-prom"),
                    ("instance", inst),
                    ("deployment_environment", "test"),
                    ("telemetry_sdk_language", "rust"),
                ]
            ),
            Some(1.0),
            "{inst}\n{text}"
        );
    }
    // One HELP/TYPE per family, with the OTLP description.
    assert_eq!(
        text.matches("# TYPE e2e_requests_total counter\n").count(),
        1
    );
    assert!(
        text.contains("# HELP e2e_requests_total Requests handled.\n"),
        "{text}"
    );
    assert_eq!(text.matches("# TYPE e2e_queue_depth gauge\n").count(), 1);
    assert_eq!(text.matches("# TYPE target_info gauge\n").count(), 1);
    assert!(!text.contains("service_name="), "{text}");
    assert!(find(&s, "lookout_metrics_series", &[]).is_some_and(|v| v >= 8.0));
    assert!(find(
        &s,
        "lookout_metrics_points_received_total",
        &[("type", "sum")]
    )
    .is_some_and(|v| v >= 4.0));
    assert_promtool_parses(&text);

    // OpenMetrics when asked for.
    let (ct, om) = scrape(&c, Some(OPENMETRICS)).await;
    assert_eq!(
        ct,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.contains("# TYPE e2e_requests counter\n"), "{om}");
    assert!(om.contains("# TYPE target info\n"), "{om}");
    assert!(
        om.contains("# UNIT e2e_request_duration_milliseconds milliseconds\n"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let (ct, _) = scrape(&c, Some("*/*")).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");

    for (_, p) in providers {
        tokio::task::spawn_blocking(move || p.shutdown().expect("shutdown meter"))
            .await
            .expect("shutdown task");
    }
}

/// `promtool check metrics` must parse the exposition. Lint problems are allowed: OTLP
/// names chosen by services (such as `_milliseconds`) are valid but not what the linter
/// likes.
fn assert_promtool_parses(text: &str) {
    let (code, msg) = promtool_check_metrics(text);
    // 0: clean; 3: lint problems only; anything else: the exposition did not parse.
    assert!(
        matches!(code, Some(0 | 3)),
        "promtool check metrics failed: {msg}\n{text}"
    );
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: lookout\n    honor_labels: true\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>`'s `data`, when the call succeeded.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<serde_json::Value> {
        let qs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let url = format!("{}/api/v1/{path}?{}", self.url, qs.join("&"));
        let r = reqwest::get(&url).await.ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The samples of an instant query, once it has any.
    async fn query(&self, q: &str) -> serde_json::Value {
        poll(Duration::from_secs(60), q, || async {
            let data = self.api("query", &[("query", q)]).await?;
            let result = data["result"].as_array()?;
            (!result.is_empty()).then(|| data["result"].clone())
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode a query parameter value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_collector() {
    if !Path::new(PROMETHEUS).exists() {
        eprintln!(
            "skipping: {PROMETHEUS} is missing (Debian package `prometheus`; .ci/run installs it)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);

    // A server span (RED) and an OTLP counter.
    let spans = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(c.grpc_url())
        .build()
        .expect("span exporter");
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(Resource::builder().with_service_name("e2e-red").build())
        .build();
    let tracer = tracer_provider.tracer("lookout-e2e");
    let mut span = tracer
        .span_builder("GET /prom")
        .with_kind(SpanKind::Server)
        .start(&tracer);
    let trace_id = span.span_context().trace_id().to_string();
    std::thread::sleep(Duration::from_millis(20));
    span.end();
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(
            MetricExporter::builder()
                .with_tonic()
                .with_endpoint(c.grpc_url())
                .build()
                .expect("metric exporter"),
        )
        .with_resource(Resource::builder().with_service_name("e2e-scraped").build())
        .build();
    meter_provider
        .meter("lookout-e2e")
        .u64_counter("e2e.scraped")
        .build()
        .add(5, &[KeyValue::new("kind", "test")]);
    flush_and_shut_down(tracer_provider, None, meter_provider).await;
    poll(
        Duration::from_secs(20),
        "RED and OTLP series on /metrics",
        || async {
            let (_, text) = scrape(&c, None).await;
            let s = parse(&text);
            (find(&s, "lookout_span_calls_total", &[("service", "e2e-red")]).is_some()
                && find(&s, "e2e_scraped_total", &[("job", "e2e-scraped")]).is_some())
            .then_some(())
        },
    )
    .await;

    let prom = Prometheus::start(dir.path(), c.api);
    let red = prom
        .query("lookout_span_calls_total{service=\"e2e-red\"}")
        .await;
    assert_eq!(red[0]["metric"]["operation"], "GET /prom", "{red}");
    assert_eq!(red[0]["value"][1], "1", "{red}");
    let otlp = prom.query("e2e_scraped_total{job=\"e2e-scraped\"}").await;
    assert_eq!(otlp[0]["metric"]["kind"], "test", "{otlp}");
    assert_eq!(
        otlp[0]["metric"]["otel_scope_name"], "lookout-e2e",
        "{otlp}"
    );
    assert_eq!(otlp[0]["value"][1], "5", "{otlp}");
    let info = prom
        .query("target_info{job=\"e2e-scraped\",telemetry_sdk_language=\"rust\"}")
        .await;
    assert_eq!(info[0]["value"][1], "1", "{info}");

    // The scrape is healthy, and it was OpenMetrics: the RED exemplar (the span's trace)
    // is stored.
    let targets = prom.api("targets", &[]).await.expect("targets");
    let t = &targets["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}\n{}", prom.log());
    assert_eq!(t["lastError"], "", "{t}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (start, end) = ((now - 600).to_string(), (now + 600).to_string());
    let exemplars = poll(Duration::from_secs(30), "a RED exemplar", || async {
        let data = prom
            .api(
                "query_exemplars",
                &[
                    (
                        "query",
                        "lookout_span_duration_seconds_bucket{service=\"e2e-red\"}",
                    ),
                    ("start", &start),
                    ("end", &end),
                ],
            )
            .await?;
        (!data.as_array()?.is_empty()).then_some(data)
    })
    .await;
    assert_eq!(
        exemplars[0]["exemplars"][0]["labels"]["trace_id"],
        trace_id.as_str(),
        "{exemplars}"
    );
}
