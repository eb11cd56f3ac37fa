//! The thread that applies OTLP metrics records from the WAL to the [`MetricStore`] that
//! `/metrics` exposes. Metrics are not indexed: each record stays in the WAL for the
//! staleness window, so a restart rebuilds the recent state, and is then released.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout_ingest::Batch;

use super::store::{MetricStore, StoreMetrics};
use crate::wal::{Checkpoints, Quarantine, Record};

/// What the metrics thread needs.
pub struct WindowSetup {
    /// How long a record stays in the WAL after it is applied.
    pub window: Duration,
    /// The OTLP metrics exposed on `/metrics`.
    pub store: Arc<parking_lot::Mutex<MetricStore>>,
    /// What the store does, counted.
    pub metrics: StoreMetrics,
    /// Where the metrics signal's progress is published.
    pub checkpoints: Arc<Checkpoints>,
    /// Where poison records go.
    pub quarantine: Arc<Quarantine>,
    /// Told which services sent metrics.
    pub services: Arc<crate::services::Directory>,
}

/// Start the thread: each record is applied to the store, its budget given back, and kept
/// in the WAL for the window so a restart rebuilds the recent state, then released.
pub fn spawn_metrics_window(
    setup: WindowSetup,
) -> std::io::Result<(mpsc::Sender<Record>, JoinHandle<()>)> {
    let WindowSetup {
        window,
        store,
        metrics,
        checkpoints,
        quarantine,
        services,
    } = setup;
    let (tx, rx) = mpsc::channel::<Record>();
    let handle = std::thread::Builder::new()
        .name("lookout-metrics".into())
        .spawn(move || {
            let mut held: std::collections::VecDeque<(u64, Instant)> = Default::default();
            let mut last_expiry = Instant::now();
            loop {
                let r = rx.recv_timeout(Duration::from_secs(1));
                match r {
                    Ok(rec) => {
                        apply_metrics_record(&rec, &store, &metrics, &quarantine, &services);
                        held.push_back((rec.lsn, Instant::now()));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if last_expiry.elapsed() >= Duration::from_secs(1) {
                    last_expiry = Instant::now();
                    let mut s = store.lock();
                    let expired = s.expire(lookout_ingest::clock::now_unix_nano());
                    metrics.series_expired.inc_by(expired);
                    metrics.set_series(s.series_count());
                }
                while let Some((lsn, at)) = held.front().copied() {
                    if at.elapsed() < window {
                        break;
                    }
                    checkpoints.advance(lookout_ingest::signal::Signal::Metrics, lsn);
                    held.pop_front();
                }
            }
        })?;
    Ok((tx, handle))
}

/// Apply one metrics record to the store (decoding its payload when replayed). A poison
/// record (undecodable, or panicking the store) is copied to the quarantine directory
/// and skipped.
fn apply_metrics_record(
    rec: &Record,
    store: &parking_lot::Mutex<MetricStore>,
    metrics: &StoreMetrics,
    quarantine: &Quarantine,
    services: &crate::services::Directory,
) {
    let now = lookout_ingest::clock::now_unix_nano();
    let decoded;
    let (req, replay) = match &rec.batch {
        Some(Batch::Metrics(req)) => (req, false),
        Some(other) => {
            tracing::error!(lsn = rec.lsn, signal = %other.signal(), "non-metrics batch sent to the metrics thread; skipping it");
            return;
        }
        None => match Batch::decode_protobuf(lookout_ingest::signal::Signal::Metrics, &rec.payload)
        {
            Ok(Batch::Metrics(req)) => {
                decoded = req;
                (&decoded, true)
            }
            Ok(_) => return,
            Err(e) => {
                quarantine.set_aside(rec, &format!("cannot decode the metrics payload: {e}"));
                return;
            }
        },
    };
    services.saw_all(
        lookout_ingest::signal::Signal::Metrics,
        req.resource_metrics
            .iter()
            .map(|rm| {
                lookout_ingest::values::service_name(lookout_ingest::values::resource_attributes(
                    rm.resource.as_ref(),
                ))
            })
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        now / 1_000_000_000,
    );
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut s = store.lock();
        if replay {
            s.replay(req, now)
        } else {
            s.apply(req, now)
        }
    }));
    let report = match applied {
        Ok(r) => r,
        Err(panic) => {
            quarantine.set_aside(
                rec,
                &format!(
                    "applying it to the metrics store panicked: {}",
                    lookout_ingest::process::panic_message(panic.as_ref())
                ),
            );
            return;
        }
    };
    report.publish(metrics);
    metrics.set_series(store.lock().series_count());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use lookout_ingest::Signal;

    use super::*;
    use crate::testing::{counter, quarantined};
    use crate::wal::QUARANTINE_DIR;

    /// The metrics thread quarantines an undecodable replayed record and keeps applying.
    #[test]
    fn undecodable_metrics_record_is_quarantined() {
        let root = tempfile::tempdir().unwrap();
        let registry = prometheus::Registry::new();
        let q = Arc::new(crate::wal::Quarantine::new(
            root.path().join(QUARANTINE_DIR),
            root.path().join("wal"),
            crate::wal::WalMetrics::register(&registry).unwrap(),
        ));
        let store = parking_lot::Mutex::new(MetricStore::new(super::super::StoreConfig::default()));
        let rec = |lsn: u64, payload: &'static [u8]| Record {
            lsn,
            signal: Signal::Metrics,
            payload: Bytes::from_static(payload),
            batch: None,
            charge: None,
            pos: crate::wal::WalPos {
                segment: 3,
                offset: lsn * 100,
            },
        };
        let store_metrics = StoreMetrics::register(&registry).unwrap();
        apply_metrics_record(
            &rec(1, &[0x0a, 0x05, 0xff]),
            &store,
            &store_metrics,
            &q,
            &crate::services::Directory::new(10),
        );
        apply_metrics_record(
            &rec(2, &[]),
            &store,
            &store_metrics,
            &q,
            &crate::services::Directory::new(10),
        );
        let files = quarantined(root.path());
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].0,
            "00000000000000000003-0000000100-lsn00000000000000000001.metrics"
        );
        assert_eq!(files[0].1, [0x0a, 0x05, 0xff]);
        assert_eq!(
            counter(&registry, "lookout_wal_quarantined_records_total"),
            1
        );
    }
}
