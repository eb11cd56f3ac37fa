//! A real NATS cluster for tests: three `nats-server` processes (the Debian package) with
//! JetStream, on free loopback ports, each with a temporary store directory; killed on
//! drop. Stopping and restarting one node is what the fault tests do.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_addr;

/// One node: client and cluster (route) ports, and its process while running.
struct Node {
    name: String,
    client: u16,
    route: u16,
    store: PathBuf,
    child: Option<Child>,
}

/// A running 3-node NATS cluster with JetStream.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start three nodes and wait until each accepts client connections. JetStream
    /// elects its meta leader some seconds later: clients retry their first requests.
    pub fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir for nats");
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                name: format!("n{i}"),
                client: free_addr().port(),
                route: free_addr().port(),
                store: dir.path().join(format!("n{i}")),
                child: None,
            })
            .collect();
        let mut c = NatsCluster { nodes, _dir: dir };
        for i in 0..3 {
            c.start_node(i);
        }
        for i in 0..3 {
            c.wait_listening(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route))
            .collect();
        let n = &self.nodes[i];
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &n.client.to_string()])
            .args(["-n", &n.name, "--cluster_name", "lookout-test"])
            .args(["-cluster", &format!("nats://127.0.0.1:{}", n.route)])
            .args(["-routes", &routes.join(",")])
            .args(["-js", "-sd", &path_str(&n.store)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package nats-server)");
        self.nodes[i].child = Some(child);
    }

    fn wait_listening(&self, i: usize) {
        let port = self.nodes[i].client;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats node {i} not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Client URLs of every node, comma-separated (what `cluster.urls` takes one by one).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.start_node(i);
        self.wait_listening(i);
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
