//! The one partition writer: every index writes through it.
//!
//! A [`PartitionWriter`] keeps a writer open on the partition of the current ingest time and
//! commits by a policy (documents, bytes, time since the first uncommitted write). A failed
//! write or commit (a full disk, an I/O error) drops the writer, keeps every item it had not
//! committed, waits (0.5 s, doubling up to 8 s), and writes them again into the next writer
//! before anything new; meanwhile the store's progress does not pass them, so the WAL keeps
//! them too. After each commit the writer publishes the store's [`Progress`] (the WAL
//! checkpoint). It also runs the partitions' upkeep: retention, idle readers and gauges.
//!
//! What a partition is (a tantivy index today) sits behind [`Partitions`]; what an item is
//! and how it is written (a WAL record's documents, a trace summary) behind [`ItemWriter`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_ingest::Charge;

use super::metrics::IndexMetrics;
use super::progress::Progress;

/// A time-partitioned store that a [`PartitionWriter`] writes to.
pub trait Partitions: Send + Sync + 'static {
    /// An open writer of one partition.
    type Writer: Send;
    /// Why opening or committing failed.
    type Error: std::fmt::Display;
    /// Highest WAL sequence number the partitions hold durably (writing resumes after it).
    fn checkpoint(&self) -> u64;
    /// Start of the partition (Unix seconds of ingest time) that holds `unix_secs`.
    fn key_for(&self, unix_secs: i64) -> i64;
    /// Open a writer on partition `key`, creating it if needed.
    fn open_writer(&self, key: i64) -> Result<Self::Writer, Self::Error>;
    /// Make what `writer` holds durable and searchable, recording that the partition covers
    /// the WAL through `lsn`.
    fn commit(&self, writer: &mut Self::Writer, lsn: u64) -> Result<(), Self::Error>;
    /// Let a writer go at shutdown, finishing its background work.
    fn close_writer(&self, writer: Self::Writer);
    /// Remove the partitions that ended before `cutoff_secs`, except `keep`; how many went.
    fn remove_older_than(&self, cutoff_secs: i64, keep: Option<i64>) -> usize;
    /// Close the readers of partitions other than `keep` that no search used for `idle`.
    fn close_idle_readers(&self, idle: Duration, keep: Option<i64>);
    /// What the partitions hold.
    fn stats(&self) -> PartitionStats;
}

/// What a store's partitions hold, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Committed documents.
    pub docs: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Partitions.
    pub partitions: usize,
    /// Partitions whose reader is open.
    pub open_readers: usize,
}

/// What writing one item added to a writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Documents.
    pub docs: u64,
    /// Approximate bytes.
    pub bytes: u64,
}

/// Why an item was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The writer failed: it is dropped, and the item is kept for the next one.
    #[error("{0}")]
    Writer(Box<dyn std::error::Error + Send + Sync>),
    /// The item cannot be written at all (its writer said why in the log); it is dropped
    /// and counts as done.
    #[error("the item cannot be written")]
    Dropped,
}

impl From<tantivy::TantivyError> for WriteError {
    fn from(e: tantivy::TantivyError) -> Self {
        WriteError::Writer(Box::new(e))
    }
}

/// Writes items of type `I` into a writer of `P`: first when they arrive, and again into a
/// new writer after a failure.
pub trait ItemWriter<P: Partitions, I> {
    /// Write `item` into `writer`. An item may let go of memory it needs only once (a
    /// decoded batch) and must then be able to write itself again from what it keeps.
    fn write(&mut self, writer: &mut P::Writer, item: &mut I) -> Result<Written, WriteError>;

    /// Bytes of memory `item` holds while it waits out a failure, charged to the ingest
    /// budget so that a long failure stops admission instead of growing memory.
    fn held_bytes(&self, _item: &I) -> u64 {
        0
    }
}

/// Which index a writer writes, as its metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLabels {
    /// Value of the `signal` label (`logs`, `traces`, `trace_summaries`).
    pub signal: &'static str,
    /// Value of the `index` label of the open-readers gauge (`logs`, `spans`, `traces`).
    pub index: &'static str,
}

/// When to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// After this many uncommitted documents.
    pub max_docs: u64,
    /// After this many uncommitted bytes.
    pub max_bytes: u64,
    /// This long after the first uncommitted write.
    pub interval: Duration,
}

impl CommitPolicy {
    /// The policy of `[index]` (the log index).
    pub fn of_index(cfg: &lookout_config::IndexConfig) -> Self {
        Self {
            max_docs: cfg.commit_docs,
            max_bytes: cfg.commit_bytes.get(),
            interval: cfg.commit_interval.get(),
        }
    }

    /// The policy of `[spans]`: when to cut a block.
    pub fn of_spans(cfg: &lookout_config::SpanStoreConfig) -> Self {
        Self {
            max_docs: cfg.block_spans,
            max_bytes: cfg.block_bytes.get(),
            interval: cfg.block_interval.get(),
        }
    }
}

/// Longest wait before writing again after a failure, so ingest resumes within seconds of
/// the disk having room again.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(8);
/// How long a partition's reader stays open after its last search.
pub const READER_IDLE: Duration = Duration::from_secs(300);
/// How often the upkeep (retention, idle readers, gauges) runs.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// Failures in a row and the wait they impose.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    /// Count a failure; returns the wait before the next try.
    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(500)
            .saturating_mul(1u32 << self.failures.min(5).saturating_sub(1))
            .min(MAX_RETRY_WAIT);
        self.retry_at = Some(Instant::now() + wait);
        wait
    }

    /// Whether a writer may be opened now.
    fn ready(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// A failure worth logging: the first, then every 20th, so a long outage does not flood
    /// the log.
    fn worth_logging(&self) -> bool {
        self.failures == 1 || self.failures.is_multiple_of(20)
    }

    /// A success; returns how many failures it ends, if any.
    fn succeeded(&mut self) -> Option<u32> {
        self.retry_at = None;
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }
}

/// The writer of the partition being written, and what it holds uncommitted.
struct OpenWriter<W> {
    writer: W,
    key: i64,
    docs: u64,
    bytes: u64,
    /// When the first uncommitted item went in; `None` when nothing is uncommitted.
    since: Option<Instant>,
}

impl<W> OpenWriter<W> {
    fn wrote(&mut self, w: Written) {
        self.docs += w.docs;
        self.bytes += w.bytes;
        self.since.get_or_insert_with(Instant::now);
    }
}

/// How a [`PartitionWriter`] is set up.
pub struct WriterSetup<P> {
    /// The partitions written.
    pub store: Arc<P>,
    /// Labels of its metrics.
    pub labels: IndexLabels,
    /// Index self-metrics.
    pub metrics: IndexMetrics,
    /// When to commit.
    pub policy: CommitPolicy,
    /// The store's durable progress, published after each commit.
    pub progress: Progress,
    /// Partitions older than this are removed.
    pub retention: Duration,
    /// Ingest budget charged with the items kept after a failure, if any.
    pub held: Option<Charge>,
}

/// Writes items into time partitions; see the module documentation.
pub struct PartitionWriter<P: Partitions, I> {
    store: Arc<P>,
    labels: IndexLabels,
    metrics: IndexMetrics,
    policy: CommitPolicy,
    progress: Progress,
    retention: Duration,
    open: Option<OpenWriter<P::Writer>>,
    /// Items in `open` since its last commit.
    pending: Vec<I>,
    /// Items of a failed writer or commit, written first into the next writer.
    redo: Vec<I>,
    /// Highest LSN written or skipped and not yet published.
    lsn: u64,
    backoff: Backoff,
    held: Option<Charge>,
    last_upkeep: Option<Instant>,
}

impl<P: Partitions, I> PartitionWriter<P, I> {
    /// A writer with nothing open.
    pub fn new(setup: WriterSetup<P>) -> Self {
        Self {
            store: setup.store,
            labels: setup.labels,
            metrics: setup.metrics,
            policy: setup.policy,
            progress: setup.progress,
            retention: setup.retention,
            open: None,
            pending: Vec::new(),
            redo: Vec::new(),
            lsn: 0,
            backoff: Backoff::default(),
            held: setup.held,
            last_upkeep: None,
        }
    }

    /// The partitions written.
    pub fn store(&self) -> &Arc<P> {
        &self.store
    }

    /// The store's durable progress.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Write `item`, which covers the WAL through `lsn` (0 when it covers nothing of its
    /// own), into the partition of `now_secs`. Moving to a new partition commits the old
    /// one first. When the writer is failing, the item is kept for later.
    pub fn write(
        &mut self,
        now_secs: i64,
        mut item: I,
        lsn: u64,
        items: &mut impl ItemWriter<P, I>,
    ) {
        self.lsn = self.lsn.max(lsn);
        let key = self.store.key_for(now_secs);
        if self.open.as_ref().is_some_and(|o| o.key != key) {
            // Seal the old partition (on failure its items are in `redo` already).
            self.commit(0, items);
            self.close_open();
        }
        if !self.ensure_open(key, items) {
            self.hold(item, items);
            return;
        }
        let Some(open) = self.open.as_mut() else {
            self.hold(item, items);
            return;
        };
        match items.write(&mut open.writer, &mut item) {
            Ok(w) => {
                open.wrote(w);
                self.pending.push(item);
                let docs = open.docs;
                self.show_uncommitted(docs);
            }
            Err(WriteError::Dropped) => {}
            Err(WriteError::Writer(e)) => {
                self.fail("indexing", &e, items);
                self.hold(item, items);
            }
        }
    }

    /// Records through `lsn` need no writing (a poison record): they count as done with the
    /// next commit, or now when nothing waits for one.
    pub fn skip(&mut self, lsn: u64) {
        self.lsn = self.lsn.max(lsn);
        if !self.has_uncommitted() {
            self.publish(self.lsn);
        }
    }

    /// Whether anything written has not been committed (in the open writer or kept after a
    /// failure).
    pub fn has_uncommitted(&self) -> bool {
        self.open.as_ref().is_some_and(|o| o.since.is_some()) || !self.redo.is_empty()
    }

    /// Whether the policy says to commit now.
    pub fn commit_due(&self) -> bool {
        self.open.as_ref().is_some_and(|o| {
            o.since.is_some_and(|s| {
                o.docs >= self.policy.max_docs
                    || o.bytes >= self.policy.max_bytes
                    || s.elapsed() >= self.policy.interval
            })
        })
    }

    /// When the owner's loop should call [`Self::tick`] next at the latest.
    pub fn next_tick(&self) -> Option<Instant> {
        let commit = self
            .open
            .as_ref()
            .and_then(|o| o.since)
            .map(|s| s + self.policy.interval);
        let retry = (self.open.is_none() && !self.redo.is_empty())
            .then_some(self.backoff.retry_at)
            .flatten()
            .map(|t| t.max(Instant::now() + Duration::from_millis(10)));
        match (commit, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// On every turn of the owner's loop: once the wait after a failure is over, write the
    /// kept items again and commit them; commit when the policy says so; run the upkeep.
    pub fn tick(&mut self, now_secs: i64, items: &mut impl ItemWriter<P, I>) {
        if self.open.is_none()
            && !self.redo.is_empty()
            && self.ensure_open(self.store.key_for(now_secs), items)
        {
            self.commit(0, items);
        }
        if self.commit_due() {
            self.commit(0, items);
        }
        if self.last_upkeep.is_none_or(|t| t.elapsed() >= UPKEEP_EVERY) {
            self.upkeep(now_secs);
        }
    }

    /// Commit what was written since the last commit and record progress through `floor`
    /// as well (the trace tracker's progress is not an item's LSN). Returns whether
    /// everything written is now committed.
    pub fn commit(&mut self, floor: u64, items: &mut impl ItemWriter<P, I>) -> bool {
        let lsn = self.lsn.max(floor);
        if self.open.is_none() && self.redo.is_empty() {
            // Nothing written since the last commit: only progress to publish.
            self.publish(lsn);
            return true;
        }
        if self.open.is_none() {
            let key = self.store.key_for(lookout_ingest::clock::now_unix_secs());
            if !self.ensure_open(key, items) {
                return false;
            }
        }
        let Some(open) = self.open.as_mut() else {
            return false;
        };
        if open.since.is_none() && lsn <= self.progress.get() {
            return true;
        }
        let started = Instant::now();
        match self.store.commit(&mut open.writer, lsn) {
            Ok(()) => {
                tracing::debug!(
                    index = self.labels.index,
                    docs = open.docs,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "index commit"
                );
                open.docs = 0;
                open.bytes = 0;
                open.since = None;
                self.pending.clear();
                self.metrics
                    .commits
                    .with_label_values(&[self.labels.signal])
                    .inc();
                self.show_uncommitted(0);
                if let Some(failures) = self.backoff.succeeded() {
                    tracing::info!(
                        index = self.labels.index,
                        failures,
                        "index writes work again"
                    );
                }
                if let Some(held) = self.held.as_mut() {
                    held.resize(0);
                }
                self.publish(lsn);
                true
            }
            Err(e) => {
                self.fail("committing", &e, items);
                false
            }
        }
    }

    /// At shutdown: write what is kept, commit through `floor`, and let the writer go.
    pub fn close(&mut self, now_secs: i64, floor: u64, items: &mut impl ItemWriter<P, I>) {
        if self.open.is_none() && !self.redo.is_empty() {
            self.ensure_open(self.store.key_for(now_secs), items);
        }
        self.commit(floor, items);
        self.close_open();
    }

    /// Retention, idle readers and gauges.
    pub fn upkeep(&mut self, now_secs: i64) {
        self.last_upkeep = Some(Instant::now());
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = now_secs.saturating_sub(retention);
        let keep = self.open.as_ref().map(|o| o.key);
        let removed = self.store.remove_older_than(cutoff, keep);
        let signal = [self.labels.signal];
        if removed > 0 {
            self.metrics
                .retention_removed_partitions
                .with_label_values(&signal)
                .inc_by(removed as u64);
        }
        self.store.close_idle_readers(READER_IDLE, keep);
        let stats = self.store.stats();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let m = &self.metrics;
        m.docs.with_label_values(&signal).set(gauge(stats.docs));
        m.bytes.with_label_values(&signal).set(gauge(stats.bytes));
        m.partitions
            .with_label_values(&signal)
            .set(gauge(stats.partitions as u64));
        m.open_readers
            .with_label_values(&[self.labels.index])
            .set(gauge(stats.open_readers as u64));
    }

    fn show_uncommitted(&self, docs: u64) {
        self.metrics
            .uncommitted_docs
            .with_label_values(&[self.labels.signal])
            .set(i64::try_from(docs).unwrap_or(i64::MAX));
    }

    fn publish(&mut self, lsn: u64) {
        if lsn > self.progress.get() {
            self.progress.advance(lsn);
        }
        self.lsn = 0;
    }

    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.store.close_writer(open.writer);
        }
    }

    /// Make sure a writer is open on partition `key`, with the kept items in it first;
    /// `false` while waiting out a failure or when it cannot be opened.
    fn ensure_open(&mut self, key: i64, items: &mut impl ItemWriter<P, I>) -> bool {
        if self.open.is_some() {
            return true;
        }
        if !self.backoff.ready() {
            return false;
        }
        let writer = match self.store.open_writer(key) {
            Ok(w) => w,
            Err(e) => {
                self.fail("opening a partition", &e, items);
                return false;
            }
        };
        let mut open = OpenWriter {
            writer,
            key,
            docs: 0,
            bytes: 0,
            since: None,
        };
        let mut rest = std::mem::take(&mut self.redo).into_iter();
        for mut item in rest.by_ref() {
            match items.write(&mut open.writer, &mut item) {
                Ok(w) => {
                    open.wrote(w);
                    self.pending.push(item);
                }
                Err(WriteError::Dropped) => {}
                Err(WriteError::Writer(e)) => {
                    self.pending.push(item);
                    self.open = Some(open);
                    self.fail("indexing", &e, items);
                    self.redo.extend(rest);
                    return false;
                }
            }
        }
        self.open = Some(open);
        true
    }

    /// Keep an item that is in no writer for the next one.
    fn hold(&mut self, item: I, items: &impl ItemWriter<P, I>) {
        self.redo.push(item);
        self.charge_held(items);
    }

    /// Charge the budget with the bytes of the kept items (they leave `redo` only into a
    /// writer, and are given back with its commit).
    fn charge_held(&mut self, items: &impl ItemWriter<P, I>) {
        if let Some(held) = self.held.as_mut() {
            let now: u64 = self.redo.iter().map(|i| items.held_bytes(i)).sum();
            if now > held.bytes() {
                held.resize(now);
            }
        }
    }

    /// The writer failed while `what`: drop it (what it had not committed goes to `redo`,
    /// before what was there) and wait before the next try.
    fn fail(&mut self, what: &str, e: &dyn std::fmt::Display, items: &impl ItemWriter<P, I>) {
        if let Some(open) = self.open.take() {
            let mut pending = std::mem::take(&mut self.pending);
            pending.append(&mut self.redo);
            self.redo = pending;
            // Dropping the writer discards what it had not committed.
            drop(open);
        }
        self.charge_held(items);
        let wait = self.backoff.failed();
        self.metrics
            .failures
            .with_label_values(&[self.labels.signal])
            .inc();
        self.show_uncommitted(0);
        if self.backoff.worth_logging() {
            tracing::error!(index = self.labels.index, error = %e, failures = self.backoff.failures, kept = self.redo.len(), retry_in_ms = wait.as_millis() as u64, "index write failed while {what}; what it had not committed is kept (and stays in the WAL) and written again after the wait");
        }
    }
}
