//! Room on the WAL's file system: the writer refuses a group while writing it would leave
//! less than `wal.reserve` free. The reserve is for the stores: their commits and span
//! blocks are what let the WAL delete segments, so with the room kept for them the
//! collector drains and takes writes again by itself once the load drops, instead of
//! filling the disk to the last byte with records that no store can commit any more.
//!
//! The free space is read with `statvfs` at most every [`LOOK_EVERY`] while writes are
//! admitted, less what the log itself wrote since; a group that this estimate would refuse
//! is checked against a fresh reading (at most every [`LOOK_AGAIN`]) before it is refused,
//! so refusals end within moments of space being freed.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lookout_ingest::fsutil::{self, FsSpace};

use super::error::WalError;
use super::metrics::WalMetrics;

/// Longest time a reading of the free space is trusted while writes are admitted.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Shortest time between two readings when the last one would refuse a group.
pub(super) const LOOK_AGAIN: Duration = Duration::from_millis(10);
/// How often a warning repeats while refusals go on.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Reads the space of the WAL's file system.
pub(super) type Probe = Box<dyn FnMut() -> io::Result<FsSpace> + Send>;

/// The free space of the WAL's file system, held against `wal.reserve`.
pub(super) struct Room {
    dir: PathBuf,
    reserve: u64,
    probe: Probe,
    metrics: WalMetrics,
    /// Free bytes at the last reading (`u64::MAX` when it failed), and when it was taken.
    free: u64,
    looked: Option<Instant>,
    /// Bytes the log wrote since that reading.
    written: u64,
    /// Since when batches are refused; `None` while they are admitted.
    refusing: Option<Refusing>,
    /// The last reading failed (logged once).
    probe_failed: bool,
}

/// Refusals under way.
struct Refusing {
    since: Instant,
    /// The last warning, and the batches refused since.
    warned: Instant,
    batches: u64,
}

impl Room {
    /// The room of the file system holding `dir` (read with `statvfs`), kept at `reserve`
    /// bytes.
    pub fn of_dir(dir: &Path, reserve: u64, metrics: WalMetrics) -> Self {
        let path = dir.to_path_buf();
        Self::with_probe(
            dir,
            reserve,
            metrics,
            Box::new(move || fsutil::fs_space(&path)),
        )
    }

    /// The room `probe` reads, kept at `reserve` bytes (`dir` names it in messages).
    pub fn with_probe(dir: &Path, reserve: u64, metrics: WalMetrics, probe: Probe) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reserve,
            probe,
            metrics,
            free: u64::MAX,
            looked: None,
            written: 0,
            refusing: None,
            probe_failed: false,
        }
    }

    /// At start-up: refuse a reserve that is not less than the whole file system (no
    /// batch could ever be written), and warn when writes start out refused.
    pub fn check_at_start(&mut self) -> Result<(), WalError> {
        let total = match (self.probe)() {
            Ok(space) => space.total,
            Err(e) => {
                self.probe_failed(&e);
                return Ok(());
            }
        };
        if total > 0 && self.reserve >= total {
            return Err(WalError::ReserveTooLarge {
                dir: self.dir.clone(),
                reserve: self.reserve,
                total,
            });
        }
        self.look();
        if self.free < self.reserve {
            tracing::warn!(
                dir = %self.dir.display(),
                free = self.free,
                reserve = self.reserve,
                "the data disk has less free space than wal.reserve: batches are refused (503 / UNAVAILABLE) until the stores' commits let the write-ahead log free space, or the disk grows"
            );
        }
        Ok(())
    }

    /// Whether a group of `batches` batches and `bytes` bytes may be written now; if not,
    /// the refusal (counted, and logged when refusals start and once a minute while they
    /// last).
    pub fn admit(&mut self, bytes: u64, batches: u64) -> Result<(), WalError> {
        let need = self.reserve.saturating_add(bytes);
        let age = self.looked.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a >= LOOK_EVERY);
        let doubtful = self.estimate() < need && age.is_none_or(|a| a >= LOOK_AGAIN);
        if stale || doubtful {
            self.look();
        }
        let free = self.estimate();
        if free >= need {
            if let Some(r) = self.refusing.take() {
                tracing::info!(
                    free,
                    reserve = self.reserve,
                    refused_for_ms = r.since.elapsed().as_millis() as u64,
                    "the data disk has room again: the write-ahead log takes batches again"
                );
            }
            return Ok(());
        }
        self.metrics.reserve_refusals.inc_by(batches);
        let now = Instant::now();
        match &mut self.refusing {
            None => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    free,
                    reserve = self.reserve,
                    batch = bytes,
                    "the data disk has less free space than wal.reserve (plus the batches being written): refusing batches (503 / UNAVAILABLE) until the stores' commits let the write-ahead log free space"
                );
                self.refusing = Some(Refusing {
                    since: now,
                    warned: now,
                    batches: 0,
                });
            }
            Some(r) => {
                r.batches += batches;
                if now.duration_since(r.warned) >= WARN_EVERY {
                    tracing::warn!(
                        free,
                        reserve = self.reserve,
                        refused = r.batches,
                        refusing_for_s = r.since.elapsed().as_secs(),
                        "still refusing batches: the data disk has less free space than wal.reserve"
                    );
                    r.warned = now;
                    r.batches = 0;
                }
            }
        }
        Err(WalError::Reserve {
            free,
            reserve: self.reserve,
            batch: bytes,
        })
    }

    /// Whether the last group was refused for want of space.
    pub fn refusing(&self) -> bool {
        self.refusing.is_some()
    }

    /// The log wrote `bytes`.
    pub fn wrote(&mut self, bytes: u64) {
        self.written = self.written.saturating_add(bytes);
    }

    /// While idle: keep the free-space gauge current.
    pub fn refresh(&mut self) {
        if self.looked.is_none_or(|t| t.elapsed() >= LOOK_EVERY) {
            self.look();
        }
    }

    /// Free bytes now, as far as the last reading and the log's own writes tell.
    fn estimate(&self) -> u64 {
        self.free.saturating_sub(self.written)
    }

    fn look(&mut self) {
        self.looked = Some(Instant::now());
        self.written = 0;
        match (self.probe)() {
            Ok(space) => {
                if self.probe_failed {
                    self.probe_failed = false;
                    tracing::info!(dir = %self.dir.display(), "the free space of the data disk can be read again");
                }
                self.free = space.available;
                self.metrics
                    .disk_free_bytes
                    .set(i64::try_from(space.available).unwrap_or(i64::MAX));
            }
            Err(e) => {
                // Unknown is not full: writes go on (and fail on their own if the disk is).
                self.free = u64::MAX;
                self.probe_failed(&e);
            }
        }
    }

    fn probe_failed(&mut self, e: &io::Error) {
        if !self.probe_failed {
            self.probe_failed = true;
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free space of the data disk; wal.reserve is not enforced until it can be read");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A room whose free space is `free` (of 1 GiB), counting its readings in `looks`.
    fn room(reserve: u64, free: &Arc<AtomicU64>, looks: &Arc<AtomicUsize>) -> (Room, WalMetrics) {
        let metrics = WalMetrics::register(&prometheus::Registry::new()).unwrap();
        let (free, looks) = (free.clone(), looks.clone());
        let probe: Probe = Box::new(move || {
            looks.fetch_add(1, Ordering::Relaxed);
            Ok(FsSpace {
                available: free.load(Ordering::Relaxed),
                total: 1 << 30,
            })
        });
        (
            Room::with_probe(Path::new("/data/wal"), reserve, metrics.clone(), probe),
            metrics,
        )
    }

    #[test]
    fn a_group_that_would_eat_into_the_reserve_is_refused_until_space_is_freed() {
        let free = Arc::new(AtomicU64::new(100 << 20));
        let looks = Arc::new(AtomicUsize::new(0));
        let (mut room, metrics) = room(64 << 20, &free, &looks);
        room.check_at_start().unwrap();
        assert_eq!(metrics.disk_free_bytes.get(), 100 << 20);
        // 36 MiB above the reserve: the log's own writes count before the next reading.
        room.admit(30 << 20, 1).unwrap();
        room.wrote(30 << 20);
        free.fetch_sub(30 << 20, Ordering::Relaxed);
        let e = room.admit(10 << 20, 1).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("data disk has {} bytes free, below wal.reserve ({} bytes) plus the batches being written ({} bytes)", 70 << 20, 64 << 20, 10 << 20)),
            "{msg}"
        );
        assert!(msg.contains("writes resume once"), "{msg}");
        assert_eq!(metrics.reserve_refusals.get(), 1);
        // The stores freed space (the WAL deleted segments): the next group goes in once a
        // fresh reading shows it.
        free.store(200 << 20, Ordering::Relaxed);
        std::thread::sleep(LOOK_AGAIN);
        room.admit(10 << 20, 1).unwrap();
        assert_eq!(metrics.disk_free_bytes.get(), 200 << 20);
        assert_eq!(metrics.reserve_refusals.get(), 1);
    }

    #[test]
    fn admitted_groups_read_the_free_space_at_most_every_interval() {
        let free = Arc::new(AtomicU64::new(1 << 30));
        let looks = Arc::new(AtomicUsize::new(0));
        let (mut room, _) = room(64 << 20, &free, &looks);
        let started = Instant::now();
        for _ in 0..1000 {
            room.admit(1 << 10, 1).unwrap();
            room.wrote(1 << 10);
        }
        let intervals = started.elapsed().as_millis() / LOOK_EVERY.as_millis();
        let looks = looks.load(Ordering::Relaxed) as u128;
        assert!(
            looks <= intervals + 2,
            "{looks} readings in {intervals} intervals"
        );
    }

    #[test]
    fn a_reserve_as_large_as_the_disk_is_refused_at_start() {
        let free = Arc::new(AtomicU64::new(1 << 20));
        let looks = Arc::new(AtomicUsize::new(0));
        let (mut room, _) = room(1 << 30, &free, &looks);
        let msg = room.check_at_start().unwrap_err().to_string();
        assert!(msg.contains("wal.reserve"), "{msg}");
        assert!(msg.contains("/data/wal"), "{msg}");
    }

    #[test]
    fn an_unreadable_free_space_does_not_stop_writes() {
        let metrics = WalMetrics::register(&prometheus::Registry::new()).unwrap();
        let probe: Probe = Box::new(|| Err(io::Error::from(io::ErrorKind::PermissionDenied)));
        let mut room = Room::with_probe(Path::new("/data/wal"), 64 << 20, metrics, probe);
        room.check_at_start().unwrap();
        room.admit(1 << 20, 1).unwrap();
    }
}
