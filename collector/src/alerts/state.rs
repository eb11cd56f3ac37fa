//! The alert state kept in `DATA_DIR/alerts/state.json`: instances and their state
//! machine, what each receiver's groups were last told, undelivered notifications and
//! delivery notes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::model::Labels;
use super::notify::Outgoing;

/// The state of an alert instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum St {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl St {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            St::Inactive => "inactive",
            St::Pending => "pending",
            St::Firing => "firing",
            St::Resolved => "resolved",
        }
    }
}

/// One label set of one rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Instance {
    pub(super) rule: String,
    pub(super) labels: Labels,
    pub(super) fingerprint: String,
    pub(super) state: St,
    /// When it entered its state.
    pub(super) since_ms: i64,
    /// When its condition began to hold (pending or firing).
    pub(super) active_ms: Option<i64>,
    /// When it last started firing.
    pub(super) firing_ms: Option<i64>,
    /// When its condition last held (for `keep_firing_for`).
    pub(super) last_true_ms: Option<i64>,
    pub(super) resolved_ms: Option<i64>,
    /// The latest value; `None` without data.
    pub(super) value: Option<f64>,
    pub(super) annotations: Labels,
}

impl Instance {
    /// A new, inactive instance of `rule`.
    pub(super) fn new(rule: &str, labels: Labels, fingerprint: String, now: i64) -> Self {
        Self {
            rule: rule.to_string(),
            labels,
            fingerprint,
            state: St::Inactive,
            since_ms: now,
            active_ms: None,
            firing_ms: None,
            last_true_ms: None,
            resolved_ms: None,
            value: None,
            annotations: Labels::new(),
        }
    }
}

/// What one receiver was last told about one group of alerts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Group {
    pub(super) receiver: String,
    pub(super) key: String,
    /// Fingerprints of the firing alerts last notified.
    pub(super) notified: BTreeSet<String>,
    pub(super) last_sent_ms: i64,
}

/// The delivery of a notification of one alert to one receiver, shown on the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Note {
    pub(super) fingerprint: String,
    pub(super) receiver: String,
    pub(super) status: String,
    pub(super) queued_ms: i64,
    /// `pending`, `retrying`, `delivered` or `failed`.
    pub(super) result: String,
    pub(super) attempts: u32,
    pub(super) error: Option<String>,
    /// [`Outgoing::id`] of the notification.
    pub(super) id: u64,
}

/// Everything that survives a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Persisted {
    pub(super) next_id: u64,
    pub(super) instances: Vec<Instance>,
    pub(super) groups: Vec<Group>,
    pub(super) outbox: Vec<Outgoing>,
    pub(super) notes: Vec<Note>,
}

/// The saved state, or none when there is no readable state file.
pub(super) fn load_state(path: &std::path::Path) -> Persisted {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "alert state is unreadable; starting with none");
                Persisted::default()
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read alert state; starting with none");
            Persisted::default()
        }
    }
}

/// Replace the state file atomically (`state.json.tmp`, fsync, rename, directory fsync),
/// created `0640`.
pub(super) fn write_atomic(path: &std::path::Path, state: &Persisted) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    lookout_ingest::fsutil::write_atomic(path, &bytes)
}

/// The state machine of one instance; true when its state changed.
pub(super) fn step(inst: &mut Instance, holds: bool, now: i64, for_ms: i64, keep_ms: i64) -> bool {
    let before = inst.state;
    if holds {
        inst.last_true_ms = Some(now);
    }
    inst.state = match (inst.state, holds) {
        (St::Inactive | St::Resolved, true) => {
            inst.active_ms = Some(now);
            if for_ms == 0 {
                St::Firing
            } else {
                St::Pending
            }
        }
        (St::Pending, true) => {
            if now - inst.active_ms.unwrap_or(now) >= for_ms {
                St::Firing
            } else {
                St::Pending
            }
        }
        (St::Pending, false) => St::Inactive,
        (St::Firing, true) => St::Firing,
        (St::Firing, false) => {
            if inst.last_true_ms.is_some_and(|t| now - t < keep_ms) {
                St::Firing
            } else {
                St::Resolved
            }
        }
        (s, false) => s,
    };
    if inst.state != before {
        inst.since_ms = now;
        match inst.state {
            St::Firing => {
                inst.firing_ms = Some(now);
                inst.resolved_ms = None;
            }
            St::Resolved => inst.resolved_ms = Some(now),
            St::Inactive => inst.active_ms = None,
            St::Pending => {}
        }
        tracing::info!(
            rule = %inst.rule,
            labels = ?inst.labels,
            from = before.as_str(),
            to = inst.state.as_str(),
            value = ?inst.value,
            "alert state changed"
        );
    }
    inst.state != before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> Instance {
        Instance::new("R", Labels::new(), "f".into(), 0)
    }

    #[test]
    fn pending_for_then_firing_then_resolved() {
        let mut i = inst();
        assert!(step(&mut i, true, 0, 30_000, 0));
        assert_eq!(i.state, St::Pending);
        assert!(!step(&mut i, true, 29_000, 30_000, 0));
        assert!(step(&mut i, true, 30_000, 30_000, 0));
        assert_eq!(i.state, St::Firing);
        assert!(step(&mut i, false, 31_000, 30_000, 0));
        assert_eq!(i.state, St::Resolved);
        // A blip while pending goes back to inactive.
        let mut i = inst();
        step(&mut i, true, 0, 30_000, 0);
        step(&mut i, false, 1_000, 30_000, 0);
        assert_eq!(i.state, St::Inactive);
    }

    #[test]
    fn keep_firing_for_rides_out_flapping() {
        let mut i = inst();
        step(&mut i, true, 0, 0, 10_000);
        assert_eq!(i.state, St::Firing);
        assert!(!step(&mut i, false, 5_000, 0, 10_000));
        assert_eq!(i.state, St::Firing);
        step(&mut i, true, 6_000, 0, 10_000);
        assert!(!step(&mut i, false, 15_000, 0, 10_000));
        assert!(step(&mut i, false, 16_000, 0, 10_000));
        assert_eq!(i.state, St::Resolved);
    }
}
