//! `[host_metrics]`: host and process metrics the agent collects.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;
use crate::Violation;

/// Host and process metrics (Linux: read from `/proc` and `statvfs`).
///
/// At most one of `pid`, `pid_file` and `process_name` names the watched process; with
/// none of them only host metrics are collected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    /// Collect at all.
    pub enabled: bool,
    /// Collection period.
    pub interval: HumanDuration,
    /// Process id of the watched process (0: none).
    pub pid: u32,
    /// File holding the process id of the watched process, re-read every interval (empty:
    /// none).
    pub pid_file: PathBuf,
    /// Name of the watched process as in `/proc/PID/comm` (compared on its first 15 bytes,
    /// as the kernel truncates it); the lowest matching pid is watched (empty: none).
    pub process_name: String,
    /// Collect `system.disk.*` from `/proc/diskstats`.
    pub disks: bool,
    /// Collect `system.filesystem.*` of local disk filesystems from `/proc/mounts`.
    pub filesystems: bool,
    /// Collect `system.network.*` from `/proc/net/dev` (the loopback interface excluded).
    pub network: bool,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: HumanDuration::from_secs(10),
            pid: 0,
            pid_file: PathBuf::new(),
            process_name: String::new(),
            disks: true,
            filesystems: true,
            network: true,
        }
    }
}

impl HostMetricsConfig {
    /// Longest process name the kernel keeps in `/proc/PID/comm`.
    pub const COMM_LEN: usize = 15;

    /// `process_name` as `/proc/PID/comm` shows it: cut to [`Self::COMM_LEN`] bytes.
    pub fn process_comm(&self) -> &[u8] {
        let b = self.process_name.as_bytes();
        &b[..b.len().min(Self::COMM_LEN)]
    }

    /// Check the values; keys in errors are relative to `[host_metrics]`.
    pub fn validate(&self) -> Result<(), Violation> {
        if self.interval.get() < std::time::Duration::from_secs(1) {
            return Err(Violation::new(
                "interval",
                format!("must be at least 1s, got {}", self.interval),
            ));
        }
        let given = [
            (self.pid != 0, "pid"),
            (!self.pid_file.as_os_str().is_empty(), "pid_file"),
            (!self.process_name.is_empty(), "process_name"),
        ];
        let set: Vec<&str> = given.iter().filter(|(on, _)| *on).map(|g| g.1).collect();
        if let [first, second, ..] = set.as_slice() {
            return Err(Violation::new(
                *second,
                format!(
                    "only one of pid, pid_file and process_name may be set, {first} is set too"
                ),
            ));
        }
        if self.process_name.contains('/') || self.process_name.trim() != self.process_name {
            return Err(Violation::new("process_name", format!(
                    "expected a process name as in /proc/PID/comm (no '/', no surrounding spaces), got {:?}",
                    self.process_name
                )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{assert_refused_at, parsed};
    use crate::AgentConfig;

    #[test]
    fn host_metrics_keys_parse_and_default() {
        let c: AgentConfig = parsed(
            "a.toml",
            "[host_metrics]\ninterval = \"30s\"\nprocess_name = \"nginx\"\nfilesystems = false\n",
        );
        assert_eq!(c.host_metrics.interval.get().as_secs(), 30);
        assert_eq!(c.host_metrics.process_name, "nginx");
        assert!(!c.host_metrics.filesystems && c.host_metrics.disks && c.host_metrics.network);
        assert_eq!(
            parsed::<AgentConfig>("a.toml", "[host_metrics]\n"),
            AgentConfig::default()
        );
    }

    #[test]
    fn host_metrics_errors_name_their_key() {
        let cases = [
            (
                "[host_metrics]\ninterval = \"100ms\"\n",
                "host_metrics.interval",
            ),
            (
                "[host_metrics]\npid = 12\nprocess_name = \"x\"\n",
                "host_metrics.process_name",
            ),
            (
                "[host_metrics]\npid = 12\npid_file = \"/run/x.pid\"\n",
                "host_metrics.pid_file",
            ),
            (
                "[host_metrics]\nprocess_name = \"/usr/bin/x\"\n",
                "host_metrics.process_name",
            ),
            ("[host_metrics]\npid = -1\n", "host_metrics.pid"),
            ("[host_metrics]\ncpu = true\n", "host_metrics.cpu"),
        ];
        assert_refused_at::<AgentConfig>("a.toml", &cases);
    }
}
