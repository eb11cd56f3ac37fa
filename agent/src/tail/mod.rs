//! Log file tailing (`[[tail]]`): files matched by globs are polled, split into lines
//! (or multi-line records), turned into OTLP log records and appended to the disk buffer
//! ([`Sink`]) exactly once across restarts.
//!
//! # Exactly once
//!
//! Records carry the file offset just past their last line. A batch becomes one
//! [`Entry`] whose `positions` hold, per file, the end of its last record in the batch.
//! Only when `append` succeeds are the offsets advanced; a failed append is retried with
//! the same entry (1 s, growing to 5 s) and reading stops meanwhile. The checkpoint file
//! is written at most a second after an append, when a file is first tracked, and on
//! shutdown; at start-up each file resumes from the larger of its checkpoint and the
//! offset the disk buffer recovered for it ([`TailerSetup::recovered`]).
//!
//! # Checkpoint file
//!
//! `STATE_DIR/tail-checkpoints.json` ([`CHECKPOINT_FILE_NAME`]), replaced atomically
//! (temporary file, fsync, rename, fsync of the directory):
//!
//! ```json
//! {"version": 1, "files": [{"file_id": 1234, "dev": 2049, "ino": 393228, "fp_len": 1000,
//!   "offset": 52311, "path": "/var/log/shop/app.log", "seen_unix": 1767225600}]}
//! ```
//!
//! Entries of files no longer open are dropped an hour after they were last seen. An
//! unreadable file is moved aside to `tail-checkpoints.json.bad` with a warning.
//!
//! # File identity
//!
//! `file_id` = FNV-1a 64 of (device, inode, first `fp_len` bytes), with `fp_len` =
//! min(size, 1000) fixed when the file is first tracked. A file is not tracked before it
//! holds a complete line or 1000 bytes, so the fingerprint always covers at least its
//! first line. The checkpoint stores device, inode and `fp_len`, so the same id is
//! recomputed after a restart however much the file grew; a new file reusing an inode
//! gets a new id unless its first `fp_len` bytes are identical. While a file is tracked
//! its descriptor stays open, so its inode cannot be reused.
//!
//! # Rotation
//!
//! - Rename (logrotate `create`): the open descriptor is read to its end; once the path
//!   no longer leads to the file for two polls and nothing more was read, the file is
//!   released (an unterminated last line is shipped then). The new file at the path is
//!   read from the beginning.
//! - Truncate (`copytruncate`): a size below the read offset restarts at 0. Lines written
//!   between the copy and the truncation are lost; that is inherent to copy-truncate.
//! - Deleted while tailed: read to the end, then released.
//! - A known inode whose first bytes changed while the agent was stopped (rewritten,
//!   copy-truncated, or the inode reused) is read from the beginning.
//!
//! # Limits
//!
//! At most 64 KiB is read per file per poll, a line or record keeps at most
//! `max_line_length` bytes (the rest streams past), and a batch holds at most
//! `max_batch_records` records or about 4 MiB; reading waits while the sink refuses.
//!
//! Not handled: a file renamed away and rotated again within one poll, or rotated to a
//! name `paths` does not match while the agent is stopped (match rotated names, e.g.
//! `app.log*`, to finish those); a truncation followed by regrowth past the read offset
//! between two polls (or while stopped with identical first bytes); an unterminated last
//! line of a file that stays in place (shipped only once the file is rotated away);
//! moving logs to another filesystem (the identity includes device and inode); encodings
//! other than UTF-8 (invalid bytes are replaced); NUL bytes written into holes after a
//! truncation end up in the text.

mod checkpoint;
mod metrics;
mod reader;
mod record;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lookout_config::TailConfig;
use lookout_proto::attr;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::resource::v1::Resource;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::sink::{Entry, FilePosition, Signal, Sink, SinkError};
pub use checkpoint::FILE_NAME as CHECKPOINT_FILE_NAME;
use checkpoint::{FileCheckpoint, FINGERPRINT_LEN};
pub use metrics::TailMetrics;
use reader::{Joiner, Lines, Raw};

/// Instrumentation scope name of tailed records.
pub const SCOPE_NAME: &str = "lookout-agent/tail";
/// Most bytes read from one file per poll.
const CHUNK: usize = 64 << 10;
/// Leading bytes checked for NUL to recognise binary files.
const BINARY_PROBE: usize = 1024;
/// A batch is shipped once its records hold this many bytes.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Polls a file must stay unmatched by the globs, with nothing new read, to be released.
const RELEASE_POLLS: u32 = 2;
/// Checkpoints of files no longer open are kept this long (they may come back).
const FORGET_AFTER_SECS: u64 = 3600;
/// Longest wait between two checkpoint writes while data flows.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Everything the tailer needs from the agent.
pub struct TailerSetup {
    /// The `[[tail]]` entries (validated).
    pub entries: Vec<TailConfig>,
    /// Directory of the checkpoint file ([`CHECKPOINT_FILE_NAME`]).
    pub state_dir: PathBuf,
    /// Resource attributes of the agent (`host.name`, `service.instance.id`, ...); an
    /// entry's `service` and `attributes` are added over them.
    pub base_resource: Vec<KeyValue>,
    /// `file_id -> offset` found in the disk buffer at start-up; a file resumes from the
    /// larger of this and its checkpoint.
    pub recovered: HashMap<u64, u64>,
    /// Where records go.
    pub sink: Arc<dyn Sink>,
    /// Metrics.
    pub metrics: TailMetrics,
    /// Most records in one entry.
    pub max_batch_records: usize,
    /// Longest time lines wait in a batch before it is appended.
    pub batch_timeout: Duration,
}

/// Delays between attempts of a failed append.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    first: Duration,
    max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5),
        }
    }
}

/// Start tailing. The task runs until `shutdown` is cancelled, then ships pending lines
/// (a pending multi-line record included), writes the checkpoints and returns.
///
/// Fails if an entry is invalid (bad glob or regex) or the checkpoint file cannot be
/// read; a corrupt checkpoint file is set aside with a warning instead.
pub fn spawn(
    setup: TailerSetup,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    spawn_with(setup, shutdown, Retry::default())
}

pub(crate) fn spawn_with(
    setup: TailerSetup,
    shutdown: CancellationToken,
    retry: Retry,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sink = setup.sink.clone();
    let max_batch = setup.max_batch_records.max(1);
    let batch_timeout = setup.batch_timeout;
    let core = Core::new(setup)?;
    Ok(tokio::spawn(run(
        Box::new(core),
        sink,
        shutdown,
        max_batch,
        batch_timeout,
        retry,
    )))
}

async fn run(
    mut core: Box<Core>,
    sink: Arc<dyn Sink>,
    shutdown: CancellationToken,
    max_batch: usize,
    batch_timeout: Duration,
    retry: Retry,
) {
    let tick = core.tick();
    let mut last_persist = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let polled = tokio::task::spawn_blocking(move || {
            let more = core.poll(Instant::now());
            (core, more)
        })
        .await;
        let more;
        (core, more) = match polled {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "log tailer failed");
                return;
            }
        };
        if core.identity_dirty {
            persist(&mut core).await;
            last_persist = Instant::now();
        }
        while core.batch_due(Instant::now(), max_batch, batch_timeout) {
            let Some(out) = core.take_entry(max_batch) else {
                break;
            };
            if !append_retrying(&*sink, &out.entry, &shutdown, retry, &core.metrics).await {
                // Shutting down while the buffer refuses: nothing was stored and the
                // offsets stay put, so these lines are read again after the restart.
                core.discard_batch();
                persist(&mut core).await;
                return;
            }
            core.commit(&out);
            if last_persist.elapsed() >= CHECKPOINT_EVERY {
                persist(&mut core).await;
                last_persist = Instant::now();
            }
        }
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let mut wait = tick;
        if let Some(deadline) = core.batch_deadline(batch_timeout) {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        }
        if core.dirty {
            wait = wait.min(CHECKPOINT_EVERY.saturating_sub(last_persist.elapsed()));
            if wait.is_zero() {
                persist(&mut core).await;
                last_persist = Instant::now();
                wait = tick;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Shutdown: ship what was read, pending multi-line records included.
    core.flush_pending(Instant::now());
    while let Some(out) = core.take_entry(max_batch) {
        let mut stored = false;
        for attempt in 0..3 {
            match sink.append(out.entry.clone()).await {
                Ok(()) => {
                    stored = true;
                    break;
                }
                Err(e) => {
                    core.metrics.error("sink");
                    warn!(error = %e, attempt, "disk buffer refused tailed lines at shutdown");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if !stored {
            core.discard_batch();
            break;
        }
        core.commit(&out);
    }
    persist(&mut core).await;
    info!("log tailer stopped");
}

/// Append `entry` until it is stored; false if `shutdown` came first.
async fn append_retrying(
    sink: &dyn Sink,
    entry: &Entry,
    shutdown: &CancellationToken,
    retry: Retry,
    metrics: &TailMetrics,
) -> bool {
    let mut delay = retry.first;
    loop {
        match sink.append(entry.clone()).await {
            Ok(()) => return true,
            Err(e) => {
                metrics.error("sink");
                let reason = match &e {
                    SinkError::Full(_) => "full",
                    SinkError::Unavailable(_) => "unavailable",
                };
                warn!(error = %e, reason, retry_in = ?delay, "disk buffer refused tailed lines");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(retry.max);
    }
}

async fn persist(core: &mut Core) {
    let bytes = core.checkpoint_bytes();
    let dir = core.state_dir.clone();
    let res = tokio::task::spawn_blocking(move || checkpoint::store(&dir, &bytes)).await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            core.metrics.error("checkpoint");
            warn!(error = %e, dir = %core.state_dir.display(), "cannot write tail checkpoints");
        }
        Err(e) => {
            core.metrics.error("checkpoint");
            warn!(error = %e, "cannot write tail checkpoints");
        }
    }
}

/// One `[[tail]]` entry, compiled.
struct Group {
    label: String,
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    start_pattern: Option<regex::bytes::Regex>,
    resource: Resource,
    json: bool,
    beginning: bool,
    max_len: usize,
    poll: Duration,
    multiline_timeout: Duration,
    next_poll: Instant,
    scanned: bool,
}

impl Group {
    fn new(index: usize, cfg: &TailConfig, base: &[KeyValue]) -> anyhow::Result<Self> {
        cfg.validate()
            .map_err(|v| anyhow::anyhow!("tail[{index}].{}: {}", v.key, v.reason))?;
        let exclude = cfg
            .exclude
            .iter()
            .map(|p| glob::Pattern::new(p))
            .collect::<Result<Vec<_>, _>>()?;
        let start_pattern = if cfg.multiline.start_pattern.is_empty() {
            None
        } else {
            Some(regex::bytes::Regex::new(&cfg.multiline.start_pattern)?)
        };
        let mut attrs: Vec<KeyValue> = base.to_vec();
        let mut set = |key: &str, value: &str| {
            attrs.retain(|a| a.key != key);
            attrs.push(attr::string(key, value));
        };
        if !cfg.service.is_empty() {
            set("service.name", &cfg.service);
        }
        for (k, v) in &cfg.attributes {
            set(k, v);
        }
        Ok(Self {
            label: index.to_string(),
            include: cfg.paths.clone(),
            exclude,
            start_pattern,
            resource: Resource {
                attributes: attrs,
                ..Resource::default()
            },
            json: cfg.is_json(),
            beginning: cfg.starts_at_beginning(),
            max_len: usize::try_from(cfg.max_line_length.get()).unwrap_or(usize::MAX),
            poll: cfg.poll_interval.get(),
            multiline_timeout: cfg.multiline.timeout.get(),
            next_poll: Instant::now(),
            scanned: false,
        })
    }
}

/// A file being read.
struct Tracked {
    id: u64,
    group: usize,
    dev: u64,
    ino: u64,
    file: File,
    path: PathBuf,
    file_attrs: Vec<KeyValue>,
    read_offset: u64,
    lines: Lines,
    joiner: Joiner,
    /// Records handed to the batch and not yet stored.
    inflight: usize,
    /// Polls in a row the globs did not lead to this file.
    unmatched: u32,
    /// Nothing left to read at the last poll.
    at_eof: bool,
    /// Released: no more reads, removed once `inflight` is 0.
    draining: bool,
    warned: bool,
}

/// A file opened to be tailed, and the first bytes it is identified by.
struct Probe {
    file: File,
    dev: u64,
    ino: u64,
    size: u64,
    head: Vec<u8>,
}

/// A record in the batch.
struct Pending {
    group: usize,
    file_id: u64,
    end: u64,
    bytes: usize,
    log: LogRecord,
}

/// Records read but not yet in an entry.
#[derive(Default)]
struct RecordBatch {
    records: VecDeque<Pending>,
    /// Estimated encoded size of `records`.
    bytes: usize,
    /// When the oldest record came in; `None` when empty.
    started: Option<Instant>,
}

impl RecordBatch {
    /// Whether the batch fills an entry, by record count or by size.
    fn is_full(&self, max_records: usize) -> bool {
        self.records.len() >= max_records || self.bytes >= MAX_BATCH_BYTES
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// An entry ready to append and what to commit once it is stored.
pub(crate) struct Outgoing {
    entry: Entry,
    /// (file_id, records) of the entry.
    counts: Vec<(u64, usize)>,
    /// (group, records) of the entry.
    per_group: Vec<(usize, u64)>,
}

/// The synchronous part: scanning, reading, record building, bookkeeping.
struct Core {
    groups: Vec<Group>,
    files: Vec<Tracked>,
    checkpoints: HashMap<u64, FileCheckpoint>,
    recovered: HashMap<u64, u64>,
    state_dir: PathBuf,
    metrics: TailMetrics,
    warned_paths: HashSet<PathBuf>,
    /// Binary files by (device, inode), with their group; forgotten when gone.
    binary: HashMap<(u64, u64), usize>,
    /// Records per entry.
    max_batch: usize,
    /// Round-robin start among files, so one busy file does not starve the others.
    rr: usize,
    batch: RecordBatch,
    /// New files tracked since the last checkpoint write (must be written before their
    /// lines are appended, so that their ids can be recomputed after a crash).
    identity_dirty: bool,
    /// Offsets moved since the last checkpoint write.
    dirty: bool,
    buf: Vec<u8>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The observed time of the last line read, so every line gets a later one.
static LAST_OBSERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An observed time after every one given before: lines read in one poll are 1 ns apart
/// in the order they were read (file offset order), so newest-first is exact.
fn next_observed(now: u64) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let mut prev = LAST_OBSERVED.load(Relaxed);
    loop {
        let next = now.max(prev.saturating_add(1));
        match LAST_OBSERVED.compare_exchange_weak(prev, next, Relaxed, Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

fn nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Core {
    fn new(setup: TailerSetup) -> anyhow::Result<Self> {
        let groups = setup
            .entries
            .iter()
            .enumerate()
            .map(|(i, c)| Group::new(i, c, &setup.base_resource))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let checkpoints = match checkpoint::load(&setup.state_dir) {
            Ok(c) => c,
            Err(e) => {
                let path = checkpoint::path_in(&setup.state_dir);
                let aside = path.with_extension("json.bad");
                warn!(error = %e, moved_to = %aside.display(),
                    "tail checkpoints unreadable; files resume from the disk buffer's offsets or start_at");
                setup.metrics.error("checkpoint");
                if path.exists() {
                    std::fs::rename(&path, &aside)?;
                }
                HashMap::new()
            }
        };
        for g in &groups {
            setup.metrics.files.with_label_values(&[&g.label]).set(0);
        }
        Ok(Self {
            groups,
            files: Vec::new(),
            checkpoints,
            recovered: setup.recovered,
            state_dir: setup.state_dir,
            metrics: setup.metrics,
            warned_paths: HashSet::new(),
            binary: HashMap::new(),
            max_batch: setup.max_batch_records.max(1),
            rr: 0,
            batch: RecordBatch::default(),
            identity_dirty: false,
            dirty: false,
            buf: vec![0; CHUNK],
        })
    }

    /// Shortest poll interval.
    fn tick(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.poll)
            .min()
            .unwrap_or(Duration::from_secs(1))
    }

    /// Scan and read the groups that are due; true if some file has more to read now.
    fn poll(&mut self, now: Instant) -> bool {
        let mut more = false;
        for gi in 0..self.groups.len() {
            let due = now >= self.groups[gi].next_poll;
            let busy = self
                .files
                .iter()
                .any(|t| t.group == gi && !t.at_eof && !t.draining);
            if due {
                self.groups[gi].next_poll = now + self.groups[gi].poll;
                self.scan(gi);
            }
            if due || busy {
                more |= self.read_group(gi, now);
            }
            self.groups[gi].scanned = true;
        }
        self.release(now);
        for (gi, g) in self.groups.iter().enumerate() {
            let n = self
                .files
                .iter()
                .filter(|t| t.group == gi && !t.draining)
                .count();
            self.metrics
                .files
                .with_label_values(&[&g.label])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        more
    }

    /// Expand the globs of group `gi`, track new files and mark which tracked files the
    /// globs still lead to.
    fn scan(&mut self, gi: usize) {
        let mut found: Vec<(PathBuf, u64, u64)> = Vec::new();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        for pattern in &self.groups[gi].include {
            let paths = match glob::glob(pattern) {
                Ok(p) => p,
                Err(e) => {
                    self.metrics.error("glob");
                    debug!(pattern, error = %e, "bad glob");
                    continue;
                }
            };
            for entry in paths {
                let path = match entry {
                    Ok(p) => p,
                    Err(e) => {
                        if self.warned_paths.insert(e.path().to_path_buf()) {
                            self.metrics.error("glob");
                            warn!(path = %e.path().display(), error = %e.error(), "cannot look into directory for tailing");
                        }
                        continue;
                    }
                };
                if self.groups[gi]
                    .exclude
                    .iter()
                    .any(|x| x.matches_path(&path))
                {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let key = (meta.dev(), meta.ino());
                if seen.insert(key) {
                    found.push((path, key.0, key.1));
                }
            }
        }
        for t in self.files.iter_mut().filter(|t| !t.draining) {
            if seen.contains(&(t.dev, t.ino)) {
                t.unmatched = 0;
            } else if t.group == gi {
                t.unmatched = t.unmatched.saturating_add(1);
            }
        }
        // A binary file that is gone may have its inode reused by a text file.
        self.binary.retain(|k, g| *g != gi || seen.contains(k));
        for (path, dev, ino) in found {
            let tracked = self
                .files
                .iter()
                .any(|t| t.dev == dev && t.ino == ino && !t.draining);
            if tracked || self.binary.contains_key(&(dev, ino)) {
                continue;
            }
            self.try_track(gi, &path);
        }
    }

    /// Open `path` and read its head: `None` (warned about once, counted) when it cannot
    /// be read, is binary, or has no complete first line to identify it by yet.
    fn probe(&mut self, gi: usize, path: &Path) -> Option<Probe> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                if self.warned_paths.insert(path.to_path_buf()) {
                    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
                        "permission"
                    } else {
                        "open"
                    };
                    self.metrics.error(kind);
                    warn!(path = %path.display(), error = %e, "cannot open log file; will retry");
                }
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                if self.warned_paths.insert(path.to_path_buf()) {
                    self.metrics.error("read");
                    warn!(path = %path.display(), error = %e, "cannot stat log file; will retry");
                }
                return None;
            }
        };
        let (dev, ino, size) = (meta.dev(), meta.ino(), meta.len());
        let mut head = vec![0u8; BINARY_PROBE.min(usize::try_from(size).unwrap_or(BINARY_PROBE))];
        if let Err(e) = file.read_exact_at(&mut head, 0) {
            if self.warned_paths.insert(path.to_path_buf()) {
                self.metrics.error("read");
                warn!(path = %path.display(), error = %e, "cannot read log file; will retry");
            }
            return None;
        }
        self.warned_paths.remove(path);
        if head.contains(&0) {
            self.binary.insert((dev, ino), gi);
            self.metrics.error("binary");
            warn!(path = %path.display(), "not tailing a binary file (NUL bytes in its first KiB)");
            return None;
        }
        // Wait for a complete first line (or a full fingerprint) before fixing the identity.
        if head.len() < FINGERPRINT_LEN && !head.contains(&b'\n') {
            return None;
        }
        Some(Probe {
            file,
            dev,
            ino,
            size,
            head,
        })
    }

    /// Open a newly found file and decide where to start reading it.
    fn try_track(&mut self, gi: usize, path: &Path) {
        let Some(Probe {
            file,
            dev,
            ino,
            size,
            head,
        }) = self.probe(gi, path)
        else {
            return;
        };
        let known = self.checkpoints.values().find(|c| {
            c.dev == dev
                && c.ino == ino
                && (c.fp_len as usize) <= head.len()
                && checkpoint::file_id(dev, ino, &head[..c.fp_len as usize]) == c.file_id
        });
        // Same inode, other content: rewritten (or the inode reused) since it was last
        // seen, so all of it is new.
        let rewritten = known.is_none()
            && self
                .checkpoints
                .values()
                .any(|c| c.dev == dev && c.ino == ino);
        let group = &self.groups[gi];
        let (id, fp_len, mut offset, how) = match known {
            Some(c) => {
                let rec = self.recovered.get(&c.file_id).copied().unwrap_or(0);
                (c.file_id, c.fp_len, c.offset.max(rec), "checkpoint")
            }
            None => {
                let fp_len = head.len().min(FINGERPRINT_LEN);
                let id = checkpoint::file_id(dev, ino, &head[..fp_len]);
                let (offset, how) = match self.recovered.get(&id) {
                    Some(&o) => (o, "disk buffer"),
                    None if rewritten => (0, "beginning (rewritten)"),
                    None if group.scanned || group.beginning => (0, "beginning"),
                    None => (end_of_last_line(&file, size), "end"),
                };
                (id, fp_len as u32, offset, how)
            }
        };
        self.recovered.remove(&id);
        if offset > size {
            self.metrics
                .rotations
                .with_label_values(&[&group.label, "truncate"])
                .inc();
            info!(path = %path.display(), offset, size, "log file shrank while not tailed; reading from the beginning");
            offset = 0;
        }
        info!(path = %path.display(), file_id = id, offset, from = how, "tailing log file");
        let path_str = path.to_string_lossy().into_owned();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.checkpoints.insert(
            id,
            FileCheckpoint {
                file_id: id,
                dev,
                ino,
                fp_len,
                offset,
                path: path_str.clone(),
                seen_unix: unix_now(),
            },
        );
        self.identity_dirty = true;
        self.files.push(Tracked {
            id,
            group: gi,
            dev,
            ino,
            file,
            path: path.to_path_buf(),
            file_attrs: vec![
                attr::string("log.file.path", path_str),
                attr::string("log.file.name", name),
            ],
            read_offset: offset,
            lines: Lines::new(group.max_len),
            joiner: Joiner::new(group.start_pattern.clone(), group.max_len),
            inflight: 0,
            unmatched: 0,
            at_eof: false,
            draining: false,
            warned: false,
        });
    }

    /// Read one chunk of each file of group `gi`; true if some file has more.
    fn read_group(&mut self, gi: usize, now: Instant) -> bool {
        let Self {
            groups,
            files,
            metrics,
            batch,
            buf,
            max_batch,
            rr,
            ..
        } = self;
        let mut sink = BatchSink::new(groups, gi, metrics, batch, now);
        let mut more = false;
        let n = files.len();
        let first = *rr % n.max(1);
        *rr = rr.wrapping_add(1);
        for k in 0..n {
            let t = &mut files[(first + k) % n];
            if t.group != gi || t.draining {
                continue;
            }
            if sink.batch.is_full(*max_batch) {
                // Ship the batch first; come back at once. Not at its end: a file the
                // globs lost must not be released before this read.
                t.at_eof = false;
                more = true;
            } else {
                more |= read_file(t, buf, &mut sink);
            }
            if t.joiner.expired(now, sink.group.multiline_timeout) {
                if let Some(r) = t.joiner.flush() {
                    sink.emit(t, r);
                }
            }
        }
        more
    }

    /// Release files the globs no longer lead to once they are read to the end, and drop
    /// released files once their records are stored.
    fn release(&mut self, now: Instant) {
        let Self {
            groups,
            files,
            metrics,
            batch,
            checkpoints,
            dirty,
            ..
        } = self;
        for t in files.iter_mut().filter(|t| !t.draining) {
            if t.unmatched < RELEASE_POLLS || !t.at_eof {
                continue;
            }
            let mut sink = BatchSink::new(groups, t.group, metrics, batch, now);
            // The file will not grow any more: an unterminated last line is complete.
            let end = t.read_offset;
            let mut records = Vec::new();
            if let Some(r) = t.lines.take_partial(end) {
                metrics.lines.with_label_values(&[&sink.group.label]).inc();
                t.joiner.push(r, now, &mut |r| records.push(r));
            }
            records.extend(t.joiner.flush());
            for r in records {
                sink.emit(t, r);
            }
            let deleted = t.file.metadata().map(|m| m.nlink() == 0).unwrap_or(true);
            let kind = if deleted { "delete" } else { "rename" };
            metrics
                .rotations
                .with_label_values(&[&sink.group.label, kind])
                .inc();
            info!(path = %t.path.display(), file_id = t.id, offset = end, kind, "log file rotated away; released");
            t.draining = true;
        }
        files.retain(|t| {
            let done = t.draining && t.inflight == 0;
            if done {
                if let Some(c) = checkpoints.get_mut(&t.id) {
                    c.seen_unix = unix_now();
                }
                *dirty = true;
            }
            !done
        });
    }

    /// Move pending multi-line records into the batch (shutdown).
    fn flush_pending(&mut self, now: Instant) {
        let Self {
            groups,
            files,
            metrics,
            batch,
            ..
        } = self;
        for t in files.iter_mut() {
            let mut sink = BatchSink::new(groups, t.group, metrics, batch, now);
            if let Some(r) = t.joiner.flush() {
                sink.emit(t, r);
            }
        }
    }

    fn batch_due(&self, now: Instant, max_batch: usize, timeout: Duration) -> bool {
        match self.batch.started {
            None => false,
            Some(start) => {
                self.batch.is_full(max_batch) || now.saturating_duration_since(start) >= timeout
            }
        }
    }

    fn batch_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.batch.started.map(|s| s + timeout)
    }

    /// Encode up to `max` records from the front of the batch as one entry.
    fn take_entry(&mut self, max: usize) -> Option<Outgoing> {
        if self.batch.records.is_empty() {
            self.batch.started = None;
            return None;
        }
        let mut n = 0;
        let mut size = 0;
        for p in self.batch.records.iter().take(max) {
            if n > 0 && size + p.bytes > MAX_BATCH_BYTES {
                break;
            }
            n += 1;
            size += p.bytes;
        }
        let mut resource_logs: Vec<(usize, Vec<LogRecord>)> = Vec::new();
        let mut positions: Vec<FilePosition> = Vec::new();
        let mut counts: Vec<(u64, usize)> = Vec::new();
        for p in self.batch.records.drain(..n) {
            self.batch.bytes = self.batch.bytes.saturating_sub(p.bytes);
            match resource_logs.iter_mut().find(|(g, _)| *g == p.group) {
                Some((_, logs)) => logs.push(p.log),
                None => resource_logs.push((p.group, vec![p.log])),
            }
            match positions.iter_mut().position(|f| f.file_id == p.file_id) {
                Some(i) => {
                    positions[i].offset = p.end;
                    counts[i].1 += 1;
                }
                None => {
                    positions.push(FilePosition {
                        file_id: p.file_id,
                        offset: p.end,
                    });
                    counts.push((p.file_id, 1));
                }
            }
        }
        if self.batch.records.is_empty() {
            self.batch.clear();
        }
        let per_group = resource_logs
            .iter()
            .map(|(g, logs)| (*g, logs.len() as u64))
            .collect();
        let request = ExportLogsServiceRequest {
            resource_logs: resource_logs
                .into_iter()
                .map(|(g, log_records)| ResourceLogs {
                    resource: Some(self.groups[g].resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.to_string(),
                            ..InstrumentationScope::default()
                        }),
                        log_records,
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                })
                .collect(),
        };
        Some(Outgoing {
            entry: Entry {
                signal: Signal::Logs,
                payload: Bytes::from(request.encode_to_vec()),
                items: u32::try_from(n).unwrap_or(u32::MAX),
                positions,
            },
            counts,
            per_group,
        })
    }

    /// The entry was stored: advance the offsets.
    fn commit(&mut self, out: &Outgoing) {
        let now = unix_now();
        for pos in &out.entry.positions {
            if let Some(c) = self.checkpoints.get_mut(&pos.file_id) {
                c.offset = pos.offset;
                c.seen_unix = now;
            }
        }
        for (id, n) in &out.counts {
            if let Some(t) = self.files.iter_mut().find(|t| t.id == *id) {
                t.inflight = t.inflight.saturating_sub(*n);
            }
        }
        for (g, n) in &out.per_group {
            self.metrics
                .records
                .with_label_values(&[&self.groups[*g].label])
                .inc_by(*n);
        }
        self.dirty = true;
    }

    /// Forget the batch without storing it (shutdown with a refusing buffer).
    fn discard_batch(&mut self) {
        self.batch.clear();
    }

    fn checkpoint_bytes(&mut self) -> Vec<u8> {
        let now = unix_now();
        let open: HashSet<u64> = self.files.iter().map(|t| t.id).collect();
        self.checkpoints.retain(|id, c| {
            open.contains(id) || now.saturating_sub(c.seen_unix) < FORGET_AFTER_SECS
        });
        self.identity_dirty = false;
        self.dirty = false;
        checkpoint::encode(&self.checkpoints)
    }
}

/// Where records of one group go while reading.
struct BatchSink<'a> {
    group: &'a Group,
    gi: usize,
    metrics: &'a TailMetrics,
    batch: &'a mut RecordBatch,
    now: Instant,
    observed: u64,
}

impl<'a> BatchSink<'a> {
    /// The sink of group `gi`; what it takes now is observed now.
    fn new(
        groups: &'a [Group],
        gi: usize,
        metrics: &'a TailMetrics,
        batch: &'a mut RecordBatch,
        now: Instant,
    ) -> Self {
        Self {
            group: &groups[gi],
            gi,
            metrics,
            batch,
            now,
            observed: nanos_now(),
        }
    }

    fn emit(&mut self, t: &mut Tracked, raw: Raw) {
        if raw.truncated {
            self.metrics
                .truncated
                .with_label_values(&[&self.group.label])
                .inc();
        }
        let bytes = raw.bytes.len() + t.path.as_os_str().len() * 2 + 64;
        let observed = next_observed(self.observed);
        let (log, non_json) = record::build(&raw.bytes, self.group.json, &t.file_attrs, observed);
        if non_json {
            self.metrics
                .non_json
                .with_label_values(&[&self.group.label])
                .inc();
        }
        self.batch.records.push_back(Pending {
            group: self.gi,
            file_id: t.id,
            end: raw.end,
            bytes,
            log,
        });
        self.batch.bytes += bytes;
        self.batch.started.get_or_insert(self.now);
        t.inflight += 1;
    }
}

/// `t` cannot be read now: counted and warned about once, tried again at the next poll.
/// Returns false: nothing more is waiting.
fn read_failed(t: &mut Tracked, metrics: &TailMetrics, e: &std::io::Error, what: &str) -> bool {
    if !t.warned {
        t.warned = true;
        metrics.error("read");
        warn!(path = %t.path.display(), error = %e, "{what}");
    }
    t.at_eof = true;
    false
}

/// Read one chunk of `t`; true if more is waiting.
fn read_file(t: &mut Tracked, buf: &mut [u8], sink: &mut BatchSink<'_>) -> bool {
    let label = &sink.group.label;
    let size = match t.file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return read_failed(t, sink.metrics, &e, "cannot stat tailed file"),
    };
    if size < t.read_offset {
        sink.metrics
            .rotations
            .with_label_values(&[label, "truncate"])
            .inc();
        info!(path = %t.path.display(), offset = t.read_offset, size, "log file truncated; reading from the beginning");
        if let Some(r) = t.joiner.flush() {
            sink.emit(t, r);
        }
        t.lines.reset();
        t.read_offset = 0;
    }
    if size == t.read_offset {
        t.at_eof = true;
        return false;
    }
    let want = usize::try_from(size - t.read_offset)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let n = match t.file.read_at(&mut buf[..want], t.read_offset) {
        Ok(n) => n,
        Err(e) => {
            return read_failed(t, sink.metrics, &e, "cannot read tailed file; will retry");
        }
    };
    t.warned = false;
    if n == 0 {
        t.at_eof = true;
        return false;
    }
    sink.metrics
        .bytes
        .with_label_values(&[label])
        .inc_by(n as u64);
    let start = t.read_offset;
    t.read_offset += n as u64;
    let mut lines = Vec::new();
    t.lines.feed(&buf[..n], start, &mut |l| lines.push(l));
    sink.metrics
        .lines
        .with_label_values(&[label])
        .inc_by(lines.len() as u64);
    let mut records = Vec::new();
    for l in lines {
        t.joiner.push(l, sink.now, &mut |r| records.push(r));
    }
    for r in records {
        sink.emit(t, r);
    }
    let more = t.read_offset < size;
    t.at_eof = !more;
    more
}

/// Offset just past the last complete line among the last `CHUNK` bytes (or `size` if
/// there is none): where `start_at = "end"` begins, so a line being written is not cut.
fn end_of_last_line(file: &File, size: u64) -> u64 {
    let from = size.saturating_sub(CHUNK as u64);
    let mut tail = vec![0u8; usize::try_from(size - from).unwrap_or(0)];
    match file.read_exact_at(&mut tail, from) {
        Ok(()) => match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => from + i as u64 + 1,
            None => size,
        },
        Err(_) => size,
    }
}
