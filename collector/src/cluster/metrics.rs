//! Self-metrics of a member: partitions, lag, consumption, leases.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Self-metrics of consuming.
#[derive(Clone)]
pub struct ClusterMetrics {
    pub(super) owned: IntGauge,
    pub(super) members: IntGauge,
    pub(super) lag: IntGaugeVec,
    pub(super) consumed: IntCounterVec,
    pub(super) redelivered: IntCounter,
    pub(super) skipped: IntCounter,
    pub(super) poison: IntCounter,
    pub(super) budget_waits: IntCounter,
    pub(super) leases: IntCounterVec,
}

impl ClusterMetrics {
    /// Create and register on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let r = registry;
        Ok(Self {
            owned: reg(r, IntGauge::new("lookout_cluster_owned_partitions", "Partitions this node holds the lease of and consumes.")?)?,
            members: reg(r, IntGauge::new("lookout_cluster_members", "Members of the cluster this node sees.")?)?,
            lag: reg(r, IntGaugeVec::new(Opts::new("lookout_cluster_partition_lag_messages", "Messages of an owned partition not yet delivered to this node, as of its last delivery."), &["partition"])?)?,
            consumed: reg(r, IntCounterVec::new(Opts::new("lookout_cluster_consumed_items_total", "Items (spans, log records, data points) consumed from the stream into the WAL, by signal."), &["signal"])?)?,
            redelivered: reg(r, IntCounter::new("lookout_cluster_redelivered_messages_total", "Messages delivered more than once (an acknowledgement lost or late, a partition moved).")?)?,
            skipped: reg(r, IntCounter::new("lookout_cluster_skipped_messages_total", "Messages delivered again that the WAL already held: acknowledged, not written twice.")?)?,
            poison: reg(r, IntCounter::new("lookout_cluster_poison_messages_total", "Messages that are not an OTLP export request: acknowledged and dropped.")?)?,
            budget_waits: reg(r, IntCounter::new("lookout_cluster_budget_waits_total", "Seconds consuming waited for the stores (the ingest budget was full).")?)?,
            leases: reg(r, IntCounterVec::new(Opts::new("lookout_cluster_lease_changes_total", "Partition leases acquired, handed back and lost, by change."), &["change"])?)?,
        })
    }
}
