//! The reloadable part of the collector configuration that alerting uses.

use std::collections::BTreeMap;

use lookout_config::{AlertRule, AlertingConfig, CollectorConfig, ReceiverConfig};

/// The reloadable part of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// `[alerting]`.
    pub alerting: AlertingConfig,
    /// `[[alerts]]`.
    pub rules: Vec<AlertRule>,
    /// `[receivers.NAME]`.
    pub receivers: BTreeMap<String, ReceiverConfig>,
}

impl AlertsConfig {
    /// The alerting part of `cfg`.
    pub fn from_collector(cfg: &CollectorConfig) -> Self {
        Self {
            alerting: cfg.alerting.clone(),
            rules: cfg.alerts.clone(),
            receivers: cfg.receivers.clone(),
        }
    }
}
