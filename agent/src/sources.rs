//! Data the agent produces itself: tailed log files and host metrics.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lookout_config::AgentConfig;
use lookout_proto::otlp::common::v1::KeyValue;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::sink::Sink;
use crate::tail;

/// Start the tailer and the host-metrics collector; their tasks end (after a final
/// flush) when `shutdown` is cancelled.
pub fn spawn(
    cfg: &AgentConfig,
    state_dir: &Path,
    base_resource: Vec<KeyValue>,
    recovered: HashMap<u64, u64>,
    sink: Arc<dyn Sink>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let tail_metrics = tail::TailMetrics::new(registry)?;
    if !cfg.tail.is_empty() {
        tasks.push(tail::spawn(
            tail::TailerSetup {
                entries: cfg.tail.clone(),
                state_dir: state_dir.to_path_buf(),
                base_resource: base_resource.clone(),
                recovered,
                sink: sink.clone(),
                metrics: tail_metrics,
                max_batch_records: 1000,
                batch_timeout: Duration::from_millis(200),
            },
            shutdown.clone(),
        )?);
    }
    if let Some(t) = crate::host::spawn(
        crate::host::HostMetricsSetup {
            cfg: cfg.host_metrics.clone(),
            base_resource: host_resource(base_resource),
            sink,
            registry: registry.clone(),
        },
        shutdown,
    )? {
        tasks.push(t);
    }
    Ok(tasks)
}

/// `service.name` of the host metrics when `[resource] service_name` is not set: their
/// Prometheus `job` on the collector, instead of `unknown_service`.
pub const HOST_METRICS_SERVICE: &str = "lookout-agent";

/// The resource of host metrics: `base` with [`HOST_METRICS_SERVICE`] as `service.name`
/// unless it has one.
fn host_resource(mut base: Vec<KeyValue>) -> Vec<KeyValue> {
    if !base.iter().any(|kv| kv.key == "service.name") {
        base.insert(
            0,
            lookout_proto::attr::string("service.name", HOST_METRICS_SERVICE),
        );
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_metrics_are_named_after_the_agent_unless_a_service_is_configured() {
        let host = lookout_proto::attr::string("host.name", "h");
        let r = host_resource(vec![host.clone()]);
        assert_eq!(r[0].key, "service.name");
        assert_eq!(
            lookout_proto::attr::string("service.name", "lookout-agent"),
            r[0]
        );
        let own = lookout_proto::attr::string("service.name", "sidecar");
        let r = host_resource(vec![own.clone(), host]);
        assert_eq!(r.iter().filter(|kv| kv.key == "service.name").count(), 1);
        assert_eq!(r[0], own);
    }
}
