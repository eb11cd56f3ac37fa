//! `bench/local-cluster.sh`, run as a user runs it: three `nats-server` nodes and three
//! collectors from one command; traces sent to one collector are found through another,
//! `/api/v1/cluster` lists the three, the commands it prints work, and `stop` leaves no
//! process behind while the data stays.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lookout_tests::cli::{assert_fails_saying, stdout_of_success};
use lookout_tests::otlp::{three_span_trace, writer_trace_id};
use lookout_tests::{bin, free_addr, get_json, poll, post_acknowledged};
use prost::Message;

/// Partitions of the test cluster: few, so that leases settle fast, and every one of the
/// test's traces in another.
const PARTITIONS: usize = 6;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/local-cluster.sh")
}

/// The script with the environment of a test: the workspace's debug binaries, work
/// directory `dir`, nothing from the caller's environment that would change it.
fn command(dir: &Path) -> Command {
    let bin_dir = bin("lookout-collector")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .env("CLUSTER_DIR", dir)
        .env("LOOKOUT_BIN", bin_dir)
        .env("RUST_LOG", "info")
        .env_remove("LOOKOUT_CONFIG")
        .env_remove("NATS_SERVER");
    cmd
}

/// Ports the script listens on, free when chosen.
struct Ports {
    nats: [u16; 3],
    routes: [u16; 3],
    grpc: [u16; 3],
    http: [u16; 3],
    api: [u16; 3],
}

impl Ports {
    fn free() -> Ports {
        let three = || [(); 3].map(|()| free_addr().port());
        Ports {
            nats: three(),
            routes: three(),
            grpc: three(),
            http: three(),
            api: three(),
        }
    }

    fn env(&self, cmd: &mut Command) {
        let list = |p: &[u16; 3]| p.map(|p| p.to_string()).join(" ");
        cmd.env("NATS_PORTS", list(&self.nats))
            .env("NATS_ROUTE_PORTS", list(&self.routes))
            .env("GRPC_PORTS", list(&self.grpc))
            .env("HTTP_PORTS", list(&self.http))
            .env("API_PORTS", list(&self.api));
    }

    fn api(&self, node: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api[node])
    }
}

/// Processes alive (not zombies) whose command line contains `needle`: pid and command.
fn processes_with(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) && alive(pid) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn kill(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", target])
        .stderr(Stdio::null())
        .status();
}

/// The running script; on drop (a failed test) it and everything it started are killed:
/// its process group, and the process group of each process running from its work
/// directory (each runs in a session of its own, so that Ctrl-C reaches only the script).
struct LocalCluster {
    child: Child,
    /// Whether the script's exit was collected (its pid may then be reused).
    exited: bool,
    dir: PathBuf,
    lines: mpsc::Receiver<String>,
    output: Arc<Mutex<String>>,
}

impl LocalCluster {
    fn start(dir: &Path, ports: &Ports) -> LocalCluster {
        let mut cmd = command(dir);
        ports.env(&mut cmd);
        cmd.env("PARTITIONS", PARTITIONS.to_string())
            .env("READY_TIMEOUT", "50")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("start bench/local-cluster.sh");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                out.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let out = output.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            out.lock().unwrap().push_str(&s);
        });
        LocalCluster {
            child,
            exited: false,
            dir: dir.to_path_buf(),
            lines,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Wait up to `timeout` for a line of its output starting with `prefix`.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {prefix:?} line within {timeout:?}:\n{}", self.output())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    self.exited = true;
                    panic!(
                        "the script ended ({status:?}) before a {prefix:?} line:\n{}",
                        self.output()
                    )
                }
            }
        }
    }

    /// Wait up to `timeout` for the script to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = true;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the script still runs {timeout:?} after `stop`:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.exited {
            kill("-KILL", &format!("-{}", self.child.id()));
        }
        for (pid, _) in processes_with(&self.dir.display().to_string()) {
            kill("-KILL", &format!("-{pid}"));
            kill("-KILL", &pid.to_string());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes the script recorded as started: name and pid.
fn started(dir: &Path) -> Vec<(String, u32)> {
    let list = std::fs::read_to_string(dir.join("pids")).expect("the script's pids file");
    list.lines()
        .filter_map(|l| {
            let (name, pid) = l.split_once(' ')?;
            Some((name.to_string(), pid.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_serves_from_any_node_and_stop_leaves_nothing_running() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("cluster");
    let ports = Ports::free();
    let t0 = Instant::now();
    let mut cluster = LocalCluster::start(&dir, &ports);
    let ready =
        tokio::task::block_in_place(|| cluster.wait_line("ready:", Duration::from_secs(60)));
    let ready_after = t0.elapsed();
    assert!(
        ready.contains(&format!("{PARTITIONS} partitions")),
        "{ready}"
    );
    // Everything printed after the ready line is there once "Ctrl-C" is.
    tokio::task::block_in_place(|| cluster.wait_line("Ctrl-C", Duration::from_secs(5)));
    let printed = cluster.output();
    for (i, node) in ["c1", "c2", "c3"].iter().enumerate() {
        let row = format!("127.0.0.1:{}", ports.grpc[i]);
        assert!(
            printed
                .lines()
                .any(|l| l.contains(node) && l.contains(&row)),
            "{printed}"
        );
    }

    // What it started, as it recorded it, is what runs from its work directory.
    let started = started(&dir);
    let names: Vec<&str> = started.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1", "n2", "n3", "c1", "c2", "c3"], "{printed}");
    let mut pids: Vec<u32> = started.iter().map(|(_, p)| *p).collect();
    let mut running: Vec<u32> = processes_with(&dir.display().to_string())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    pids.sort_unstable();
    running.sort_unstable();
    assert_eq!(running, pids, "{started:?}");

    // Traces sent to c1 over OTLP/HTTP, one in each partition, are found through c2.
    let client = reqwest::Client::new();
    let ids: Vec<[u8; 16]> = (0..PARTITIONS).map(|s| writer_trace_id(7, 0, s)).collect();
    let c1 = format!("http://127.0.0.1:{}/v1/traces", ports.http[0]);
    for id in &ids {
        let body = three_span_trace("checkout", *id).encode_to_vec();
        poll(Duration::from_secs(20), "c1 acknowledges", || {
            let (client, url, body) = (client.clone(), c1.clone(), body.clone());
            async move { post_acknowledged(&client, &url, body).await.then_some(()) }
        })
        .await;
    }
    for id in &ids {
        let url = ports.api(1, &format!("/api/v1/traces/{}", hex::encode(id)));
        poll(Duration::from_secs(20), "the trace through c2", || async {
            let (code, t) = get_json(&url).await;
            (code == 200 && t["spans"].as_array().map(Vec::len) == Some(3)).then_some(())
        })
        .await;
    }

    // The printed curl command sends a span that another node finds by the printed id.
    let send = printed
        .lines()
        .find(|l| l.contains("curl -s -H"))
        .unwrap_or_else(|| panic!("no curl command to send data: {printed}"));
    let sent = stdout_of_success(Command::new("bash").args(["-c", send]));
    assert_eq!(sent.trim(), "{}", "{send}");
    let find = printed
        .lines()
        .find(|l| l.contains("/api/v1/traces/"))
        .and_then(|l| l.rsplit('/').next())
        .unwrap_or_else(|| panic!("no trace id to look up: {printed}"));
    let url = ports.api(2, &format!("/api/v1/traces/{find}"));
    poll(Duration::from_secs(20), "the printed trace", || async {
        let (code, t) = get_json(&url).await;
        (code == 200 && t["services"] == serde_json::json!(["hello"])).then_some(())
    })
    .await;

    // Any node lists the three members and who holds every partition.
    let (code, view) = get_json(&ports.api(2, "/api/v1/cluster")).await;
    assert_eq!(code, 200, "{view}");
    let members: Vec<&str> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node"].as_str())
        .collect();
    assert_eq!(members, ["c1", "c2", "c3"], "{view}");
    let mut held: Vec<u64> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["partitions"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_u64())
        .collect();
    held.sort_unstable();
    assert_eq!(held, (0..PARTITIONS as u64).collect::<Vec<_>>(), "{view}");
    assert_eq!(
        (&view["enabled"], &view["node"], &view["unowned"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("c3"),
            &serde_json::json!([])
        ),
        "{view}"
    );

    // `stop` (from another terminal, as a user would) ends the script and all it started.
    let t_stop = Instant::now();
    let stop = tokio::task::block_in_place(|| {
        stdout_of_success(command(&dir).arg("stop").stdin(Stdio::null()))
    });
    let status = tokio::task::block_in_place(|| cluster.wait_exit(Duration::from_secs(10)));
    let stop_took = t_stop.elapsed();
    let output = cluster.output();
    assert!(status.success(), "{status:?}: {output}");
    assert!(stop.contains("stopping the cluster of"), "{stop}");
    assert!(output.contains("stopped; data kept in"), "{output}");
    let left = processes_with(&dir.display().to_string());
    assert!(
        left.is_empty(),
        "still running after stop: {left:?}\n{output}"
    );
    let survivors: Vec<&(String, u32)> = started.iter().filter(|(_, p)| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "still running after stop: {survivors:?}\n{output}"
    );
    assert!(!dir.join("local-cluster.pid").exists(), "{output}");
    for data in [
        "c1/data/wal",
        "c2/data",
        "c3/data",
        "nats/n1/jetstream",
        "c1/collector.log",
    ] {
        assert!(dir.join(data).exists(), "{data} removed by stop");
    }
    eprintln!(
        "local cluster ready after {:.1} s, stopped in {:.1} s, {:.1} s in all",
        ready_after.as_secs_f64(),
        stop_took.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    if output.contains("killed (kill -9)") {
        eprintln!(
            "note: {}",
            output
                .lines()
                .filter(|l| l.contains("kill -9"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

#[test]
fn local_cluster_script_explains_its_settings_and_names_what_is_missing() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("cluster");
    let help = stdout_of_success(command(&dir).arg("--help"));
    for needle in [
        "CLUSTER_DIR",
        "LOOKOUT_BIN",
        "PARTITIONS",
        "NATS_PORTS",
        "API_PORTS",
        "Data stays",
        "apt-get install nats-server",
        "cargo build --release",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    assert_fails_saying(
        command(&dir).env("LOOKOUT_BIN", &empty),
        "cargo build --release",
    );
    assert_fails_saying(
        command(&dir).env("NATS_SERVER", work.path().join("no-nats-server")),
        "apt-get install nats-server",
    );
    assert_fails_saying(command(&dir).env("API_PORTS", "7070 7080"), "API_PORTS");
    // `stop` with nothing running says so and succeeds.
    let out = stdout_of_success(command(&dir).arg("stop"));
    assert!(out.contains("no cluster running"), "{out}");
    assert!(!dir.exists(), "a failed start left {}", dir.display());
}
