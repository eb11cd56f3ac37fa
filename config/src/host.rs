//! `[host_metrics]`: host and process metrics the agent collects.

use serde::Deserialize;

use crate::units::HumanDuration;

/// Host and process metrics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    /// Collect at all.
    pub enabled: bool,
    /// Collection period.
    pub interval: HumanDuration,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::from_secs(10),
        }
    }
}

impl HostMetricsConfig {
    /// Check the values; keys in errors are relative to `[host_metrics]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.interval.get() < std::time::Duration::from_secs(1) {
            return Err((
                "interval".into(),
                format!("must be at least 1s, got {}", self.interval),
            ));
        }
        Ok(())
    }
}
