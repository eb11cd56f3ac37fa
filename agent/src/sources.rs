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
            base_resource,
            sink,
            registry: registry.clone(),
        },
        shutdown,
    )? {
        tasks.push(t);
    }
    Ok(tasks)
}
