//! The real `lookout-tui` in tmux against a real collector fed by the load generator:
//! keys are sent with `tmux send-keys` and the screen read with `tmux capture-pane`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lookout_tests::otlp::{kv, log_request, now_ns, resource};
use lookout_tests::{bin, free_addr, get_json, poll, post_acknowledged, Collector, FAST_TRACES};
use prost::Message;

/// A tmux server of its own (`-L`), so tests run in parallel; killed on drop.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    /// Run `command` in a new detached session of `width`x`height`.
    pub(crate) fn start(command: &str, width: u16, height: u16) -> Tmux {
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "lookout-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket };
        let out = t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "tui",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed (is tmux installed? .ci/run installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Esc is a key of its own, not the start of an Alt sequence.
        t.run(&["set-option", "-s", "escape-time", "0"]);
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux (is tmux installed? .ci/run installs it)")
    }

    pub(crate) fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "tui", k]);
            assert!(out.status.success(), "send-keys {k}: {out:?}");
        }
    }

    /// Type text literally.
    fn text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", "tui", "-l", text]);
        assert!(out.status.success(), "send-keys -l {text}: {out:?}");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    /// Wait until the screen shows every one of `needles`; returns the screen.
    pub(crate) fn wait_for(&self, needles: &[&str], what: &str) -> String {
        self.wait_until(|s| needles.iter().all(|n| s.contains(n)), what)
    }

    /// Wait until the dashboard exited with status 0 (`what` says on which occasion) and
    /// left the alternate screen.
    pub(crate) fn wait_for_clean_exit(&self, what: &str) {
        let s = self.wait_for(&["lookout-tui-exited-0"], what);
        assert!(
            !s.contains("1:Services"),
            "the alternate screen is left:\n{s}"
        );
    }

    /// Wait until `ok` holds for the screen; returns the screen.
    fn wait_until(&self, ok: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// `pgrep`/`pkill -f` pattern of the dashboard talking to `api`, anchored on the binary
/// so that the shell around it is not matched.
fn tui_process(api: &str) -> String {
    format!(
        "^{} --collector http://{api} ",
        bin("lookout-tui").display()
    )
}

/// The dashboard in an 80x24 tmux, talking to a collector not there (yet): the tmux and
/// the collector's API address.
fn tui_without_collector(dir: &Path) -> (Tmux, SocketAddr) {
    let api = free_addr();
    let tmux = Tmux::start(&tui_command(&api.to_string(), dir), 80, 24);
    (tmux, api)
}

pub(crate) fn tui_command(api: &str, dir: &Path) -> String {
    format!(
        "{} --collector http://{api} --refresh 500ms --log-file {}; echo lookout-tui-exited-$?; sleep 60",
        bin("lookout-tui").display(),
        dir.join("tui.log").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_in_tmux_searches_logs_opens_a_trace_shows_help_and_quits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start_with_config(dir.path(), FAST_TRACES);
    let out = Command::new(bin("lookout-loadgen"))
        .args(["--endpoint", &c.grpc_url(), "--signal", "all"])
        .args([
            "--rate",
            "300",
            "--duration",
            "3s",
            "--batch",
            "50",
            "--concurrency",
            "1",
            "--error-rate",
            "0.3",
        ])
        .output()
        .expect("run lookout-loadgen");
    assert!(out.status.success(), "loadgen: {out:?}");
    poll(Duration::from_secs(30), "error logs and traces", || async {
        let (_, l) = get_json(&c.api_url("/api/v1/logs?q=severity:error&limit=1")).await;
        let (_, t) = get_json(&c.api_url("/api/v1/traces?limit=1")).await;
        (l["total"].as_u64().unwrap_or(0) > 0
            && t["traces"].as_array().is_some_and(|a| !a.is_empty()))
        .then_some(())
    })
    .await;

    let api = c.api.to_string();
    let tmux = Tmux::start(&tui_command(&api, dir.path()), 120, 40);
    let s = tmux.wait_for(
        &["1:Services", "frontend", "checkout", "● "],
        "the services view",
    );
    assert!(s.contains("p99"), "{s}");

    // Logs: search for errors, open one, jump to its trace.
    tmux.keys(&["2"]);
    tmux.wait_for(&["query:", "matches"], "the logs view");
    // A query the collector refuses: its message is shown inline, the rows stay.
    tmux.keys(&["/"]);
    tmux.text("\"unclosed");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["parameter `q`: Syntax Error", "matches"],
        "the query error inline",
    );
    tmux.keys(&["/", "C-u"]);
    tmux.text("severity:error");
    tmux.keys(&["Enter"]);
    tmux.wait_until(
        |s| {
            s.contains("query: severity:error")
                && s.contains(" error ")
                && !s.contains(" info ")
                && !s.contains("loading…")
        },
        "only error logs",
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["Log record", "trace_id", "(t opens the trace)"],
        "the log detail",
    );
    tmux.keys(&["t"]);
    let s = tmux.wait_for(
        &["spans", "errors", "services", "span  "],
        "the trace waterfall",
    );
    assert!(s.contains('█') || s.contains('▒'), "bars are drawn:\n{s}");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        &["Span (Esc closes", "kind", "logs of this span"],
        "the span detail",
    );

    // Help, then back, then quit: the terminal is restored and the exit code is 0.
    tmux.keys(&["?"]);
    tmux.wait_for(&["Keys", "Tab / Shift-Tab", "q / ^C"], "the help overlay");
    tmux.keys(&["Escape"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmux.screen().contains("Tab / Shift-Tab") {
        assert!(Instant::now() < deadline, "Esc closes the help");
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux.keys(&["Escape"]);
    tmux.wait_until(
        |s| !s.contains("Span (Esc closes"),
        "the span detail to close",
    );
    tmux.keys(&["Escape"]);
    tmux.wait_for(&["search:", "traces", "duration bar"], "the traces list");
    tmux.keys(&["q"]);
    tmux.wait_for_clean_exit("lookout-tui to exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_waits_for_an_unreachable_collector_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmux, api) = tui_without_collector(dir.path());
    tmux.wait_for(
        &["Cannot reach the collector", "✕ down (", "Retrying every"],
        "the unreachable state",
    );
    // Keys still work while the collector is down.
    tmux.keys(&["4"]);
    tmux.wait_for(
        &["Cannot reach the collector", "j/k rule"],
        "the alerts view, still down",
    );
    tmux.keys(&["1"]);
    let c = Collector::start_full(free_addr(), free_addr(), api, &dir.path().join("data"), &[]);
    tmux.wait_for(
        &["● ", "No services yet"],
        "the services view once the collector is up",
    );
    drop(c);
    // SIGTERM: the terminal is restored and the exit code is 0.
    let pattern = tui_process(&api.to_string());
    let killed = Command::new("pkill")
        .args(["-TERM", "-f", &pattern])
        .status()
        .expect("pkill");
    assert!(killed.success(), "lookout-tui was running");
    tmux.wait_for_clean_exit("lookout-tui to exit on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_logs_refresh_without_follow_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let send = |body: &str| {
        let req = log_request("refresher", [body.to_string()]).encode_to_vec();
        let (client, url) = (client.clone(), c.http_url("/v1/logs"));
        async move { assert!(post_acknowledged(&client, &url, req).await) }
    };
    let searchable = |what: &'static str| {
        let url = c.api_url(&format!("/api/v1/logs?q={what}&limit=1"));
        async move {
            poll(Duration::from_secs(30), what, || async {
                let (_, l) = get_json(&url).await;
                (l["total"].as_u64().unwrap_or(0) > 0).then_some(())
            })
            .await
        }
    };
    send("firstrecord").await;
    searchable("firstrecord").await;
    let tmux = Tmux::start(&tui_command(&c.api.to_string(), dir.path()), 100, 30);
    tmux.wait_for(&["1:Services"], "the dashboard");
    tmux.keys(&["2"]);
    tmux.wait_for(&["firstrecord", "1 of 1 matches"], "the logs view");
    // Not following: a record sent now shows up by itself, at the top, without moving the
    // row under the cursor.
    send("secondrecord").await;
    searchable("secondrecord").await;
    let s = tmux.wait_for(&["2 of 2 matches", "↑1 new"], "the refresh to join it");
    assert!(!s.contains("FOLLOWING"), "{s}");
    tmux.keys(&["g"]);
    tmux.wait_for(&["secondrecord", "firstrecord"], "both records at the top");
    tmux.keys(&["q"]);
    tmux.wait_for_clean_exit("lookout-tui to exit");
}

/// A cumulative monotonic counter `tui.orders` of service `tuishop` at `total`.
fn orders_request(total: i64) -> Vec<u8> {
    use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use lookout_proto::otlp::metrics::v1::{
        metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    };
    let now = now_ns();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("tuishop"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "tui.orders".into(),
                    description: "Orders placed.".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("http.route", "/pay")],
                            start_time_unix_nano: now - 60_000_000_000,
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsInt(total)),
                            ..Default::default()
                        }],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_metrics_view_shows_otlp_metrics_with_rates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let url = c.http_url("/v1/metrics");
    assert!(post_acknowledged(&client, &url, orders_request(100)).await);
    let tmux = Tmux::start(&tui_command(&c.api.to_string(), dir.path()), 120, 30);
    tmux.wait_for(&["6:Metrics"], "the dashboard");
    tmux.keys(&["6"]);
    tmux.wait_for(
        &[
            "tui_orders_total{",
            "job=\"tuishop\"",
            "lookout_* hidden (a shows)",
        ],
        "the OTLP counter in the metrics view",
    );
    // The counter grows by 50 every half second: its rate shows once two scrapes saw it.
    let sender = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            for i in 1..=120 {
                post_acknowledged(&client, &url, orders_request(100 + 50 * i)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    tmux.wait_until(
        |s| {
            s.lines().any(|l| {
                l.starts_with("tui_orders_total{") && l.contains("/s") && !l.contains(" 0/s")
            })
        },
        "a rate for the counter",
    );
    tmux.keys(&["G"]);
    tmux.wait_for(
        &[
            " tui_orders_total ",
            "counter, as a rate",
            "labels http_route=/pay",
        ],
        "the counter's chart",
    );
    // The collector's own series on request; the filter narrows the list.
    tmux.keys(&["a"]);
    tmux.wait_for(
        &["lookout_* shown (a hides)", "lookout_"],
        "the self-metrics",
    );
    tmux.keys(&["/"]);
    tmux.text("orders");
    tmux.keys(&["Enter"]);
    tmux.wait_for(&["1 of "], "the filtered list");
    sender.abort();
    tmux.keys(&["q"]);
    tmux.wait_for_clean_exit("lookout-tui to exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_pointed_at_an_otlp_port_says_it_is_not_a_lookout_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(&dir.path().join("data"), &[]);
    // OTLP/HTTP answers 404 with its own JSON; OTLP/gRPC speaks only HTTP/2.
    for (addr, answered) in [
        (c.http, "answered 404 Not Found"),
        (c.grpc, "answered something that is not HTTP/1.1"),
    ] {
        let tmux = Tmux::start(&tui_command(&addr.to_string(), dir.path()), 100, 24);
        let s = tmux.wait_for(
            &["✕ not a Lookout API", "not a Lookout query API:", answered],
            "the dashboard to say the port is not a Lookout query API",
        );
        assert!(
            !s.contains("Loading") && !s.contains('●'),
            "no green status, no endless loading:\n{s}"
        );
        tmux.keys(&["q"]);
        tmux.wait_for_clean_exit("lookout-tui to exit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tui_exits_when_its_terminal_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tmux, api) = tui_without_collector(dir.path());
    tmux.wait_for(&["Cannot reach the collector"], "the dashboard");
    let pattern = tui_process(&api.to_string());
    let running = || {
        Command::new("pgrep")
            .args(["-f", &pattern])
            .status()
            .expect("pgrep")
            .success()
    };
    assert!(running());
    // The terminal hangs up (SSH drops, tmux is killed): the dashboard must not linger.
    drop(tmux);
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() {
        assert!(
            Instant::now() < deadline,
            "lookout-tui still runs after its terminal went away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
