//! A member's lease loop: announce itself, take, renew and hand back partition leases
//! and the alert leader's lease, and run one consumer per partition held.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use lookout_cluster::gateway::Link;
use lookout_ingest::Budget;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::consume;
use super::lease::{self, Member};
use super::metrics::ClusterMetrics;
use super::status::ClusterStatus;
use crate::wal::Wal;

/// This node's place in the cluster.
pub struct NodeSetup {
    /// Member entry.
    pub me: Member,
    /// Stream name.
    pub stream: String,
    /// Subject prefix.
    pub prefix: String,
    /// Partitions.
    pub partitions: u32,
    /// Replicas of the lease bucket.
    pub replicas: usize,
    /// Lease time-to-live.
    pub lease_ttl: Duration,
}

/// Start membership, leases and consumers; the task ends after `shutdown`, once its
/// consumers have written and acknowledged what they took and its leases are given back.
pub fn spawn(
    setup: NodeSetup,
    status: Arc<ClusterStatus>,
    link: Link,
    wal: Wal,
    budget: Arc<Budget>,
    metrics: ClusterMetrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let node = Node {
        setup,
        link,
        wal,
        budget,
        metrics,
        status,
    };
    tokio::spawn(node.run(shutdown))
}

struct Node {
    setup: NodeSetup,
    link: Link,
    wal: Wal,
    budget: Arc<Budget>,
    metrics: ClusterMetrics,
    status: Arc<ClusterStatus>,
}

impl Node {
    async fn run(self, shutdown: CancellationToken) {
        let js = loop {
            if let Some(j) = self.link.get() {
                break j.context().clone();
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        };
        let s = &self.setup;
        // Lease requests answer within a fraction of the TTL or fail: one lost with a
        // NATS node must not hold up the round until every lease expired.
        let mut kv_js = js.clone();
        kv_js.set_timeout((s.lease_ttl / 4).max(Duration::from_millis(250)));
        let bucket = format!("{}-leases", s.stream);
        let Some(store) = lease::bucket(&kv_js, &bucket, s.lease_ttl, s.replicas, &shutdown).await
        else {
            return;
        };
        let Some(alerts) = lease::bucket(
            &kv_js,
            &format!("{}-alerts", s.stream),
            Duration::ZERO,
            s.replicas,
            &shutdown,
        )
        .await
        else {
            return;
        };
        let _ = self.status.alert_state.set(alerts);
        let me = s.me.node.clone();
        self.status.state.lock().connected = true;
        let mut leader_rev: Option<u64> = None;
        let mut held: BTreeMap<u32, lease::Held> = BTreeMap::new();
        let mut holders: BTreeMap<u32, String> = BTreeMap::new();
        let mut free_rounds = vec![0u32; s.partitions as usize];
        let period = s.lease_ttl / 3;
        loop {
            // Leases first, all at once: a round slowed by a loaded machine must not let
            // them expire.
            self.renew(&store, &me, &mut held).await;
            if let Err(e) = lease::announce(&store, &s.me).await {
                tracing::warn!(error = %e, "cannot announce this node to the cluster");
            }
            // Listing reads the bucket through a consumer of its own, which a lost server
            // can stall past the request timeout.
            let listed = tokio::time::timeout(s.lease_ttl / 2, lease::members(&store))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            let members = match listed {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the cluster's members");
                    self.status.members()
                }
            };
            let consuming: Vec<String> = members
                .values()
                .filter(|m| m.consume)
                .map(|m| m.node.clone())
                .collect();
            self.metrics.members.set(members.len() as i64);
            // Every lease not held here, read at once.
            let reads = (0..s.partitions)
                .filter(|p| !held.contains_key(p))
                .map(|p| {
                    let store = &store;
                    async move { (p, lease::holder(store, p).await) }
                });
            let read: BTreeMap<u32, Result<Option<String>, String>> =
                futures::future::join_all(reads).await.into_iter().collect();
            for p in 0..s.partitions {
                let holder = match (s.me.consume, read.get(&p)) {
                    (true, seen) => {
                        let want = lease::assigned(p, &consuming);
                        let seen = seen.cloned().unwrap_or(Ok(None));
                        self.round(&store, &js, p, want, &me, seen, &mut held, &mut free_rounds)
                            .await
                    }
                    (false, Some(Ok(h))) => h.clone(),
                    (false, _) => continue,
                };
                match holder {
                    Some(h) => holders.insert(p, h),
                    None => holders.remove(&p),
                };
            }
            let alerts_leader = self.lead_alerts(&store, &me, &mut leader_rev).await;
            self.metrics.owned.set(held.len() as i64);
            {
                let mut st = self.status.state.lock();
                st.owned = held.keys().copied().collect();
                st.members = members;
                st.holders = holders.clone();
                st.alerts_leader = alerts_leader;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        for (p, h) in std::mem::take(&mut held) {
            h.stop().await;
            let _ = store.delete(lease::lease_key(p)).await;
        }
        if leader_rev.is_some() {
            self.status.leader.store(false, Ordering::Release);
            let _ = store.delete(lease::ALERTS_LEADER).await;
        }
        let _ = store.delete(lease::member_key(&me)).await;
        tracing::info!("left the cluster");
    }

    /// Renew or take the alert leader's lease; returns its holder.
    async fn lead_alerts(
        &self,
        store: &kv::Store,
        me: &str,
        revision: &mut Option<u64>,
    ) -> Option<String> {
        let value = Bytes::from(me.to_string());
        if let Some(rev) = *revision {
            match store.update(lease::ALERTS_LEADER, value.clone(), rev).await {
                Ok(r) => {
                    *revision = Some(r);
                    return Some(me.to_string());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alert leader's lease lost");
                    *revision = None;
                    self.status.leader.store(false, Ordering::Release);
                }
            }
        }
        match lease::holder_of(store, lease::ALERTS_LEADER).await {
            Ok(Some(h)) => Some(h),
            Ok(None) => match store.create(lease::ALERTS_LEADER, value).await {
                Ok(r) => {
                    tracing::info!("this node evaluates the alert rules for the cluster");
                    *revision = Some(r);
                    self.status.leader.store(true, Ordering::Release);
                    Some(me.to_string())
                }
                Err(_) => None,
            },
            Err(_) => None,
        }
    }

    /// Renew every lease held, at once, each at the revision it was last written; a lease
    /// that cannot be renewed (taken over after it expired) stops its consumer.
    async fn renew(&self, store: &kv::Store, me: &str, held: &mut BTreeMap<u32, lease::Held>) {
        let value = Bytes::from(me.to_string());
        let renewals = held.iter().map(|(p, h)| {
            let (p, rev, value) = (*p, h.revision, value.clone());
            async move { (p, store.update(lease::lease_key(p), value, rev).await) }
        });
        let results = futures::future::join_all(renewals).await;
        for (p, r) in results {
            match r {
                Ok(rev) => {
                    if let Some(h) = held.get_mut(&p) {
                        h.revision = rev;
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "partition lease lost; stopping its consumer");
                    if let Some(h) = held.remove(&p) {
                        h.stop().await;
                    }
                    self.metrics.leases.with_label_values(&["lost"]).inc();
                }
            }
        }
    }

    /// One partition's turn of a round: hand back or take its lease (`seen`: its holder
    /// as read this round, when not held here). Returns the holder after it (`None`:
    /// free or unknown).
    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        store: &async_nats::jetstream::kv::Store,
        js: &async_nats::jetstream::Context,
        p: u32,
        want: Option<&str>,
        me: &str,
        seen: Result<Option<String>, String>,
        held: &mut BTreeMap<u32, lease::Held>,
        free_rounds: &mut [u32],
    ) -> Option<String> {
        let key = lease::lease_key(p);
        let value = Bytes::from(me.to_string());
        if held.contains_key(&p) {
            if want.is_some_and(|w| w != me) {
                if let Some(h) = held.remove(&p) {
                    h.stop().await;
                }
                match store.delete(&key).await {
                    Ok(()) => tracing::info!(partition = p, to = want, "partition handed back"),
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "cannot give the partition's lease back; it expires")
                    }
                }
                self.metrics.leases.with_label_values(&["released"]).inc();
                return None;
            }
            return Some(me.to_string());
        }
        let idx = p as usize;
        match seen {
            Ok(Some(h)) => {
                free_rounds[idx] = 0;
                Some(h)
            }
            Ok(None) => {
                free_rounds[idx] += 1;
                if want == Some(me) || free_rounds[idx] >= 3 {
                    if let Ok(revision) = store.create(&key, value).await {
                        free_rounds[idx] = 0;
                        let stop = CancellationToken::new();
                        let part = consume::Partition {
                            status: self.status.clone(),
                            partition: p,
                            js: js.clone(),
                            stream: self.setup.stream.clone(),
                            prefix: self.setup.prefix.clone(),
                            wal: self.wal.clone(),
                            budget: self.budget.clone(),
                            metrics: self.metrics.clone(),
                        };
                        let task = tokio::spawn(part.run(stop.clone()));
                        held.insert(
                            p,
                            lease::Held {
                                revision,
                                stop,
                                task,
                            },
                        );
                        self.metrics.leases.with_label_values(&["acquired"]).inc();
                        return Some(me.to_string());
                    }
                }
                None
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot read the partition's lease");
                None
            }
        }
    }
}
