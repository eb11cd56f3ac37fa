//! Partition ownership by lease in a JetStream key-value bucket (`<stream>-leases`, R as
//! the stream, entries expiring after `lease_ttl`):
//!
//! - `node.<name>`: a member, put again every round with its API URL; a node that stops
//!   putting it drops out after the TTL.
//! - `part.<p>`: the lease of partition `p`, the holder's name. Taken with `create` (only
//!   when no one holds it), renewed with `update` at the revision read (so a holder that
//!   lost it to a take-over learns so), given back with `delete` after its consumer has
//!   written and acknowledged everything it took.
//!
//! Every node computes the same assignment from the members it sees (sorted names,
//! partition `p` to member `p mod n`), takes the free partitions assigned to it, and hands
//! back the ones assigned to another live member: a node that returns gets its share
//! back within a round or two. A partition left free for three rounds (members seeing
//! different member lists) is taken by whoever sees it, so none stays unconsumed.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a member puts under `node.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name.
    pub node: String,
    /// Its query API.
    pub api: String,
    /// Whether it takes partitions.
    pub consume: bool,
}

/// The key of partition `p`'s lease.
pub(super) fn lease_key(p: u32) -> String {
    format!("part.{p}")
}

/// The key of a member.
pub(super) fn member_key(node: &str) -> String {
    format!("node.{node}")
}

/// The member that should own partition `p`: sorted consuming members, `p mod n`.
pub(super) fn assigned(p: u32, consuming: &[String]) -> Option<&str> {
    if consuming.is_empty() {
        return None;
    }
    Some(&consuming[p as usize % consuming.len()])
}

/// A partition this node holds: its lease's revision and its consumer.
pub(super) struct Held {
    pub revision: u64,
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Held {
    /// Stop the consumer and wait until what it took is written and acknowledged, at
    /// most `STOP_WAIT`; a consumer stuck longer (a server lost mid-request) is aborted:
    /// what it did not acknowledge is delivered again, and what it wrote is skipped.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("a partition's consumer did not stop in time; aborted");
            self.task.abort();
        }
    }
}

/// Longest wait for a partition's consumer to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The bucket, opened or created (retried while JetStream elects a meta leader); its
/// entries expire after `ttl` (zero: never).
pub(super) async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    ttl: Duration,
    replicas: usize,
    stop: &CancellationToken,
) -> Option<kv::Store> {
    let mut delay = Duration::from_millis(250);
    loop {
        let r = match js.get_key_value(name).await {
            Ok(s) => Ok(s),
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: name.to_string(),
                    description: "Lookout cluster state".into(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: replicas,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string()),
        };
        match r {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!(bucket = name, error = %e, "cannot open the lease bucket; retrying")
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The members present in the bucket.
pub(super) async fn members(store: &kv::Store) -> Result<BTreeMap<String, Member>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| e.to_string())?;
        let Some(name) = k.strip_prefix("node.") else {
            continue;
        };
        if let Ok(Some(v)) = store.get(&k).await {
            if let Ok(m) = serde_json::from_slice::<Member>(&v) {
                out.insert(name.to_string(), m);
            }
        }
    }
    Ok(out)
}

/// Put this node's member entry.
pub(super) async fn announce(store: &kv::Store, me: &Member) -> Result<(), String> {
    let body = serde_json::to_vec(me).map_err(|e| e.to_string())?;
    store
        .put(member_key(&me.node), Bytes::from(body))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The key of the alert leader's lease.
pub(super) const ALERTS_LEADER: &str = "alerts.leader";

/// The holder of partition `p`'s lease, if any.
pub(super) async fn holder(store: &kv::Store, p: u32) -> Result<Option<String>, String> {
    holder_of(store, &lease_key(p)).await
}

/// The holder of the lease `key`, if any.
pub(super) async fn holder_of(store: &kv::Store, key: &str) -> Result<Option<String>, String> {
    match store.entry(key).await {
        Ok(Some(e)) if e.operation == kv::Operation::Put => {
            Ok(Some(String::from_utf8_lossy(&e.value).into_owned()))
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_spread_over_the_sorted_members() {
        let nodes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let owners: Vec<&str> = (0..6).map(|p| assigned(p, &nodes).unwrap_or("")).collect();
        assert_eq!(owners, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(assigned(3, &[]), None);
        assert_eq!(lease_key(12), "part.12");
        assert_eq!(member_key("n1"), "node.n1");
    }
}
