//! What a member knows of the cluster: members, lease holders, its lag, whether it leads
//! the alert evaluation, and where the alert state is kept. Read by the API and the alert
//! engine, written by the member's lease loop and consumers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use async_nats::jetstream::kv;
use parking_lot::Mutex;

use super::lease::Member;

/// What this node knows of the cluster, for the API.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    /// This node's member entry.
    pub me: Member,
    /// Partitions in the stream.
    pub partitions: u32,
    pub(super) state: Mutex<StatusState>,
    /// Whether this node holds the alert leader's lease.
    pub(super) leader: AtomicBool,
    /// Where the alert leader keeps the alert state, once connected.
    pub(super) alert_state: OnceLock<kv::Store>,
    /// Messages consumed into the WAL since start.
    pub(super) consumed: AtomicU64,
    /// Messages delivered more than once since start.
    pub(super) redelivered: AtomicU64,
}

#[derive(Debug, Default, Clone)]
pub(super) struct StatusState {
    pub(super) owned: Vec<u32>,
    pub(super) members: BTreeMap<String, Member>,
    /// Holder of each partition's lease, as last read.
    pub(super) holders: BTreeMap<u32, String>,
    pub(super) connected: bool,
    /// Messages not yet delivered, per owned partition, as of its last delivery.
    pub(super) lag: BTreeMap<u32, u64>,
    /// Holder of the alert leader's lease, as last read.
    pub(super) alerts_leader: Option<String>,
}

impl ClusterStatus {
    /// The status of `me` in a stream of `partitions`, before it joins.
    pub fn new(me: Member, partitions: u32) -> Self {
        Self {
            me,
            partitions,
            state: Mutex::default(),
            leader: AtomicBool::new(false),
            alert_state: OnceLock::new(),
            consumed: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
        }
    }

    /// Whether this node evaluates the alert rules for the cluster now.
    pub fn is_alert_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// The alert state the leader keeps in the cluster, if any (JSON of the engine's
    /// persisted state).
    pub async fn load_alert_state(&self) -> Result<Option<bytes::Bytes>, String> {
        let Some(store) = self.alert_state.get() else {
            return Err("not connected to the cluster yet".into());
        };
        store.get(ALERT_STATE_KEY).await.map_err(|e| e.to_string())
    }

    /// Keep the alert state in the cluster, for the next leader.
    pub async fn store_alert_state(&self, json: Vec<u8>) -> Result<(), String> {
        let Some(store) = self.alert_state.get() else {
            return Err("not connected to the cluster yet".into());
        };
        store
            .put(ALERT_STATE_KEY, json.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The member that evaluates the alert rules, as last read.
    pub fn alerts_leader(&self) -> Option<String> {
        self.state.lock().alerts_leader.clone()
    }

    /// Partitions this node consumes.
    pub fn owned(&self) -> Vec<u32> {
        self.state.lock().owned.clone()
    }

    /// The members seen at the last round.
    pub fn members(&self) -> BTreeMap<String, Member> {
        self.state.lock().members.clone()
    }

    pub(super) fn set_lag(&self, partition: u32, pending: u64) {
        self.state.lock().lag.insert(partition, pending);
    }

    /// The view of `GET /api/v1/cluster`.
    pub fn view(&self) -> lookout_proto::api::ClusterResponse {
        let st = self.state.lock();
        let lag = st
            .owned
            .iter()
            .map(|p| st.lag.get(p).copied().unwrap_or(0))
            .sum::<u64>();
        let consume = self.me.consume;
        let lag = consume.then_some(lag);
        let consumed = consume.then(|| self.consumed.load(Ordering::Relaxed));
        let redelivered = consume.then(|| self.redelivered.load(Ordering::Relaxed));
        let mine = |m: &Member| m.node == self.me.node;
        let members = st
            .members
            .values()
            .map(|m| lookout_proto::api::ClusterMember {
                node: m.node.clone(),
                api: m.api.clone(),
                consume: m.consume,
                partitions: st
                    .holders
                    .iter()
                    .filter(|(_, h)| **h == m.node)
                    .map(|(p, _)| *p)
                    .collect(),
                lag_messages: lag.filter(|_| mine(m)),
                consumed_messages: consumed.filter(|_| mine(m)),
                redelivered_messages: redelivered.filter(|_| mine(m)),
            })
            .collect();
        lookout_proto::api::ClusterResponse {
            enabled: true,
            node: self.me.node.clone(),
            partitions: self.partitions,
            connected: st.connected,
            members,
            unowned: (0..self.partitions)
                .filter(|p| !st.holders.contains_key(p))
                .collect(),
            alerts_leader: st.alerts_leader.clone(),
            warnings: Vec::new(),
        }
    }
}

/// Fill the figures only a member knows of itself (lag, consumed, redelivered) into
/// `view`, from each member's own answer in `answers`.
pub fn fill_member_figures(
    view: &mut lookout_proto::api::ClusterResponse,
    answers: impl IntoIterator<Item = lookout_proto::api::ClusterResponse>,
) {
    for a in answers {
        let Some(own) = a.members.into_iter().find(|m| m.node == a.node) else {
            continue;
        };
        if let Some(m) = view.members.iter_mut().find(|m| m.node == own.node) {
            m.lag_messages = own.lag_messages;
            m.consumed_messages = own.consumed_messages;
            m.redelivered_messages = own.redelivered_messages;
        }
    }
}

/// Key of the alert state in the `<stream>-alerts` bucket.
const ALERT_STATE_KEY: &str = "state";
