//! The thread that applies OTLP metrics records from the WAL to the [`MetricStore`] that
//! `/metrics` exposes. Metrics are not indexed: each record stays in the WAL for the
//! staleness window, so a restart rebuilds the recent state, and is then released.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout_ingest::Batch;

use super::store::{MetricStore, StoreMetrics};
use crate::store::IndexerContext;
use crate::wal::Record;

/// Metrics are not indexed here: each record is applied to `store` (the OTLP metrics
/// exposed on `/metrics`), and kept in the WAL for `window` so a restart rebuilds the
/// recent state, then released. `ctx` gives the checkpoints and the ingest budget;
/// `metrics` counts what the store does.
pub fn spawn_metrics_window(
    window: Duration,
    ctx: IndexerContext,
    store: Arc<parking_lot::Mutex<MetricStore>>,
    metrics: StoreMetrics,
) -> std::io::Result<(mpsc::Sender<Record>, JoinHandle<()>)> {
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
                        apply_metrics_record(&rec, &store, &metrics);
                        held.push_back((rec.lsn, Instant::now()));
                        ctx.budget.release(rec.charge);
                        ctx.metrics
                            .receiver
                            .pending_bytes
                            .set(ctx.budget.used() as i64);
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
                    ctx.checkpoints
                        .advance(lookout_ingest::signal::Signal::Metrics, lsn);
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
                rec.quarantine(&format!("cannot decode the metrics payload: {e}"));
                return;
            }
        },
    };
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
            rec.quarantine(&format!(
                "applying it to the metrics store panicked: {}",
                lookout_ingest::process::panic_message(panic.as_ref())
            ));
            return;
        }
    };
    report.publish(metrics);
    metrics.set_series(store.lock().series_count());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use bytes::Bytes;
    use lookout_ingest::Signal;

    use super::*;
    use crate::metrics::Metrics;
    use crate::wal::QUARANTINE_DIR;

    fn metric(m: &Metrics, name: &str) -> u64 {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .map(|x| x.get_counter().value() as u64)
            .sum()
    }

    fn quarantined(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join(QUARANTINE_DIR))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The metrics thread quarantines an undecodable replayed record and keeps applying.
    #[test]
    fn undecodable_metrics_record_is_quarantined() {
        let root = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let q = Arc::new(crate::wal::Quarantine::new(
            root.path().join(QUARANTINE_DIR),
            root.path().join("wal"),
            crate::wal::WalMetrics::register(&metrics.registry).unwrap(),
        ));
        let store = parking_lot::Mutex::new(MetricStore::new(super::super::StoreConfig::default()));
        let rec = |lsn: u64, payload: &'static [u8]| Record {
            lsn,
            signal: Signal::Metrics,
            payload: Bytes::from_static(payload),
            batch: None,
            charge: 0,
            pos: crate::wal::WalPos {
                segment: 3,
                offset: lsn * 100,
            },
            quarantine: Some(q.clone()),
        };
        let store_metrics = StoreMetrics::register(&metrics.registry).unwrap();
        apply_metrics_record(&rec(1, &[0x0a, 0x05, 0xff]), &store, &store_metrics);
        apply_metrics_record(&rec(2, &[]), &store, &store_metrics);
        let files = quarantined(root.path());
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].0,
            "00000000000000000003-0000000100-lsn00000000000000000001.metrics"
        );
        assert_eq!(files[0].1, [0x0a, 0x05, 0xff]);
        assert_eq!(metric(&metrics, "lookout_wal_quarantined_records_total"), 1);
    }
}
