//! The trace tracker: follows every trace from its first span until it has been idle for
//! the completion window, then writes its summary to the summary store; spans arriving
//! after that re-open it and write a newer version (`updated_late`). It also feeds the RED
//! metrics and the service graph.
//!
//! Durability: the tracker holds back the WAL checkpoint of the traces signal to the first
//! record of its oldest open trace, so after a crash replay rebuilds every open trace;
//! each stored version records the highest WAL sequence number it includes, so replayed
//! spans already counted are not counted twice.

mod completed;
mod open;

use std::collections::HashMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout_config::TracesConfig;
use parking_lot::Mutex;

use super::entry::Entries;
use super::graph::{Graph, GraphConfig};
use super::metrics::TraceMetrics;
use super::red::{Red, RedConfig};
use crate::services::Directory;
use crate::store::blocks::{BlockPartitions, HeadWriter};
use crate::store::spans::SpanBatch;
use crate::store::traces::{attr_value_hash, Summary, TraceState, TraceStore};
use crate::store::writer::{
    CommitPolicy, IndexLabels, ItemWriter, PartitionWriter, WriteError, WriterSetup, Written,
};
use crate::store::{IndexMetrics, Progress};
use completed::RecentlyCompleted;
use lookout_ingest::clock::{now_unix_nano, now_unix_secs};
use lookout_ingest::signal::Signal;
use lookout_ingest::values::{resource_attributes, service_name};
use lookout_spanstore::summaries::Summaries;
pub use open::OpenTraces;
use open::{Names, OpenTrace};

/// What the API reads from the tracker.
pub struct TracesShared {
    /// Traces being assembled.
    pub open: Mutex<OpenTraces>,
    /// RED metrics.
    pub red: Mutex<Red>,
    /// Service graph.
    pub graph: Mutex<Graph>,
    /// Every service that sent any signal.
    pub services: Arc<Directory>,
}

impl TracesShared {
    /// Empty state for `cfg`.
    pub fn new(cfg: &TracesConfig) -> Self {
        Self {
            open: Mutex::new(OpenTraces::default()),
            red: Mutex::new(
                Red::new(RedConfig {
                    window: cfg.red_window.get(),
                    max_operations_per_service: cfg.max_operations_per_service,
                    max_services: cfg.max_services,
                    idle_expiry: cfg.series_idle_expiry.get(),
                    ..RedConfig::default()
                })
                .started_at(now_unix_nano() / 1_000_000_000),
            ),
            graph: Mutex::new(Graph::new(GraphConfig {
                pair_ttl: cfg.graph_pair_wait.get(),
                history: cfg.graph_history.get(),
                ..GraphConfig::default()
            })),
            services: Arc::new(Directory::new(cfg.max_services)),
        }
    }
}

/// Everything the tracker thread needs.
pub struct TrackerSetup {
    /// The trace summaries.
    pub store: TraceStore,
    /// State shared with the API.
    pub shared: Arc<TracesShared>,
    /// The tracker's durable progress on the traces signal.
    pub progress: Progress,
    /// Trace self-metrics.
    pub metrics: TraceMetrics,
    /// Index self-metrics.
    pub index_metrics: IndexMetrics,
    /// Trace settings.
    pub cfg: TracesConfig,
    /// When summary blocks are cut (the `[spans]` block settings).
    pub blocks: lookout_config::SpanStoreConfig,
    /// Partitions older than this are removed.
    pub retention: Duration,
}

/// Writes trace summaries into the summary head, and keeps those written since the last
/// cut (shared with the head) for writing again after a failure.
struct SummaryWriter {
    store: TraceStore,
    /// Newest version of each trace written since the last cut.
    recent: HashMap<[u8; 16], Arc<Summary>>,
}

impl ItemWriter<BlockPartitions<Summaries>, [u8; 16]> for SummaryWriter {
    fn write(
        &mut self,
        w: &mut HeadWriter<Summaries>,
        id: &mut [u8; 16],
    ) -> Result<Written, WriteError> {
        let doc = self.recent.get(id).ok_or(WriteError::Dropped)?;
        self.store.add(w, doc.clone())
    }
}

/// Start the tracker thread. Batches must arrive in WAL order.
pub fn spawn(
    setup: TrackerSetup,
) -> std::io::Result<(mpsc::SyncSender<SpanBatch>, JoinHandle<()>)> {
    let TrackerSetup {
        store,
        shared,
        progress,
        metrics,
        index_metrics,
        cfg,
        blocks,
        retention,
    } = setup;
    // Summaries are read from the head as soon as they are written; a cut makes them
    // durable and lets the tracker's WAL checkpoint pass them.
    let commit_every = blocks.block_interval.get();
    let writer = PartitionWriter::new(WriterSetup {
        store: store.partitions().clone(),
        labels: IndexLabels {
            signal: "trace_summaries",
            index: "traces",
        },
        metrics: index_metrics,
        policy: CommitPolicy {
            max_docs: blocks.block_spans,
            max_bytes: blocks.block_bytes.get(),
            interval: commit_every,
        },
        progress,
        retention,
        held: None,
    });
    // Bounded: a slow tracker slows the span indexer, which holds ingest back.
    let (tx, rx) = mpsc::sync_channel::<SpanBatch>(4);
    let handle = std::thread::Builder::new()
        .name("lookout-traces".into())
        .spawn(move || {
            Tracker {
                shared,
                metrics,
                idle: cfg.completion_window.get(),
                max_open_bytes: cfg.max_open_bytes.as_usize(),
                commit_every,
                writer,
                summaries: SummaryWriter {
                    store,
                    recent: HashMap::new(),
                },
                completed: RecentlyCompleted::new(),
                entries: Entries::new(
                    GraphConfig::default().max_pending,
                    cfg.graph_pair_wait.get().as_secs().max(1),
                ),
                names: Names::default(),
                last_lsn: 0,
                last_commit: Instant::now(),
                last_upkeep: None,
            }
            .run(rx)
        })?;
    Ok((tx, handle))
}

struct Tracker {
    shared: Arc<TracesShared>,
    metrics: TraceMetrics,
    idle: Duration,
    max_open_bytes: usize,
    commit_every: Duration,
    writer: PartitionWriter<BlockPartitions<Summaries>, [u8; 16]>,
    summaries: SummaryWriter,
    /// Recently completed trace ids.
    completed: RecentlyCompleted,
    /// Which spans enter their service.
    entries: Entries,
    /// Service and operation names.
    names: Names,
    last_lsn: u64,
    last_commit: Instant,
    last_upkeep: Option<Instant>,
}

impl Tracker {
    fn run(mut self, rx: mpsc::Receiver<SpanBatch>) {
        let tick = Duration::from_millis(200);
        loop {
            match rx.recv_timeout(tick) {
                Ok(batch) => self.apply(batch),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Open traces stay open: the checkpoint keeps their WAL records, so the
                    // next start replays them.
                    let safe = self.safe_lsn();
                    self.writer
                        .close(now_unix_secs(), safe, &mut self.summaries);
                    tracing::debug!("trace tracker stopped");
                    return;
                }
            }
            self.complete_due(Instant::now());
            self.expire_entries();
            if self.last_commit.elapsed() >= self.commit_every || self.writer.commit_due() {
                self.commit();
            }
            if self
                .last_upkeep
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.upkeep();
            }
        }
    }

    /// The newest stored version of trace `id`: the one written since the last cut, or,
    /// when the trace `may_be_stored` (replay, an old span, a trace completed lately), the
    /// one in the store.
    fn stored_version(&self, id: &[u8; 16], may_be_stored: bool) -> Option<Summary> {
        if let Some(d) = self.summaries.recent.get(id) {
            return Some(Summary::clone(d));
        }
        if !may_be_stored {
            return None;
        }
        match self.summaries.store.latest(id) {
            Ok(l) => {
                for e in &l.unreadable {
                    tracing::warn!(error = %e, "a summary block or partition cannot be read; the trace's earlier summary may be missed");
                }
                l.found
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the trace summaries; treating the span as a new trace");
                None
            }
        }
    }

    fn apply(&mut self, msg: SpanBatch) {
        let now = Instant::now();
        let now_s = now_unix_nano() / 1_000_000_000;
        let now_ns = now_unix_nano();
        // Spans this old whose trace is not open may continue a stored trace.
        let late_if_before = now_ns.saturating_sub(
            u64::try_from(self.idle.as_nanos())
                .unwrap_or(u64::MAX)
                .saturating_add(30_000_000_000),
        );
        let lsn = msg.lsn;
        self.last_lsn = self.last_lsn.max(lsn);
        let services: Vec<String> = msg
            .req
            .resource_spans
            .iter()
            .map(|rs| service_name(resource_attributes(rs.resource.as_ref())))
            .collect();
        {
            let mut red = self.shared.red.lock();
            let mut graph = self.shared.graph.lock();
            self.entries
                .observe(now_s, &msg.req, &services, &mut red, &mut graph);
        }
        self.shared
            .services
            .saw_all(Signal::Traces, services.iter().map(String::as_str), now_s);
        let mut open = std::mem::take(&mut *self.shared.open.lock());
        for (rs, service) in msg.req.resource_spans.iter().zip(&services) {
            let attrs = resource_attributes(rs.resource.as_ref());
            let service_id = self.names.id(service);
            let res_hashes: Vec<u64> = attrs
                .iter()
                .map(|kv| attr_value_hash(&kv.key, kv.value.as_ref()))
                .collect();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let Ok(id) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                        self.invalid("trace_id_length");
                        continue;
                    };
                    if id == [0; 16] {
                        self.invalid("trace_id_zero");
                        continue;
                    }
                    if !open.contains(&id) {
                        let may_be_stored = msg.replay
                            || span.start_time_unix_nano < late_if_before
                            || self.completed.contains(&id);
                        let trace = match self.stored_version(&id, may_be_stored) {
                            Some(p) => OpenTrace::from_stored(p, lsn, now, &mut self.names),
                            None => OpenTrace::new(id, lsn, now),
                        };
                        open.insert(id, trace, now + self.idle);
                    }
                    let Some(trace) = open.map.get_mut(&id) else {
                        continue;
                    };
                    trace.last_seen = now;
                    if lsn <= trace.counted_through {
                        // Replayed, and already in the stored version.
                        continue;
                    }
                    if trace.late {
                        self.metrics.late_spans.inc();
                    }
                    let before = trace.bytes();
                    trace.add(lsn, service_id, &res_hashes, span, &mut self.names);
                    open.bytes = (open.bytes + trace.bytes()).saturating_sub(before);
                }
            }
        }
        self.metrics.open.set(open.len() as i64);
        *self.shared.open.lock() = open;
        // Sets the open-bytes gauge.
        self.evict_over_budget();
    }

    fn invalid(&self, reason: &str) {
        self.metrics
            .invalid_spans
            .with_label_values(&[reason])
            .inc();
    }

    fn complete_due(&mut self, now: Instant) {
        let mut done = Vec::new();
        {
            let mut open = self.shared.open.lock();
            while let Some((id, due)) = open.due.front().copied() {
                if due > now {
                    break;
                }
                open.due.pop_front();
                let Some(trace) = open.map.get(&id) else {
                    continue;
                };
                let next = trace.last_seen + self.idle;
                if next > now {
                    open.due.push_back((id, next));
                    continue;
                }
                if let Some(trace) = open.remove(&id) {
                    done.push(trace);
                }
            }
            self.metrics.open.set(open.len() as i64);
            self.metrics.open_bytes.set(open.bytes as i64);
        }
        for trace in done {
            self.write(trace);
        }
    }

    fn evict_over_budget(&mut self) {
        let mut done = Vec::new();
        {
            let mut open = self.shared.open.lock();
            while open.bytes > self.max_open_bytes {
                let Some((id, _)) = open.due.pop_front() else {
                    break;
                };
                if let Some(trace) = open.remove(&id) {
                    done.push(trace);
                }
            }
            self.metrics.open_bytes.set(open.bytes as i64);
        }
        if !done.is_empty() {
            self.metrics.evicted.inc_by(done.len() as u64);
        }
        for trace in done {
            self.write(trace);
        }
    }

    fn write(&mut self, trace: OpenTrace) {
        if trace.span_count == 0 {
            return;
        }
        let late = trace.late;
        let mut doc = trace.into_doc(&self.names);
        doc.version = now_unix_nano().max(doc.version.saturating_add(1));
        doc.state = if late {
            TraceState::UpdatedLate
        } else {
            TraceState::Complete
        };
        if doc.end < doc.start {
            doc.end = doc.start;
        }
        self.metrics
            .completed
            .with_label_values(&[doc.state.as_str()])
            .inc();
        let id = doc.trace_id;
        self.completed.insert(&id);
        self.summaries.recent.insert(id, Arc::new(doc));
        self.writer
            .write(now_unix_secs(), id, 0, &mut self.summaries);
    }

    /// The WAL position through which nothing is needed any more.
    fn safe_lsn(&self) -> u64 {
        match self.shared.open.lock().oldest_lsn() {
            Some(first) => first.saturating_sub(1),
            None => self.last_lsn,
        }
    }

    /// Cut the summaries written into a block, recording the tracker's progress.
    fn commit(&mut self) {
        self.last_commit = Instant::now();
        let safe = self.safe_lsn();
        if self.writer.commit(safe, &mut self.summaries) {
            self.summaries.recent.clear();
        }
    }

    /// Count spans whose parent did not come as entries of their service, and give the
    /// graph's halves that waited their time up (or infer their callee).
    fn expire_entries(&mut self) {
        let now_s = now_unix_nano() / 1_000_000_000;
        self.shared.graph.lock().expire(now_s);
        if self.entries.due(now_s) {
            let before = self.entries.orphans();
            self.entries.expire(now_s, &mut self.shared.red.lock());
            self.metrics
                .entry_orphans
                .inc_by(self.entries.orphans() - before);
        }
        self.metrics
            .entry_waiting
            .set(self.entries.waiting() as i64);
    }

    fn upkeep(&mut self) {
        self.last_upkeep = Some(Instant::now());
        let now_s = now_unix_nano() / 1_000_000_000;
        self.shared.red.lock().expire(now_s);
        self.shared.services.expire(now_s);
        self.writer.upkeep(now_unix_secs());
    }
}
