//! Cluster mode: three collectors on a real 3-node NATS JetStream cluster. Every
//! collector is a gateway (its receivers publish) and a member that owns partitions by
//! lease and stores what it consumes.

use std::time::Duration;

use lookout_tests::nats::NatsCluster;
use lookout_tests::otlp::{three_span_trace, writer_trace_id};
use lookout_tests::{get_json, metric_value, poll, post_acknowledged, Collector, FAST_TRACES};
use prost::Message;

const PARTITIONS: u32 = 8;

fn config(nats: &NatsCluster, node: &str) -> String {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        "{FAST_TRACES}[cluster]\nurls = [{}]\nnode = \"{node}\"\npartitions = {PARTITIONS}\nlease_ttl = \"4s\"\n\
         # The first stream request waits for JetStream's meta leader election.\ntimeout = \"60s\"\n",
        urls.join(", ")
    )
}

/// On how many of `nodes` the trace `id` is stored, and how many spans each holds: each
/// node is asked as a member asks another, for what it stores itself.
async fn holders(client: &reqwest::Client, nodes: &[&Collector], id: [u8; 16]) -> Vec<usize> {
    let mut found = Vec::new();
    for n in nodes {
        let url = n.api_url(&format!("/api/v1/traces/{}", hex::encode(id)));
        let Ok(r) = client
            .get(&url)
            .header("x-lookout-scope", "local")
            .send()
            .await
        else {
            continue;
        };
        if r.status() != 200 {
            continue;
        }
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        found.push(body["spans"].as_array().map_or(0, Vec::len));
    }
    found
}

/// Publish `ids` through `gateways` in turn, each request retried until acknowledged.
async fn send(client: &reqwest::Client, gateways: &[&Collector], ids: &[[u8; 16]]) {
    for (i, id) in ids.iter().enumerate() {
        let body = three_span_trace("checkout", *id).encode_to_vec();
        post(client, gateways[i % gateways.len()], "/v1/traces", body).await;
    }
}

/// POST an OTLP/HTTP body to `g`, retried until acknowledged.
async fn post<B: lookout_tests::Binary>(
    client: &reqwest::Client,
    g: &lookout_tests::Server<B>,
    path: &str,
    body: Vec<u8>,
) {
    poll(Duration::from_secs(60), "the gateway acknowledges", || {
        let (client, url, body) = (client.clone(), g.http_url(path), body.clone());
        async move { post_acknowledged(&client, &url, body).await.then_some(()) }
    })
    .await;
}

/// Every trace of `ids` is stored whole on exactly one of `nodes`.
async fn each_stored_once(client: &reqwest::Client, nodes: &[&Collector], ids: &[[u8; 16]]) {
    poll(
        Duration::from_secs(30),
        "every trace stored once",
        || async {
            for id in ids {
                let h = holders(client, nodes, *id).await;
                if h != [3] {
                    eprintln!("trace {}: {h:?}", hex::encode(id));
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

async fn owned(c: &Collector) -> f64 {
    metric_value(&c.metrics().await, "lookout_cluster_owned_partitions").unwrap_or(0.0)
}

/// Waits until `nodes` own every partition between them, each at least one.
async fn balanced(nodes: &[&Collector]) {
    poll(
        Duration::from_secs(60),
        "partitions spread over the nodes",
        || async {
            let mut counts = Vec::new();
            for n in nodes {
                counts.push(owned(n).await);
            }
            let total: f64 = counts.iter().sum();
            let done = total == f64::from(PARTITIONS) && counts.iter().all(|c| *c >= 1.0);
            if !done {
                eprintln!("partitions owned: {counts:?}");
            }
            done.then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_share_partitions_and_each_trace_is_stored_whole_on_one() {
    let nats = NatsCluster::start();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let start =
        |i: usize| Collector::start_with_config(dirs[i].path(), &config(&nats, &format!("c{i}")));
    let (c0, c1) = (start(0), start(1));
    let c2 = start(2);
    let client = reqwest::Client::new();
    balanced(&[&c0, &c1, &c2]).await;
    let view = poll(
        Duration::from_secs(30),
        "the cluster view complete",
        || async {
            let (_, v) = get_json(&c1.api_url("/api/v1/cluster")).await;
            let members = v["members"].as_array()?;
            let held: usize = members
                .iter()
                .map(|m| m["partitions"].as_array().map_or(0, Vec::len))
                .sum();
            (members.len() == 3
                && held == PARTITIONS as usize
                && v["unowned"] == serde_json::json!([]))
            .then_some(v)
        },
    )
    .await;
    assert_eq!(
        (&view["enabled"], &view["node"], &view["connected"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("c1"),
            &serde_json::json!(true)
        ),
        "{view}"
    );
    for m in view["members"].as_array().into_iter().flatten() {
        assert!(
            !m["partitions"].as_array().is_none_or(Vec::is_empty),
            "{view}"
        );
        // Each member's own figures, asked for by the answering node.
        assert!(m["lag_messages"].is_u64(), "{view}");
        assert!(m["redelivered_messages"].is_u64(), "{view}");
    }
    assert_eq!(view.get("warnings"), None, "{view}");

    // Any node is a gateway; each trace lands whole on the owner of its partition.
    let first: Vec<[u8; 16]> = (0..48).map(|s| writer_trace_id(1, 0, s)).collect();
    send(&client, &[&c0, &c1, &c2], &first).await;
    each_stored_once(&client, &[&c0, &c1, &c2], &first).await;
    let stores: Vec<usize> = {
        let mut v = Vec::new();
        for id in &first {
            let mut on = 0;
            for (i, n) in [&c0, &c1, &c2].iter().enumerate() {
                if holders(&client, &[n], *id).await == [3] {
                    on = i;
                }
            }
            v.push(on);
        }
        v
    };
    for i in 0..3 {
        assert!(
            stores.contains(&i),
            "node c{i} stores some traces: {stores:?}"
        );
    }

    // Each member counts what it consumed; any node shows every member's count.
    let (_, view) = get_json(&c0.api_url("/api/v1/cluster")).await;
    let consumed: Vec<u64> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["consumed_messages"].as_u64())
        .collect();
    assert!(
        consumed.len() == 3 && consumed.iter().all(|c| *c > 0),
        "{view}"
    );

    // The dashboard's nodes view, against any node, lists every member.
    let tui_dir = tempfile::tempdir().expect("tempdir");
    let tmux = crate::tui::Tmux::start(
        &crate::tui::tui_command(&c2.api.to_string(), tui_dir.path()),
        80,
        24,
    );
    tmux.wait_for(&["1:Services"], "the dashboard");
    tmux.keys(&["7"]);
    tmux.wait_for(
        &[
            "3 members (3 consuming) · 8 partitions · via c2",
            " c0 ",
            " c1 ",
            "*c2 ",
            "member",
        ],
        "the nodes view",
    );
    tmux.keys(&["q"]);
    tmux.wait_for_clean_exit("q in the nodes view");

    // Any node answers for the cluster: each trace by id, and a search listing each once.
    for (id, n) in first.iter().zip([&c0, &c1, &c2].iter().cycle()) {
        let (code, t) = get_json(&n.api_url(&format!("/api/v1/traces/{}", hex::encode(id)))).await;
        assert_eq!(
            (code, t["spans"].as_array().map(Vec::len)),
            (200, Some(3)),
            "{t}"
        );
    }
    let search = "/api/v1/traces?service=checkout&limit=1000&from=1h";
    let listed = poll(Duration::from_secs(30), "every trace listed", || async {
        let (_, r) = get_json(&c1.api_url(search)).await;
        let ids: Vec<String> = r["traces"]
            .as_array()?
            .iter()
            .filter_map(|t| t["trace_id"].as_str().map(String::from))
            .collect();
        (ids.len() >= first.len()).then_some(ids)
    })
    .await;
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (listed.len(), unique.len()),
        (first.len(), first.len()),
        "{listed:?}"
    );
    // RED figures of the whole cluster from any node: every member's requests counted.
    poll(
        Duration::from_secs(30),
        "services of the whole cluster",
        || async {
            let (_, r) = get_json(&c2.api_url("/api/v1/services?window=5m")).await;
            let checkout = r["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "checkout")?
                .clone();
            assert!(checkout.get("latency_buckets").is_none(), "{checkout}");
            (checkout["requests"] == first.len()).then_some(())
        },
    )
    .await;
    let (code, d) = get_json(&c0.api_url("/api/v1/dependencies")).await;
    assert_eq!(code, 200, "{d}");
    let logs = lookout_tests::otlp::log_request(
        "checkout",
        (0..30).map(|i| format!("payment {i} accepted")),
    );
    post(&client, &c1, "/v1/logs", logs.encode_to_vec()).await;
    poll(
        Duration::from_secs(30),
        "every log line found from any node",
        || async {
            let (_, r) = get_json(&c2.api_url("/api/v1/logs?q=accepted&limit=100")).await;
            (r["total"] == 30 && r["logs"].as_array().map(Vec::len) == Some(30)).then_some(())
        },
    )
    .await;

    // A 2.4 MB request of one service's logs falls into one partition: the gateway cuts
    // it into messages a NATS server takes (1 MiB each at most).
    let bulk = lookout_tests::otlp::log_request(
        "bulk",
        (0..2000).map(|i| format!("bulk {i} {}", "x".repeat(1200))),
    );
    post(&client, &c0, "/v1/logs", bulk.encode_to_vec()).await;
    poll(
        Duration::from_secs(30),
        "every bulk line stored",
        || async {
            let (_, r) = get_json(&c1.api_url("/api/v1/logs?service=bulk&limit=1")).await;
            (r["total"] == 2000).then_some(())
        },
    )
    .await;

    // A node killed: a query right away names it; its partitions move to the others
    // after the lease TTL.
    c2.kill9();
    let (code, r) = get_json(&c0.api_url(search)).await;
    assert_eq!(code, 200, "{r}");
    assert!(
        r["warnings"].to_string().contains("node c2 did not answer"),
        "{r}"
    );
    balanced(&[&c0, &c1]).await;
    let second: Vec<[u8; 16]> = (0..24).map(|s| writer_trace_id(2, 0, s)).collect();
    send(&client, &[&c0, &c1], &second).await;
    each_stored_once(&client, &[&c0, &c1], &second).await;
    // The root of a trace of partition 2, which goes back to c2 when it returns.
    let split = writer_trace_id(5, 0, 2);
    let whole = three_span_trace("checkout", split);
    let mut root = whole.clone();
    root.resource_spans[0].scope_spans[0].spans.truncate(1);
    post(&client, &c0, "/v1/traces", root.encode_to_vec()).await;

    // Back on its data directory, it takes its share again; nothing is lost or doubled.
    let c2 = start(2);
    balanced(&[&c0, &c1, &c2]).await;
    let third: Vec<[u8; 16]> = (0..24).map(|s| writer_trace_id(3, 0, s)).collect();
    send(&client, &[&c2], &third).await;
    let all: Vec<[u8; 16]> = first.iter().chain(&second).chain(&third).copied().collect();
    each_stored_once(&client, &[&c0, &c1, &c2], &all).await;
    // The rest of the split trace lands on c2: asked by id, any node merges both parts.
    let mut children = whole;
    children.resource_spans[0].scope_spans[0].spans.remove(0);
    post(&client, &c1, "/v1/traces", children.encode_to_vec()).await;
    poll(
        Duration::from_secs(30),
        "the split trace merged",
        || async {
            let parts = holders(&client, &[&c0, &c1, &c2], split).await;
            let (_, t) =
                get_json(&c1.api_url(&format!("/api/v1/traces/{}", hex::encode(split)))).await;
            let n = t["spans"].as_array().map_or(0, Vec::len);
            eprintln!("split trace: parts {parts:?}, merged {n}");
            (parts.len() == 2 && n == 3 && t["root_span_id"] == hex::encode([1u8; 8])).then_some(())
        },
    )
    .await;
    let m = c2.metrics().await;
    assert!(
        metric_value(
            &m,
            "lookout_cluster_lease_changes_total{change=\"acquired\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{m}"
    );
}

/// A message delivered again after its record reached the WAL (an acknowledgement lost in
/// a crash) is not stored twice. Deleting the partitions' durable consumers while the
/// collector is down makes JetStream deliver the whole stream again at restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_delivered_again_are_not_stored_twice() {
    let nats = NatsCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let toml = config(&nats, "c0");
    let c0 = Collector::start_with_config(dir.path(), &toml);
    let client = reqwest::Client::new();
    balanced(&[&c0]).await;
    let ids: Vec<[u8; 16]> = (0..20).map(|s| writer_trace_id(4, 0, s)).collect();
    send(&client, &[&c0], &ids).await;
    each_stored_once(&client, &[&c0], &ids).await;
    c0.kill9();

    let nc = async_nats::connect(nats.urls()).await.unwrap();
    let js = async_nats::jetstream::new(nc);
    let mut deleted = 0;
    for p in 0..PARTITIONS {
        let name = format!("LOOKOUT-p{p}");
        poll(Duration::from_secs(30), "consumer deleted", || {
            let js = js.clone();
            let name = name.clone();
            async move {
                let stream = js.get_stream("LOOKOUT").await.ok()?;
                match stream.delete_consumer(&name).await {
                    Ok(_) => Some(()),
                    Err(e) if e.to_string().contains("not found") => Some(()),
                    Err(e) => {
                        eprintln!("{name}: {e}");
                        None
                    }
                }
            }
        })
        .await;
        deleted += 1;
    }
    assert_eq!(deleted, PARTITIONS);

    let c0 = Collector::start_with_config(dir.path(), &toml);
    poll(
        Duration::from_secs(60),
        "every message delivered again",
        || async {
            let m = c0.metrics().await;
            let skipped = metric_value(&m, "lookout_cluster_skipped_messages_total").unwrap_or(0.0);
            (skipped >= ids.len() as f64).then_some(())
        },
    )
    .await;
    // Each trace still holds its 3 spans, not 6.
    each_stored_once(&client, &[&c0], &ids).await;
    let m = c0.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "lookout_cluster_consumed_items_total{signal=\"traces\"}"
        ),
        None,
        "nothing consumed twice: {m}"
    );
    // A member stops cleanly on SIGTERM: it leaves the cluster and its WAL closes.
    let stopped = c0.stop_within(Duration::from_secs(20)).await;
    assert!(
        stopped.status.is_some_and(|s| s.success()),
        "took {:?}: {}",
        stopped.took,
        stopped.output
    );
    assert!(
        stopped.output.contains("left the cluster"),
        "{}",
        stopped.output
    );
}

/// A trace whose root (its one request) lasts `ms`.
fn timed_trace(id: [u8; 16], ms: u64) -> Vec<u8> {
    let mut req = three_span_trace("checkout", id);
    let root = &mut req.resource_spans[0].scope_spans[0].spans[0];
    root.end_time_unix_nano = root.start_time_unix_nano + ms * 1_000_000;
    req.encode_to_vec()
}

/// Rules are evaluated by one member, on RED figures merged from every member: a
/// median that only one member's figures would put over the threshold does not fire, the
/// cluster's does, once; and a new leader after a `kill -9` takes the state the old one
/// kept, so the firing is not notified again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_evaluated_once_for_the_cluster_on_merged_red() {
    let nats = NatsCluster::start();
    let hook = crate::alerts::Receiver::start(0).await;
    let rules = format!(
        "[alerting]\nevaluation_interval = \"200ms\"\n\n[[alerts]]\nname = \"CheckoutSlow\"\n\
         service = \"checkout\"\nsignal = \"latency_p50\"\nop = \">\"\nthreshold = 300\n\
         window = \"1m\"\nfor = \"2s\"\nreceivers = [\"oncall\"]\n\n[receivers.oncall]\n\
         url = \"{}\"\ninitial_backoff = \"100ms\"\nallowed_networks = [\"127.0.0.0/8\"]\n",
        hook.url
    );
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |i: usize| {
        let toml = format!("{}{rules}", config(&nats, &format!("c{i}")));
        Collector::start_with_config(dirs[i].path(), &toml)
    };
    let (c0, c1) = (start(0), start(1));
    let client = reqwest::Client::new();
    balanced(&[&c0, &c1]).await;
    // With two members, partition p (= the trace id's last bytes mod 8) is c{p mod 2}'s.
    let mut seq = 0usize;
    let mut traces = |on: usize, n: usize, ms: u64| {
        let mut v = Vec::new();
        while v.len() < n {
            seq += 1;
            if seq % 2 == on {
                v.push(timed_trace(writer_trace_id(6, 0, seq), ms));
            }
        }
        v
    };
    // c0: 3 slow requests (its own median 500 ms), c1: 5 fast: the cluster's is 10 ms.
    // Fast ones first, and `for = "2s"`: while the members' messages are consumed one
    // member's figures may briefly be merged alone.
    let (slow, fast) = (traces(0, 3, 500), traces(1, 5, 10));
    for body in fast.into_iter().chain(slow) {
        post(&client, &c0, "/v1/traces", body).await;
    }
    let merged_p50 = |n: &Collector| {
        let url = n.api_url("/api/v1/services?window=1m");
        async move {
            let (_, r) = get_json(&url).await;
            let s = r["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "checkout")?
                .clone();
            Some((s["requests"].as_u64()?, s["p50_ms"].as_f64()?))
        }
    };
    poll(Duration::from_secs(30), "8 requests merged", || async {
        merged_p50(&c1).await.filter(|(n, _)| *n == 8)
    })
    .await;
    // Longer than `for`: a rule read from one member's figures would have fired by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(hook.delivered().is_empty(), "{:?}", hook.delivered());

    // Slow requests on both: the cluster's median goes over 300 ms, each member's too.
    for body in traces(0, 5, 500).into_iter().chain(traces(1, 10, 500)) {
        post(&client, &c1, "/v1/traces", body).await;
    }
    hook.wait_for("firing").await;
    let leader = poll(Duration::from_secs(10), "an alert leader", || async {
        let (_, v) = get_json(&c0.api_url("/api/v1/cluster")).await;
        v["alerts_leader"].as_str().map(String::from)
    })
    .await;
    // Both members answer with the leader's state: the rule firing.
    for n in [&c0, &c1] {
        let (code, a) = get_json(&n.api_url("/api/v1/alerts")).await;
        assert_eq!(
            (code, a["rules"][0]["state"].as_str(), a.get("warnings")),
            (200, Some("firing"), None),
            "{a}"
        );
    }
    let (dead, survivor) = if leader == "c0" { (c0, c1) } else { (c1, c0) };
    dead.kill9();
    let name = if leader == "c0" { "c1" } else { "c0" };
    poll(Duration::from_secs(30), "a new alert leader", || async {
        let (_, v) = get_json(&survivor.api_url("/api/v1/cluster")).await;
        (v["alerts_leader"] == name).then_some(())
    })
    .await;
    poll(
        Duration::from_secs(10),
        "the rule firing on the new leader",
        || async {
            let (_, a) = get_json(&survivor.api_url("/api/v1/alerts")).await;
            a.to_string().contains("\"firing\"").then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let firing = hook
        .delivered()
        .iter()
        .filter(|b| b["status"] == "firing")
        .count();
    assert_eq!(firing, 1, "{:?}", hook.delivered());
}

/// Two agents publish while a collector is killed with `kill -9` and, later, one NATS
/// node: ingest goes on, the dead collector's partitions move; once it is back, every
/// span the agents acknowledged is found once from any collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_span_is_lost_when_a_collector_and_a_nats_node_die_under_load() {
    let mut nats = NatsCluster::start();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<String> = (0..3).map(|i| config(&nats, &format!("c{i}"))).collect();
    let start = |i: usize| Collector::start_with_config(dirs[i].path(), &configs[i]);
    let (c0, c1, c2) = (start(0), start(1), start(2));
    let urls = nats.urls();
    let agent_config = format!(
        "[cluster]\npartitions = {PARTITIONS}\ntimeout = \"60s\"\n[exporter]\nretry_initial_interval = \"100ms\"\nretry_max_interval = \"1s\"\n"
    );
    let agents: Vec<lookout_tests::Agent> = (3..5)
        .map(|i| {
            let cfg = lookout_tests::write_agent_config(dirs[i].path(), &agent_config);
            lookout_tests::Agent::start_publishing(
                &dirs[i].path().join("buffer"),
                &urls,
                &["--config", &cfg],
            )
        })
        .collect();
    let client = reqwest::Client::new();
    balanced(&[&c0, &c1, &c2]).await;

    let ids: Vec<[u8; 16]> = (0..240).map(|s| writer_trace_id(7, 0, s)).collect();
    let mut c1 = Some(c1);
    for (i, id) in ids.iter().enumerate() {
        let agent = &agents[i % 2];
        let body = three_span_trace("checkout", *id).encode_to_vec();
        // Acknowledged by the agent: in its disk buffer, published from there.
        post(&client, agent, "/v1/traces", body).await;
        if i == 80 {
            if let Some(c) = c1.take() {
                c.kill9();
            }
        }
        if i == 160 {
            nats.kill(2);
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for a in &agents {
        a.wait_shipped(Duration::from_secs(60)).await;
    }
    // What the killed collector stored comes back with it (stores are not replicated;
    // the stream is): it restarts on its data directory and takes its share back.
    let c1 = start(1);
    balanced(&[&c0, &c1, &c2]).await;
    // Every span once, asked from any collector.
    poll(
        Duration::from_secs(60),
        "every acknowledged trace whole",
        || async {
            for (id, n) in ids.iter().zip([&c0, &c1, &c2].iter().cycle()) {
                let (code, t) =
                    get_json(&n.api_url(&format!("/api/v1/traces/{}", hex::encode(id)))).await;
                let spans: Vec<&str> = t["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["span_id"].as_str())
                    .collect();
                if code != 200 || spans.len() != 3 {
                    eprintln!(
                        "trace {}: {code}, {} spans: {t}",
                        hex::encode(id),
                        spans.len()
                    );
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    let m = c0.metrics().await;
    assert!(
        metric_value(&m, "lookout_cluster_owned_partitions").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
}

/// The Jaeger query API answers for the whole cluster from either member: the services
/// and operations of both, a search listing each trace once (newest first, `limit`
/// respected), a trace by id from the member that does not store it; a member that does
/// not answer is named in `errors` beside what the other found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_api_answers_for_the_whole_cluster() {
    let nats = NatsCluster::start();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start =
        |i: usize| Collector::start_with_config(dirs[i].path(), &config(&nats, &format!("c{i}")));
    let (c0, c1) = (start(0), start(1));
    let nodes = [&c0, &c1];
    let client = reqwest::Client::new();
    balanced(&nodes).await;
    // One trace per partition, all through c0; and one of another service.
    let ids: Vec<[u8; 16]> = (0..8).map(|s| writer_trace_id(7, 0, s)).collect();
    send(&client, &[&c0], &ids).await;
    let payments = writer_trace_id(8, 0, 1);
    let body = three_span_trace("payments", payments).encode_to_vec();
    post(&client, &c0, "/v1/traces", body).await;
    let all: Vec<[u8; 16]> = ids.iter().chain([&payments]).copied().collect();
    each_stored_once(&client, &nodes, &all).await;
    // Which member stores each trace.
    let mut holder = std::collections::HashMap::new();
    for id in &all {
        for (i, n) in nodes.iter().enumerate() {
            if holders(&client, &[n], *id).await == [3] {
                holder.insert(*id, i);
            }
        }
    }
    let on_c0 = ids.iter().filter(|id| holder[*id] == 0).count();
    assert!(0 < on_c0 && on_c0 < ids.len(), "{holder:?}");
    let other = nodes[1 - holder[&payments]];

    // Services and operations of both members from either (once their trace summaries
    // are written).
    for n in nodes {
        let url = n.api_url("/jaeger/api/services");
        let r = poll(Duration::from_secs(15), "both services listed", || async {
            let (_, r) = get_json(&url).await;
            (r["data"].as_array()?.len() >= 2).then_some(r)
        })
        .await;
        assert_eq!(
            (&r["data"], &r["errors"]),
            (
                &serde_json::json!(["checkout", "payments"]),
                &serde_json::Value::Null
            ),
            "{r}"
        );
    }
    let (_, r) = get_json(&other.api_url("/jaeger/api/services/payments/operations")).await;
    assert_eq!(r["data"], serde_json::json!(["op1", "op2", "op3"]), "{r}");
    let (_, r) = get_json(&other.api_url("/jaeger/api/operations?service=payments")).await;
    assert_eq!(r["data"].as_array().map(Vec::len), Some(3), "{r}");

    // A search from c1 lists every trace once, whole, newest first; `limit` holds.
    let search = "/jaeger/api/traces?service=checkout&limit=100&lookback=1h";
    let r = poll(Duration::from_secs(15), "every trace listed", || async {
        let (_, r) = get_json(&c1.api_url(search)).await;
        (r["data"].as_array()?.len() >= ids.len()).then_some(r)
    })
    .await;
    assert_eq!(r["errors"], serde_json::Value::Null, "{r}");
    let data = r["data"].as_array().cloned().unwrap_or_default();
    let mut listed: Vec<String> = data
        .iter()
        .filter_map(|t| t["traceID"].as_str().map(String::from))
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().map(hex::encode).collect();
    assert_eq!(listed, newest_first, "{r}");
    assert!(
        data.iter()
            .all(|t| t["spans"].as_array().map(Vec::len) == Some(3)),
        "{r}"
    );
    let (_, r) = get_json(&c1.api_url(&search.replace("limit=100", "limit=3"))).await;
    let first3: Vec<String> = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["traceID"].as_str().map(String::from))
        .collect();
    assert_eq!(first3, newest_first[..3], "{r}");

    // A trace by id from the member that does not store it, with all its spans.
    for id in &all {
        let n = nodes[1 - holder[id]];
        let (code, r) =
            get_json(&n.api_url(&format!("/jaeger/api/traces/{}", hex::encode(id)))).await;
        assert_eq!(
            (code, r["data"][0]["spans"].as_array().map(Vec::len)),
            (200, Some(3)),
            "{r}"
        );
    }
    let (code, r) = get_json(&c0.api_url("/jaeger/api/dependencies")).await;
    assert_eq!((code, &r["errors"]), (200, &serde_json::Value::Null), "{r}");

    // c0 gone: c1 answers with what it holds, naming c0 in `errors`.
    c0.kill9();
    let (code, r) = get_json(&c1.api_url(search)).await;
    assert_eq!(code, 200, "{r}");
    assert!(
        r["errors"].to_string().contains("node c0 did not answer"),
        "{r}"
    );
    listed = r["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["traceID"].as_str().map(String::from))
        .collect();
    let on_c1: Vec<String> = ids
        .iter()
        .rev()
        .filter(|id| holder[*id] == 1)
        .map(hex::encode)
        .collect();
    assert_eq!(listed, on_c1, "{r}");
    let (code, r) = get_json(&c1.api_url("/jaeger/api/services")).await;
    assert_eq!(code, 200, "{r}");
    assert!(
        r["errors"].to_string().contains("node c0 did not answer"),
        "{r}"
    );
}
