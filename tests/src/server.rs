//! The real `lookout-collector` and `lookout-agent` as child processes: started on
//! loopback port 0, their bound addresses read from the start-up line, their stderr kept,
//! stopped with SIGKILL or SIGTERM.

use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::{blocking_get_status, metrics_text, post_protobuf};

/// Path of a workspace binary, built by `cargo nextest run --workspace` (or `cargo test
/// --workspace`) before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo nextest run --workspace` (it builds every binary)",
        path.display()
    );
    path
}

/// A free loopback address (bound and released), for a server that must come back on the
/// same port after a restart.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// Which binary a [`Server`] runs.
pub trait Binary: 'static {
    /// The binary's file name.
    const FILE: &'static str;
    /// How failure messages name it.
    const WHAT: &'static str;
}

/// Marker for `lookout-collector`.
pub struct CollectorBinary;

impl Binary for CollectorBinary {
    const FILE: &'static str = "lookout-collector";
    const WHAT: &'static str = "collector";
}

/// Marker for `lookout-agent`.
pub struct AgentBinary;

impl Binary for AgentBinary {
    const FILE: &'static str = "lookout-agent";
    const WHAT: &'static str = "agent";
}

/// A running `lookout-collector`.
pub type Collector = Server<CollectorBinary>;

/// A running `lookout-agent`.
pub type Agent = Server<AgentBinary>;

/// A running collector or agent; killed on drop.
pub struct Server<B: Binary> {
    child: Child,
    /// OTLP/gRPC address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP address.
    pub http: SocketAddr,
    /// Query API address (the agent's `/metrics` and `/healthz`).
    pub api: SocketAddr,
    /// Its data directory (the agent's buffer directory).
    pub data_dir: PathBuf,
    output: Arc<Mutex<String>>,
    binary: PhantomData<fn() -> B>,
}

/// How a process ended after [`Server::terminate_within`].
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status; `None` when it had not exited in time and was killed.
    pub status: Option<ExitStatus>,
    /// From SIGTERM to its exit (or to the timeout).
    pub took: Duration,
    /// Everything it logged.
    pub output: String,
}

/// Trace settings for tests: traces complete after 1 s idle instead of 10 s.
pub const FAST_TRACES: &str = "[traces]\ncompletion_window = \"1s\"\n";

/// Write `toml` as a collector config file in `dir`; returns its path for `--config`.
pub fn write_config(dir: &Path, toml: &str) -> PathBuf {
    let path = dir.join("test-collector.toml");
    std::fs::write(&path, toml).expect("write test config");
    path
}

/// Write `toml` as `agent.toml` in `dir`; returns its path as a `--config` argument.
pub fn write_agent_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(&path, toml).expect("write agent config");
    path.display().to_string()
}

fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

/// `--otlp-grpc`, `--otlp-http` and `--api` at the addresses of `listen`, in that order.
fn listen_args(listen: [SocketAddr; 3]) -> Vec<String> {
    ["--otlp-grpc", "--otlp-http", "--api"]
        .iter()
        .zip(listen)
        .flat_map(|(flag, addr)| [flag.to_string(), addr.to_string()])
        .collect()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

impl<B: Binary> Server<B> {
    /// Start the binary with `args`, collect its stderr, and return once it logged its
    /// start-up line (the one with " listening ").
    fn spawn(args: &[String], extra: &[&str], data_dir: &Path) -> Self {
        let mut child = Command::new(bin(B::FILE))
            .args(args)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("LOOKOUT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", B::FILE));
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
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!("{} did not start: {}", B::FILE, output.lock().unwrap());
        };
        Server {
            child,
            grpc: field(&line, "otlp_grpc").unwrap(),
            http: field(&line, "otlp_http").unwrap(),
            api: field(&line, "api").unwrap(),
            data_dir: data_dir.to_path_buf(),
            output,
            binary: PhantomData,
        }
    }

    /// Poll `path` on the API listener until it answers 200.
    fn wait_for_200(&self, path: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.api_url(path);
        while blocking_get_status(&url).ok() != Some(200) {
            assert!(Instant::now() < deadline, "{what}: {}", self.output());
            std::thread::sleep(Duration::from_millis(20));
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

    /// Its log so far contains `needle`.
    pub fn assert_logged(&self, needle: &str) {
        let output = self.output();
        assert!(
            output.contains(needle),
            "no {needle:?} in the log: {output}"
        );
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

    /// POST a protobuf export request to its OTLP/HTTP `path` (`/v1/logs`, ...); expects
    /// 200.
    pub async fn post_ok(&self, path: &str, body: Vec<u8>) {
        let r = post_protobuf(&reqwest::Client::new(), &self.http_url(path), body)
            .await
            .expect("POST");
        let status = r.status();
        assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory so far (`VmHWM` in `/proc/PID/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM in /proc/PID/status")
            * 1024
    }

    /// Everything it logged so far.
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

    /// Stop it with SIGTERM and wait (up to 30 s) for its exit.
    pub fn terminate(self) -> ExitStatus {
        let stopped = self.terminate_within(Duration::from_secs(30));
        stopped
            .status
            .unwrap_or_else(|| panic!("{} did not stop on SIGTERM: {}", B::WHAT, stopped.output))
    }

    /// Stop it with SIGTERM and wait up to `timeout` (SIGKILL after that): exit status,
    /// time taken and log. Blocking; see [`Server::stop_within`] for async tests.
    pub fn terminate_within(mut self, timeout: Duration) -> Stopped {
        let start = Instant::now();
        self.signal("TERM");
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        // The reader thread still drains the pipe: wait until the log stops growing.
        let mut len = self.output.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.output.lock().unwrap().len();
            if now == len {
                break;
            }
            len = now;
        }
        Stopped {
            status,
            took,
            output: self.output(),
        }
    }

    /// [`Server::terminate_within`] on a blocking thread, so that the tasks of an async test
    /// (writers, proxies) keep running while it stops.
    pub async fn stop_within(self, timeout: Duration) -> Stopped {
        tokio::task::spawn_blocking(move || self.terminate_within(timeout))
            .await
            .expect("terminate task")
    }
}

impl<B: Binary> Drop for Server<B> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server<CollectorBinary> {
    /// Start a collector on port 0 with `data_dir` and extra flags; returns once `/readyz`
    /// answers 200.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Collector {
        Self::start_on(any_port(), data_dir, extra)
    }

    /// Write `toml` as its config file in `dir` and start a collector with it and the data
    /// directory `dir/data`.
    pub fn start_with_config(dir: &Path, toml: &str) -> Collector {
        let config = write_config(dir, toml);
        Self::start(
            &dir.join("data"),
            &["--config", config.to_str().expect("utf-8 path")],
        )
    }

    /// Like [`Server::start`] with OTLP/gRPC on `grpc`.
    pub fn start_on(grpc: SocketAddr, data_dir: &Path, extra: &[&str]) -> Collector {
        Self::start_at(grpc, any_port(), data_dir, extra)
    }

    /// Like [`Server::start`] with OTLP/gRPC on `grpc` and OTLP/HTTP on `http`.
    pub fn start_at(
        grpc: SocketAddr,
        http: SocketAddr,
        data_dir: &Path,
        extra: &[&str],
    ) -> Collector {
        Self::start_full(grpc, http, any_port(), data_dir, extra)
    }

    /// Like [`Server::start`] with every listener at a given address.
    pub fn start_full(
        grpc: SocketAddr,
        http: SocketAddr,
        api: SocketAddr,
        data_dir: &Path,
        extra: &[&str],
    ) -> Collector {
        let c = Self::launch_at([grpc, http, api], data_dir, extra);
        c.wait_for_200("/readyz", "collector not ready");
        c
    }

    /// Start a collector on loopback port 0 without waiting for plain-HTTP readiness
    /// (for a TLS API); use [`Server::wait_for_log`] instead.
    pub fn launch(data_dir: &Path, extra: &[&str]) -> Collector {
        Self::launch_at([any_port(); 3], data_dir, extra)
    }

    /// Start a collector with OTLP/gRPC, OTLP/HTTP and the API at `listen`.
    fn launch_at(listen: [SocketAddr; 3], data_dir: &Path, extra: &[&str]) -> Collector {
        let mut args = listen_args(listen);
        args.extend(["--data-dir".into(), data_dir.display().to_string()]);
        Self::spawn(&args, extra, data_dir)
    }
}

impl Server<AgentBinary> {
    /// Start an agent on port 0 shipping to `collector`, with its buffer in `buffer_dir`
    /// and extra flags; returns once `/healthz` answers 200.
    pub fn start(buffer_dir: &Path, collector: &str, extra: &[&str]) -> Agent {
        Self::start_shipping(["--collector", collector], buffer_dir, extra)
    }

    /// Start an agent on port 0 publishing to a cluster's stream through the NATS
    /// servers `nats` (`--nats`), with its buffer in `buffer_dir` and extra flags; returns
    /// once `/healthz` answers 200 (the stream may not be connected yet).
    pub fn start_publishing(buffer_dir: &Path, nats: &[String], extra: &[&str]) -> Agent {
        Self::start_shipping(["--nats", &nats.join(",")], buffer_dir, extra)
    }

    fn start_shipping(to: [&str; 2], buffer_dir: &Path, extra: &[&str]) -> Agent {
        let mut args = listen_args([any_port(); 3]);
        args.extend(to.map(String::from));
        args.extend(["--buffer-dir".into(), buffer_dir.display().to_string()]);
        let a = Self::spawn(&args, extra, buffer_dir);
        a.wait_for_200("/healthz", "agent not healthy");
        a
    }

    /// Wait up to `timeout` until its buffer holds nothing unacknowledged.
    pub async fn wait_shipped(&self, timeout: Duration) {
        crate::poll(timeout, "agent buffer drained", || async {
            let (_, h) = crate::get_json(&self.api_url("/healthz")).await;
            (h["buffer_unacked_bytes"].as_u64() == Some(0)).then_some(())
        })
        .await;
    }
}
