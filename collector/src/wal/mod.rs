//! Write-ahead log: a success response means the batch is in here, fsync'd.
//!
//! Records are appended by one writer thread that batches concurrent appends into one
//! write and one `fdatasync` (group commit), then hands the records to the stores in log
//! order. Each store remembers, in its own durable commit, the highest log sequence number
//! (LSN) of its signal that it has made durable; segments are deleted oldest first, once
//! every store has committed every record of its signal in them. At start-up the records
//! past each store's checkpoint are replayed.
//!
//! Record layout, little-endian (a [`lookout_ingest::seglog`] framing, [`FRAMING`]):
//! `len: u32 | crc32: u32 | lsn: u64 | tag: u8 | payload: [u8; len]`, where the CRC covers
//! `lsn | tag | payload`, in files `{segment:020}.wal`. LSNs increase by one per record
//! over the whole log, and the remaining segments are contiguous (only the oldest are ever
//! deleted), so start-up can tell damage from data that was never written.
//!
//! Damage found at start-up (see [`DamageKind`]; this log has the five kinds of
//! `FRAMING.kinds`, no `bad_header`) never stops replay: each damaged stretch is logged on
//! one line (segment, offset, bytes, kind), counted on
//! `lookout_wal_corruptions_total{kind}`, and skipped; reading resumes at the next valid
//! record of the segment (one with a valid checksum, a known tag and a higher LSN), and
//! the next segments are read as usual. A damaged end of the log — a torn record from a
//! crash in the middle of a write, or zeros after a power loss — is truncated. A whole
//! segment missing, or empty while the LSNs around it show records were there, is counted
//! as `missing_segment`.
//!
//! The log keeps `wal.reserve` free on its file system for the stores ([`room`]): a group
//! whose write would leave less is refused (503 / UNAVAILABLE with a retry hint), counted
//! on `lookout_wal_reserve_refusals_total`, and logged when refusals start; the stores
//! commit into that room, their checkpoints let the log delete segments, and writes are
//! taken again once the free space is back above the reserve. A write that fails anyway
//! (a disk filled by someone else) is cut off the open segment, and the next group is
//! written to the same segment.
//!
//! A record with a valid checksum that cannot be used (an unknown tag here, or a payload the
//! stores cannot decode or apply, see [`Quarantine::set_aside`]) is a *poison* record: its
//! bytes are copied to the quarantine directory (`DATA_DIR/quarantine/`, one file per
//! record named after its WAL position), it is counted on
//! `lookout_wal_quarantined_records_total` and logged, its LSN counts as done (so its
//! segment is deleted in due course), and replay goes on.

mod checkpoints;
mod error;
mod metrics;
mod origins;
mod quarantine;
mod read_back;
mod record;
mod replay;
mod room;
pub mod sink;
mod writer;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use lookout_ingest::batch::Batch;
use lookout_ingest::fsutil;
use lookout_ingest::seglog;
use lookout_ingest::signal::Signal;
use lookout_ingest::Charge;

pub use checkpoints::Checkpoints;
use error::io_err;
pub use error::WalError;
pub use lookout_ingest::seglog::DamageKind;
pub use metrics::WalMetrics;
pub use origins::{Origin, Origins};
pub use quarantine::{default_quarantine_dir, Quarantine, QUARANTINE_DIR};
pub use read_back::RecordReader;
pub use record::{Dispatch, Record, WalPos, FRAMING};
use replay::Replay;
use room::Room;
pub use writer::WalOptions;
use writer::{create_segment, Append, WalWriter};

/// Handle to the write-ahead log. Cloning shares the writer.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Append>,
    origins: Arc<Origins>,
}

impl Wal {
    /// Open the WAL in `dir`, replay every record past `checkpoints` into `dispatch`, and
    /// start the writer thread. Returns once replay is complete. Poison records go to
    /// [`default_quarantine_dir`] (`DATA_DIR/quarantine` for the WAL in `DATA_DIR/wal`).
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        checkpoints: Arc<Checkpoints>,
        metrics: WalMetrics,
        dispatch: Dispatch,
    ) -> Result<(Wal, std::thread::JoinHandle<()>), WalError> {
        let quarantine = Arc::new(Quarantine::beside(dir, metrics.clone()));
        Self::open_with_quarantine(dir, &quarantine, opts, checkpoints, metrics, dispatch)
    }

    /// [`Wal::open`] with poison records of replay going to `quarantine` (the one the
    /// stores use for theirs).
    pub fn open_with_quarantine(
        dir: &Path,
        quarantine: &Arc<Quarantine>,
        opts: WalOptions,
        checkpoints: Arc<Checkpoints>,
        metrics: WalMetrics,
        mut dispatch: Dispatch,
    ) -> Result<(Wal, std::thread::JoinHandle<()>), WalError> {
        fsutil::create_dir_all(dir).map_err(io_err(dir))?;
        let mut room = Room::of_dir(dir, opts.reserve, metrics.clone());
        room.check_at_start()?;
        let listed = seglog::list_segments(&FRAMING, dir)?;
        let started = Instant::now();
        let origins = Arc::new(Origins::default());
        let mut replay = Replay::new(&checkpoints, &metrics, quarantine, &mut dispatch, &origins);
        let last_lsn = replay.run(listed)?;
        let (replayed, segments) = (replay.replayed, replay.segments);
        // After the log emptied (every segment committed and deleted), numbering goes on
        // past the stores' checkpoints: a reused LSN at or below a checkpoint would be
        // skipped by replay and trimmed before it is committed.
        let committed = Signal::ALL
            .iter()
            .map(|s| checkpoints.get(*s))
            .max()
            .unwrap_or(0);
        let next_lsn = last_lsn.max(committed).saturating_add(1);
        if replayed > 0 || !segments.is_empty() {
            tracing::info!(
                segments = segments.len(),
                replayed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "write-ahead log replayed"
            );
        }
        let next_seq = segments.last().map_or(1, |s| s.seq.saturating_add(1));
        let current = create_segment(dir, next_seq)?;
        let (tx, rx) = mpsc::channel::<Append>();
        let mut writer = WalWriter {
            dir: dir.to_path_buf(),
            opts,
            segments,
            current,
            next_lsn,
            checkpoints,
            metrics,
            dispatch,
            last_truncate: Instant::now(),
            torn: false,
            room,
            origins: origins.clone(),
        };
        writer.update_gauges();
        let handle = std::thread::Builder::new()
            .name("lookout-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((Wal { tx, origins }, handle))
    }

    /// Append one batch; resolves with its LSN once durable. `payload` is the protobuf
    /// export request of `signal`; `batch`, if given, is the same request decoded, handed
    /// to the stores so they need not decode it again; `charge` travels with the record
    /// (and is given back at once if the write fails).
    pub async fn append(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: Option<Batch>,
        charge: Option<Charge>,
    ) -> Result<u64, Arc<WalError>> {
        self.submit(signal, payload, batch, charge)?.await
    }

    /// Queue one batch for the writer now (synchronously), and return a future of its LSN.
    /// Once this returns `Ok`, the record reaches the stores even if the future is dropped.
    pub fn submit(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: Option<Batch>,
        charge: Option<Charge>,
    ) -> Result<impl std::future::Future<Output = Result<u64, Arc<WalError>>>, Arc<WalError>> {
        self.submit_from(signal, payload, batch, charge, None)
    }

    /// [`Wal::submit`] of a message consumed from the cluster's stream: its record carries
    /// `origin`, and [`Wal::origins`] knows it once it is durable.
    pub fn submit_from(
        &self,
        signal: Signal,
        payload: Bytes,
        batch: Option<Batch>,
        charge: Option<Charge>,
        origin: Option<Origin>,
    ) -> Result<impl std::future::Future<Output = Result<u64, Arc<WalError>>>, Arc<WalError>> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Append {
                signal,
                payload,
                batch,
                charge,
                origin,
                done,
            })
            .map_err(|_| Arc::new(WalError::Closed))?;
        Ok(async move { rx.await.map_err(|_| Arc::new(WalError::Closed))? })
    }

    /// The highest stream sequence of each partition in the log: found at start-up,
    /// raised as consumed records become durable.
    pub fn origins(&self) -> &Arc<Origins> {
        &self.origins
    }
}

#[cfg(test)]
mod tests;
