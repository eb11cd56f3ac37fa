//! Helpers for the end-to-end tests: start the real binaries on loopback port 0 with a
//! temporary data directory, read their bound addresses from the start-up line, and poll
//! the query API with deadlines (never fixed sleeps).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of a workspace binary, built by `cargo test --workspace` before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds every binary)",
        path.display()
    );
    path
}

/// A running `lookout-collector`.
pub struct Collector {
    child: Child,
    /// OTLP/gRPC address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub http: SocketAddr,
    /// Query API address.
    pub api: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    output: Arc<Mutex<String>>,
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Trace settings for tests: traces complete after 1 s idle instead of 10 s.
pub const FAST_TRACES: &str = "[traces]\ncompletion_window = \"1s\"\n";

/// Write `toml` as a collector config file in `dir`; returns its path for `--config`.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("test-collector.toml");
    std::fs::write(&path, toml).expect("write test config");
    path
}

/// Start `name` with `args`, collect its stderr, and return it with its start-up line
/// (the one logging " listening ").
fn spawn_logged(name: &str, args: &[String]) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = Command::new(bin(name))
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("LOOKOUT_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let out = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains(" listening ") {
                let _ = tx.send(line.clone());
            }
            let mut o = out.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("{name} did not start: {}", output.lock().unwrap());
        }
    };
    (child, line, output)
}

/// A free loopback address (bound and released), for a server that must come back on the
/// same port after a restart.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

impl Collector {
    /// Start a collector on port 0 with `data_dir` and extra flags; returns once `/readyz`
    /// answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Collector {
        Self::start_on("127.0.0.1:0".parse().unwrap(), data_dir, extra)
    }

    /// Like [`Collector::start`] with OTLP/gRPC on `grpc`.
    pub fn start_on(grpc: SocketAddr, data_dir: &Path, extra: &[&str]) -> Collector {
        Self::start_at(grpc, "127.0.0.1:0".parse().unwrap(), data_dir, extra)
    }

    /// Like [`Collector::start`] with OTLP/gRPC on `grpc` and OTLP/HTTP on `http`.
    pub fn start_at(
        grpc: SocketAddr,
        http: SocketAddr,
        data_dir: &Path,
        extra: &[&str],
    ) -> Collector {
        Self::start_full(grpc, http, "127.0.0.1:0".parse().unwrap(), data_dir, extra)
    }

    /// Like [`Collector::start`] with every listener at a given address.
    pub fn start_full(
        grpc: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
        data_dir: &Path,
        extra: &[&str],
    ) -> Collector {
        let mut args: Vec<String> = vec![
            "--otlp-grpc".into(),
            grpc.to_string(),
            "--otlp-http".into(),
            http.to_string(),
            "--api".into(),
            api.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let c = Self::spawn(&args, data_dir);
        c.wait_ready();
        c
    }

    /// Start a collector on loopback port 0 without waiting for plain-HTTP readiness
    /// (for a TLS API); use [`Collector::wait_for_log`] instead.
    pub fn launch(data_dir: &Path, extra: &[&str]) -> Collector {
        let mut args: Vec<String> = [
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(data_dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args, data_dir)
    }

    fn spawn(args: &[String], data_dir: &Path) -> Collector {
        let (child, line, output) = spawn_logged("lookout-collector", args);
        Collector {
            child,
            grpc: field(&line, "otlp_grpc").unwrap(),
            http: field(&line, "otlp_http").unwrap(),
            api: field(&line, "api").unwrap(),
            data_dir: data_dir.to_path_buf(),
            output,
        }
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.output().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.api_url("/readyz");
        loop {
            if let Ok(r) = reqwest::blocking_get(&url) {
                if r == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "collector not ready: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://API/path`.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// `http://OTLP_HTTP/path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `http://OTLP_GRPC`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.api_url("/metrics")).await
    }

    /// Everything the collector logged so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Send a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} failed");
    }

    /// Crash it: SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stop it with SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("collector did not stop on SIGTERM: {}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `lookout-agent`.
pub struct Agent {
    child: Child,
    /// OTLP/gRPC address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub http: SocketAddr,
    /// `/metrics` and `/healthz` address.
    pub api: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Agent {
    /// Start an agent on port 0 shipping to `collector`, with its buffer in `buffer_dir`
    /// and extra flags; returns once `/healthz` answers 200.
    pub fn start(buffer_dir: &Path, collector: &str, extra: &[&str]) -> Agent {
        let mut args: Vec<String> = vec![
            "--otlp-grpc".into(),
            "127.0.0.1:0".into(),
            "--otlp-http".into(),
            "127.0.0.1:0".into(),
            "--api".into(),
            "127.0.0.1:0".into(),
            "--collector".into(),
            collector.into(),
            "--buffer-dir".into(),
            buffer_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let (child, line, output) = spawn_logged("lookout-agent", &args);
        let a = Agent {
            child,
            grpc: field(&line, "otlp_grpc").unwrap(),
            http: field(&line, "otlp_http").unwrap(),
            api: field(&line, "api").unwrap(),
            output,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while reqwest::blocking_get(&format!("http://{}/healthz", a.api)).ok() != Some(200) {
            assert!(
                Instant::now() < deadline,
                "agent not healthy: {}",
                a.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    /// `http://OTLP_GRPC`.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://OTLP_HTTP/path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// `http://API/path`.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{}", self.api, path)
    }

    /// Everything the agent logged so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.api_url("/metrics")).await
    }

    /// Crash it: SIGKILL, no chance to flush anything.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stop it with SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not stop on SIGTERM: {}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod reqwest {
    /// Status of a GET, for readiness polling without an async runtime.
    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
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
}

/// Poll `f` every 50 ms until it returns `Some`, or panic with `what` after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
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

/// The text of a `/metrics` endpoint.
async fn metrics_text(url: &str) -> String {
    ::reqwest::get(url)
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// GET a JSON document: `(status, body)`.
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = ::reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
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

/// How a process ended after [`Collector::terminate_within`] or [`Agent::terminate_within`].
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status; `None` when it had not exited in time and was killed.
    pub status: Option<ExitStatus>,
    /// From SIGTERM to its exit (or to the timeout).
    pub took: Duration,
    /// Everything it logged.
    pub output: String,
}

/// SIGTERM `child`, wait up to `timeout` for it to exit (SIGKILL after that), and collect
/// the rest of its log.
fn terminate_child(child: &mut Child, output: &Arc<Mutex<String>>, timeout: Duration) -> Stopped {
    let start = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    // The reader thread still drains the pipe: wait until the log stops growing.
    let mut len = output.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = output.lock().unwrap().len();
        if now == len {
            break;
        }
        len = now;
    }
    Stopped {
        status,
        took,
        output: output.lock().unwrap().clone(),
    }
}

impl Collector {
    /// Stop it with SIGTERM and wait up to `timeout`: exit status, time taken and log.
    /// Blocking; call it from `spawn_blocking` in async tests.
    pub fn terminate_within(mut self, timeout: Duration) -> Stopped {
        terminate_child(&mut self.child, &self.output, timeout)
    }
}

impl Agent {
    /// Stop it with SIGTERM and wait up to `timeout`: exit status, time taken and log.
    /// Blocking; call it from `spawn_blocking` in async tests.
    pub fn terminate_within(mut self, timeout: Duration) -> Stopped {
        terminate_child(&mut self.child, &self.output, timeout)
    }
}
