//! Self-metrics of the buffer.

use lookout_ingest::seglog::metrics::register as reg;
use lookout_ingest::seglog::DamageCounters;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::format::FRAMING;

/// Self-metrics of the buffer.
#[derive(Clone)]
pub struct BufferMetrics {
    /// Bytes of segment files on disk.
    pub bytes: IntGauge,
    /// Bytes not yet acknowledged by the collector.
    pub unacked_bytes: IntGauge,
    /// Segment files on disk.
    pub segments: IntGauge,
    /// Items appended, by signal.
    pub appended_items: IntCounterVec,
    /// Items deleted unshipped by `when_full = "drop_oldest"`, by signal.
    pub dropped_items: IntCounterVec,
    /// Appends refused, by reason (`full`, `io`, `closed`).
    pub refused_appends: IntCounterVec,
    /// Damaged stretches skipped while reading (`..._corrupt_records_total`), and damage
    /// found by kind (`..._corruptions_total{kind}`: `torn`, `checksum`, `bad_length`,
    /// `bad_header`, `zeroed`, `missing_segment`; see [`super::scan::DamageKind`]).
    pub damage: DamageCounters,
    /// Group commits (one write, maybe one fsync).
    pub commits: IntCounter,
}

impl BufferMetrics {
    /// Create and register on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let cv = |n: &str, h: &str, l: &[&str]| IntCounterVec::new(Opts::new(n, h), l);
        Ok(Self {
            bytes: reg(
                registry,
                IntGauge::new("lookout_agent_buffer_bytes", "Bytes of buffer segments on disk.")?,
            )?,
            unacked_bytes: reg(
                registry,
                IntGauge::new(
                    "lookout_agent_buffer_unacked_bytes",
                    "Bytes in the buffer not yet acknowledged by the collector.",
                )?,
            )?,
            segments: reg(
                registry,
                IntGauge::new("lookout_agent_buffer_segments", "Buffer segment files on disk.")?,
            )?,
            appended_items: reg(
                registry,
                cv(
                    "lookout_agent_buffer_appended_items_total",
                    "Items written to the buffer, by signal.",
                    &["signal"],
                )?,
            )?,
            dropped_items: reg(
                registry,
                cv(
                    "lookout_agent_buffer_dropped_items_total",
                    "Items deleted unshipped because the buffer was full (when_full = drop_oldest).",
                    &["signal"],
                )?,
            )?,
            refused_appends: reg(
                registry,
                cv(
                    "lookout_agent_buffer_refused_appends_total",
                    "Appends refused, by reason (full, io, closed).",
                    &["reason"],
                )?,
            )?,
            damage: DamageCounters::register(
                registry,
                &FRAMING,
                (
                    "lookout_agent_buffer_corrupt_records_total",
                    "Damaged stretches of buffer segments skipped.",
                ),
                (
                    "lookout_agent_buffer_corruptions_total",
                    "Damage found in the buffer, by kind (torn, checksum, bad_length, bad_header, zeroed, missing_segment).",
                ),
            )?,
            commits: reg(
                registry,
                IntCounter::new(
                    "lookout_agent_buffer_commits_total",
                    "Group commits of the buffer writer.",
                )?,
            )?,
        })
    }
}
