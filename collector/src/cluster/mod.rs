//! Cluster mode (`[cluster]`, `docs/CLUSTER.md`): the receivers publish to the stream
//! (`lookout_cluster::gateway`), and this module makes the node a member that owns
//! partitions by lease ([`lease`], [`node`]) and consumes each into its WAL
//! ([`consume`]); [`peers`] asks the other members, [`status`] is what the node knows.

mod consume;
mod lease;
mod metrics;
mod node;
pub mod peers;
mod status;

pub use lease::Member;
pub use metrics::ClusterMetrics;
pub use node::{spawn, NodeSetup};
pub use status::{fill_member_figures, ClusterStatus};
