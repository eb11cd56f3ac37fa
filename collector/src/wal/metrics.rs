//! Self-metrics of the write-ahead log.

use lookout_ingest::seglog::metrics::register as reg;
use lookout_ingest::seglog::DamageCounters;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::record::FRAMING;

/// Self-metrics of the write-ahead log, registered by [`WalMetrics::register`]. Cheap to
/// clone.
#[derive(Clone)]
pub struct WalMetrics {
    /// Bytes of WAL segments on disk.
    pub bytes: IntGauge,
    /// WAL segment files on disk.
    pub segments: IntGauge,
    /// Records appended to the WAL.
    pub records: IntCounter,
    /// Group commits (one write + fsync each).
    pub commits: IntCounter,
    /// Duration of WAL fsyncs.
    pub fsync_seconds: Histogram,
    /// Records replayed from the WAL at start-up.
    pub replayed_records: IntCounter,
    /// Corrupt or torn WAL records skipped at start-up
    /// (`lookout_wal_corrupt_records_total`), and damage found by kind
    /// (`lookout_wal_corruptions_total{kind}`: `torn`, `checksum`, `bad_length`, `zeroed`,
    /// `missing_segment`; see [`lookout_ingest::seglog::DamageKind`]).
    pub damage: DamageCounters,
    /// WAL records with a valid checksum that could not be decoded or applied, moved to
    /// `DATA_DIR/quarantine/`.
    pub quarantined_records: IntCounter,
    /// Free bytes on the WAL's file system (for unprivileged writers), as last read.
    pub disk_free_bytes: IntGauge,
    /// Batches refused because writing them would leave less than `wal.reserve` free.
    pub reserve_refusals: IntCounter,
}

impl WalMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let damage = DamageCounters::register(
            registry,
            &FRAMING,
            (
                "lookout_wal_corrupt_records_total",
                "Torn or corrupt write-ahead log records skipped at start-up.",
            ),
            (
                "lookout_wal_corruptions_total",
                "Damage found in the write-ahead log at start-up, by kind (torn, checksum, bad_length, zeroed, missing_segment).",
            ),
        )?;
        Ok(Self {
            bytes: reg(
                registry,
                IntGauge::new(
                    "lookout_wal_bytes",
                    "Bytes of write-ahead log segments on disk.",
                )?,
            )?,
            segments: reg(
                registry,
                IntGauge::new(
                    "lookout_wal_segments",
                    "Write-ahead log segment files on disk.",
                )?,
            )?,
            records: reg(
                registry,
                IntCounter::new(
                    "lookout_wal_records_total",
                    "Records appended to the write-ahead log.",
                )?,
            )?,
            commits: reg(
                registry,
                IntCounter::new(
                    "lookout_wal_group_commits_total",
                    "Group commits of the write-ahead log (one write and fsync each).",
                )?,
            )?,
            fsync_seconds: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lookout_wal_fsync_duration_seconds",
                        "Duration of write-ahead log fsyncs.",
                    )
                    .buckets(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 1.0,
                    ]),
                )?,
            )?,
            replayed_records: reg(
                registry,
                IntCounter::new(
                    "lookout_wal_replayed_records_total",
                    "Records replayed from the write-ahead log at start-up.",
                )?,
            )?,
            damage,
            quarantined_records: reg(
                registry,
                IntCounter::new(
                    "lookout_wal_quarantined_records_total",
                    "Write-ahead log records with a valid checksum that could not be decoded or applied, set aside in the quarantine directory.",
                )?,
            )?,
            disk_free_bytes: reg(
                registry,
                IntGauge::new(
                    "lookout_wal_disk_free_bytes",
                    "Free bytes on the file system of the write-ahead log (the data disk), as last read.",
                )?,
            )?,
            reserve_refusals: reg(
                registry,
                IntCounter::new(
                    "lookout_wal_reserve_refusals_total",
                    "Batches the write-ahead log refused (503 / UNAVAILABLE) because writing them would leave less than wal.reserve free on the data disk.",
                )?,
            )?,
        })
    }
}
