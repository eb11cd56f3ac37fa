//! HTTP helpers: polling with a deadline, JSON and `/metrics` reads, protobuf posts.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `f` every 50 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET a JSON document: `(status, body)`.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// The text of a `/metrics` endpoint.
pub(crate) async fn metrics_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Value of a sample in a Prometheus text exposition: the first line starting with
/// `series` (name and labels exactly as rendered).
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An OTLP protobuf body on a request.
pub trait ProtobufBody {
    /// `body` with `content-type: application/x-protobuf`.
    fn protobuf(self, body: Vec<u8>) -> Self;
}

impl ProtobufBody for reqwest::RequestBuilder {
    fn protobuf(self, body: Vec<u8>) -> Self {
        self.header("content-type", "application/x-protobuf")
            .body(body)
    }
}

/// POST `body` as `application/x-protobuf` to `url`.
pub async fn post_protobuf(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    client.post(url).protobuf(body).send().await
}

/// POST `body` as `application/x-protobuf` to `url`: whether it was answered 200.
pub async fn post_acknowledged(client: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    post_protobuf(client, url, body)
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Status of a GET, for readiness polling without an async runtime.
pub(crate) fn blocking_get_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad response"))
}

/// Run `promtool check metrics` on an exposition: its exit code and what it printed
/// (0: clean; 3: lint problems only; anything else: the exposition did not parse).
pub fn promtool_check_metrics(exposition: &str) -> (Option<i32>, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (apt-get install prometheus); .ci/run installs it");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), printed)
}
