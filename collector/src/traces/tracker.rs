//! The trace tracker: follows every trace from its first span until it has been idle for
//! the completion window, then writes its summary to the trace index; spans arriving
//! after that re-open it and write a newer version (`updated_late`). It also feeds the RED
//! metrics and the service graph.
//!
//! Durability: the tracker holds back the WAL checkpoint of the traces signal to the first
//! record of its oldest open trace, so after a crash replay rebuilds every open trace;
//! each stored version records the highest WAL sequence number it includes, so replayed
//! spans already counted are not counted twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lookout_config::TracesConfig;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::Span;
use parking_lot::Mutex;
use tantivy::{IndexWriter, TantivyDocument};

use super::graph::{Graph, GraphConfig};
use super::red::{Red, RedConfig};
use crate::metrics::Metrics;
use crate::store::partition::{meta_for_writing, Partition, PartitionMeta, PartitionedIndex};
use crate::store::traces::{attr_value_hash, latest, TraceDoc, TraceFields, TraceState};
use crate::wal::Checkpoints;
use lookout_ingest::clock::now_unix_nano;
use lookout_ingest::signal::Signal;
use lookout_ingest::values::service_name;

/// Most distinct `(service, operation)` pairs kept per trace.
const MAX_OPS_PER_TRACE: usize = 64;
/// Most attribute hashes kept per trace (searches for attributes past it miss the trace).
const MAX_ATTRS_PER_TRACE: usize = 256;
/// Most services kept per trace.
const MAX_SERVICES_PER_TRACE: usize = 64;

/// Summaries written but not yet committed, past which the trace index commits before its
/// interval: they are kept in memory (`recent`) until then, about 1 KB each.
const MAX_UNCOMMITTED: usize = 20_000;

/// Bits of each generation of the completed-trace filter (4 MiB).
const BLOOM_BITS: usize = 1 << 25;
/// Probes per id.
const BLOOM_PROBES: u64 = 4;
/// Age of a filter generation before it is replaced.
const BLOOM_GENERATION: Duration = Duration::from_secs(300);
/// Ids per generation before it is replaced early: 1.6M ids in 2^25 bits with 4 probes
/// give 0.1 % false positives. Without the cap a busy collector (12k traces/s fill a
/// generation with 3.6M ids in 5 minutes) sent ~3 % of new traces to an index lookup.
const BLOOM_CAPACITY: u64 = 1_600_000;

/// Trace ids completed in the last 5 to 10 minutes (or the last 1.6M to 3.2M traces, when
/// more complete in that time): two Bloom filter generations. A late span whose trace is
/// in it is checked against the stored trace (false positives cost a lookup, never a
/// wrong answer); older late spans are recognised by their old start time.
struct Completed {
    current: Vec<u64>,
    previous: Vec<u64>,
    since: Instant,
    /// Ids inserted into `current`.
    count: u64,
}

impl Completed {
    fn new() -> Self {
        Self {
            current: vec![0; BLOOM_BITS / 64],
            previous: vec![0; BLOOM_BITS / 64],
            since: Instant::now(),
            count: 0,
        }
    }

    fn probes(id: &[u8; 16]) -> impl Iterator<Item = usize> {
        let (h1, h2) = crate::store::traces::halves(id);
        // Trace ids are random; their halves serve as the two hashes (odd step).
        (0..BLOOM_PROBES)
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2 | 1)) % BLOOM_BITS as u64) as usize)
    }

    fn insert(&mut self, id: &[u8; 16]) {
        if self.count >= BLOOM_CAPACITY || self.since.elapsed() >= BLOOM_GENERATION {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.iter_mut().for_each(|w| *w = 0);
            self.since = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        for b in Self::probes(id) {
            if let Some(w) = self.current.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
    }

    fn contains(&self, id: &[u8; 16]) -> bool {
        let has = |bits: &[u64]| {
            Self::probes(id).all(|b| bits.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0))
        };
        has(&self.current) || has(&self.previous)
    }
}

/// Spans of one WAL record for the tracker.
pub struct TraceMsg {
    /// WAL sequence number of the record.
    pub lsn: u64,
    /// Whether the record comes from WAL replay at start-up.
    pub replay: bool,
    /// The spans.
    pub req: ExportTraceServiceRequest,
}

/// The WAL checkpoint of the traces signal is the lower of what the span index committed
/// and what the tracker no longer needs.
#[derive(Default)]
pub struct CheckpointGate {
    spans: AtomicU64,
    tracker: AtomicU64,
}

impl CheckpointGate {
    /// A gate starting from the committed positions.
    pub fn new(spans: u64, tracker: u64) -> Self {
        Self {
            spans: AtomicU64::new(spans),
            tracker: AtomicU64::new(tracker),
        }
    }
    /// Where replay must start from (exclusive).
    pub fn get(&self) -> u64 {
        self.spans
            .load(Ordering::Acquire)
            .min(self.tracker.load(Ordering::Acquire))
    }
    /// The span index committed through `lsn`.
    pub fn spans_committed(&self, lsn: u64, cp: &Checkpoints) {
        self.spans.fetch_max(lsn, Ordering::AcqRel);
        cp.advance(Signal::Traces, self.get());
    }
    fn tracker_safe(&self, lsn: u64, cp: &Checkpoints) {
        self.tracker.fetch_max(lsn, Ordering::AcqRel);
        cp.advance(Signal::Traces, self.get());
    }
}

/// What the API reads from the tracker.
pub struct TracesShared {
    /// Traces being assembled.
    pub open: Mutex<Open>,
    /// RED metrics.
    pub red: Mutex<Red>,
    /// Service graph.
    pub graph: Mutex<Graph>,
}

impl TracesShared {
    /// Empty state for `cfg`.
    pub fn new(cfg: &TracesConfig) -> Self {
        Self {
            open: Mutex::new(Open::default()),
            red: Mutex::new(Red::new(RedConfig {
                window: cfg.red_window.get(),
                max_operations_per_service: cfg.max_operations_per_service,
                max_services: cfg.max_services,
                idle_expiry: cfg.series_idle_expiry.get(),
                ..RedConfig::default()
            })),
            graph: Mutex::new(Graph::new(GraphConfig {
                pair_ttl: cfg.graph_pair_wait.get(),
                history: cfg.graph_history.get(),
                ..GraphConfig::default()
            })),
        }
    }
}

/// Names of services and operations, stored once; traces refer to them by number.
#[derive(Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

/// Most distinct names kept; past it new names are not recorded on traces (counted).
const MAX_NAMES: usize = 500_000;

impl Interner {
    fn id(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.ids.get(name) {
            return Some(*id);
        }
        if self.names.len() >= MAX_NAMES {
            return None;
        }
        let id = u32::try_from(self.names.len()).ok()?;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Some(id)
    }
    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// One open trace, compact: names by number, attributes as hashes.
struct Acc {
    id: [u8; 16],
    first_lsn: u64,
    max_lsn: u64,
    /// Spans through this WAL position are in the stored version this continues.
    counted_through: u64,
    last_seen: Instant,
    start: u64,
    end: u64,
    /// Start of the root span chosen so far; `u64::MAX` without a root.
    root_start: u64,
    /// Start of the earliest span (the root stand-in without a real root).
    earliest: u64,
    span_count: u64,
    error_count: u64,
    late_spans: u64,
    prev_version: u64,
    root: Option<(u32, u32)>,
    services: Vec<u32>,
    ops: Vec<(u32, u32)>,
    attrs: Vec<u64>,
    /// A stored version exists.
    late: bool,
}

impl Acc {
    fn new(id: [u8; 16], lsn: u64, now: Instant) -> Self {
        Self {
            id,
            first_lsn: lsn,
            max_lsn: 0,
            counted_through: 0,
            last_seen: now,
            start: u64::MAX,
            end: 0,
            root_start: u64::MAX,
            earliest: u64::MAX,
            span_count: 0,
            error_count: 0,
            late_spans: 0,
            prev_version: 0,
            root: None,
            services: Vec::new(),
            ops: Vec::new(),
            attrs: Vec::new(),
            late: false,
        }
    }

    fn from_stored(prev: TraceDoc, lsn: u64, now: Instant, names: &mut Interner) -> Self {
        let mut acc = Self::new(prev.trace_id, lsn, now);
        acc.counted_through = prev.max_lsn;
        acc.max_lsn = prev.max_lsn;
        acc.start = prev.start;
        acc.end = prev.end;
        // The stored root stays unless an earlier root arrives.
        acc.root_start = prev.start;
        acc.earliest = prev.start;
        acc.span_count = prev.span_count;
        acc.error_count = prev.error_count;
        acc.late_spans = prev.late_spans;
        acc.prev_version = prev.version;
        acc.root = names
            .id(&prev.root_service)
            .zip(names.id(&prev.root_operation));
        acc.services = prev.services.iter().filter_map(|s| names.id(s)).collect();
        acc.ops = prev
            .ops
            .iter()
            .filter_map(|(s, o)| names.id(s).zip(names.id(o)))
            .collect();
        acc.attrs = prev.attrs;
        acc.late = true;
        acc
    }

    /// Estimated bytes this entry costs: its slot in the open map and the due queue, each
    /// counted at 1.5× for the free room a growing table or queue keeps (a hash table's
    /// load is 7/16 to 7/8 between doublings), plus its vectors.
    fn bytes(&self) -> usize {
        const SLOT: usize = std::mem::size_of::<([u8; 16], Acc)>() + 1;
        const DUE: usize = std::mem::size_of::<([u8; 16], Instant)>();
        (SLOT + DUE) * 3 / 2
            + self.services.capacity() * 4
            + self.ops.capacity() * 8
            + self.attrs.capacity() * 8
    }

    fn add(
        &mut self,
        lsn: u64,
        service: Option<u32>,
        res_attrs: &[u64],
        span: &Span,
        names: &mut Interner,
    ) {
        let start = span.start_time_unix_nano;
        let end = span.end_time_unix_nano.max(start);
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        self.span_count += 1;
        if self.late {
            self.late_spans += 1;
        }
        if span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)
        {
            self.error_count += 1;
        }
        self.max_lsn = self.max_lsn.max(lsn);
        let op = names.id(&span.name);
        let is_root = span.parent_span_id.iter().all(|b| *b == 0);
        if (is_root && start < self.root_start)
            || (self.root_start == u64::MAX && start < self.earliest)
        {
            self.root = service.zip(op);
            if is_root {
                self.root_start = start;
            }
        }
        self.earliest = self.earliest.min(start);
        if let Some(svc) = service {
            if self.services.len() < MAX_SERVICES_PER_TRACE && !self.services.contains(&svc) {
                self.services.push(svc);
            }
            if let Some(op) = op {
                if self.ops.len() < MAX_OPS_PER_TRACE && !self.ops.contains(&(svc, op)) {
                    self.ops.push((svc, op));
                }
            }
        }
        let mut add_hash = |h: u64| {
            if self.attrs.len() < MAX_ATTRS_PER_TRACE && !self.attrs.contains(&h) {
                self.attrs.push(h);
            }
        };
        for h in res_attrs {
            add_hash(*h);
        }
        for kv in &span.attributes {
            add_hash(attr_value_hash(&kv.key, kv.value.as_ref()));
        }
    }

    fn into_doc(self, names: &Interner) -> TraceDoc {
        let (root_service, root_operation) =
            self.root.map_or((String::new(), String::new()), |(s, o)| {
                (names.name(s).to_string(), names.name(o).to_string())
            });
        TraceDoc {
            trace_id: self.id,
            version: self.prev_version,
            state: TraceState::Complete,
            start: self.start,
            end: self.end.max(self.start),
            span_count: self.span_count,
            error_count: self.error_count,
            late_spans: self.late_spans,
            root_service,
            root_operation,
            services: self
                .services
                .iter()
                .map(|s| names.name(*s).to_string())
                .collect(),
            ops: self
                .ops
                .iter()
                .map(|(s, o)| (names.name(*s).to_string(), names.name(*o).to_string()))
                .collect(),
            attrs: self.attrs,
            max_lsn: self.max_lsn,
        }
    }
}

/// Traces being assembled.
#[derive(Default)]
pub struct Open {
    map: HashMap<[u8; 16], Acc>,
    /// Trace ids in the order their completion is due (checked lazily).
    due: VecDeque<([u8; 16], Instant)>,
    /// First WAL positions of open traces (a multiset).
    first_lsns: BTreeMap<u64, u32>,
    bytes: usize,
}

impl Open {
    /// Whether `id` is being assembled.
    pub fn contains(&self, id: &[u8; 16]) -> bool {
        self.map.contains_key(id)
    }
    /// Number of open traces.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether no trace is open.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn insert(&mut self, id: [u8; 16], acc: Acc, due: Instant) {
        *self.first_lsns.entry(acc.first_lsn).or_default() += 1;
        self.bytes += acc.bytes();
        self.due.push_back((id, due));
        self.map.insert(id, acc);
    }

    fn remove(&mut self, id: &[u8; 16]) -> Option<Acc> {
        let acc = self.map.remove(id)?;
        if let Some(n) = self.first_lsns.get_mut(&acc.first_lsn) {
            *n -= 1;
            if *n == 0 {
                self.first_lsns.remove(&acc.first_lsn);
            }
        }
        self.bytes = self.bytes.saturating_sub(acc.bytes());
        Some(acc)
    }

    fn oldest_lsn(&self) -> Option<u64> {
        self.first_lsns.keys().next().copied()
    }
}

/// Everything the tracker thread needs.
pub struct TrackerSetup {
    /// The trace index.
    pub index: Arc<PartitionedIndex>,
    /// Its schema.
    pub fields: TraceFields,
    /// State shared with the API.
    pub shared: Arc<TracesShared>,
    /// Shared checkpoint of the traces signal.
    pub gate: Arc<CheckpointGate>,
    /// WAL checkpoints.
    pub checkpoints: Arc<Checkpoints>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Trace settings.
    pub cfg: TracesConfig,
    /// Commit interval and writer memory.
    pub index_cfg: lookout_config::IndexConfig,
    /// Partitions older than this are removed.
    pub retention: Duration,
}

/// Start the tracker thread. Messages must arrive in WAL order.
pub fn spawn(setup: TrackerSetup) -> std::io::Result<(mpsc::SyncSender<TraceMsg>, JoinHandle<()>)> {
    let TrackerSetup {
        index,
        fields,
        shared,
        gate,
        checkpoints,
        metrics,
        cfg,
        index_cfg,
        retention,
    } = setup;
    // Bounded: a slow tracker slows the span indexer, which holds ingest back.
    let (tx, rx) = mpsc::sync_channel::<TraceMsg>(4);
    let handle = std::thread::Builder::new()
        .name("lookout-traces".into())
        .spawn(move || {
            Tracker {
                index,
                fields,
                shared,
                gate,
                checkpoints,
                metrics,
                idle: cfg.completion_window.get(),
                max_open_bytes: cfg.max_open_bytes.as_usize(),
                // A trace becomes searchable only after its idle window anyway, so the
                // trace index commits less often than the others (fewer segments to
                // merge): half that window, within [commit_interval, 5 s].
                commit_every: (cfg.completion_window.get() / 2)
                    .min(Duration::from_secs(5))
                    .max(index_cfg.commit_interval.get()),
                index_cfg,
                retention,
                writer: None,
                recent: HashMap::new(),
                completed: Completed::new(),
                names: Interner::default(),
                last_lsn: 0,
                dirty: false,
                last_commit: Instant::now(),
                retry_at: None,
                failures: 0,
                last_maintenance: None,
            }
            .run(rx)
        })?;
    Ok((tx, handle))
}

struct Writer {
    part: Arc<Partition>,
    writer: IndexWriter<TantivyDocument>,
    meta: PartitionMeta,
}

struct Tracker {
    index: Arc<PartitionedIndex>,
    fields: TraceFields,
    shared: Arc<TracesShared>,
    gate: Arc<CheckpointGate>,
    checkpoints: Arc<Checkpoints>,
    metrics: Arc<Metrics>,
    idle: Duration,
    max_open_bytes: usize,
    commit_every: Duration,
    index_cfg: lookout_config::IndexConfig,
    retention: Duration,
    writer: Option<Writer>,
    /// Versions written since the last commit (not yet visible to searches).
    recent: HashMap<[u8; 16], TraceDoc>,
    /// Recently completed trace ids.
    completed: Completed,
    /// Service and operation names.
    names: Interner,
    last_lsn: u64,
    dirty: bool,
    last_commit: Instant,
    /// After a failed index write (a full disk): no writer before this. The summaries
    /// written since the last commit stay in `recent` and go into the next writer.
    retry_at: Option<Instant>,
    /// Failed index writes in a row.
    failures: u32,
    last_maintenance: Option<Instant>,
}

fn unix_secs() -> u64 {
    now_unix_nano() / 1_000_000_000
}

impl Tracker {
    fn run(mut self, rx: mpsc::Receiver<TraceMsg>) {
        let tick = Duration::from_millis(200);
        loop {
            match rx.recv_timeout(tick) {
                Ok(msg) => self.apply(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Open traces stay open: the checkpoint keeps their WAL records, so the
                    // next start replays them.
                    self.commit();
                    if let Some(w) = self.writer.take() {
                        if let Err(e) = w.writer.wait_merging_threads() {
                            tracing::warn!(error = %e, "trace index merge did not finish cleanly");
                        }
                    }
                    tracing::debug!("trace tracker stopped");
                    return;
                }
            }
            self.complete_due(Instant::now());
            if self.last_commit.elapsed() >= self.commit_every
                || (self.recent.len() >= MAX_UNCOMMITTED && self.writer.is_some())
            {
                self.commit();
            }
            if self
                .last_maintenance
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
            {
                self.maintenance();
            }
        }
    }

    fn apply(&mut self, msg: TraceMsg) {
        let now = Instant::now();
        let now_s = unix_secs();
        let now_ns = now_unix_nano();
        // Spans this old whose trace is not open may continue a stored trace.
        let late_if_before = now_ns.saturating_sub(
            u64::try_from(self.idle.as_nanos())
                .unwrap_or(u64::MAX)
                .saturating_add(30_000_000_000),
        );
        let lsn = msg.lsn;
        self.last_lsn = self.last_lsn.max(lsn);
        {
            let mut red = self.shared.red.lock();
            let mut graph = self.shared.graph.lock();
            for rs in &msg.req.resource_spans {
                let attrs = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or(&[]);
                let service = service_name(attrs);
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        red.observe(now_s, &service, span);
                        graph.observe(now_s, &service, span);
                    }
                }
            }
        }
        let mut open = std::mem::take(&mut *self.shared.open.lock());
        for rs in &msg.req.resource_spans {
            let attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service_id = self.names.id(&service_name(attrs));
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
                        let prev = if let Some(d) = self.recent.get(&id) {
                            Some(d.clone())
                        } else if msg.replay
                            || span.start_time_unix_nano < late_if_before
                            || self.completed.contains(&id)
                        {
                            match latest(&self.index, &self.fields, &id) {
                                Ok(l) => {
                                    for e in &l.unreadable {
                                        tracing::warn!(error = %e, "a trace index partition cannot be read; the trace's earlier summary may be missed");
                                    }
                                    l.found
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot read the trace index; treating the span as a new trace");
                                    None
                                }
                            }
                        } else {
                            None
                        };
                        let acc = match prev {
                            Some(p) => Acc::from_stored(p, lsn, now, &mut self.names),
                            None => Acc::new(id, lsn, now),
                        };
                        open.insert(id, acc, now + self.idle);
                    }
                    let Some(acc) = open.map.get_mut(&id) else {
                        continue;
                    };
                    acc.last_seen = now;
                    if lsn <= acc.counted_through {
                        // Replayed, and already in the stored version.
                        continue;
                    }
                    if acc.late {
                        self.metrics.traces_late_spans.inc();
                    }
                    let before = acc.bytes();
                    acc.add(lsn, service_id, &res_hashes, span, &mut self.names);
                    open.bytes = (open.bytes + acc.bytes()).saturating_sub(before);
                }
            }
        }
        self.metrics.traces_open.set(open.len() as i64);
        *self.shared.open.lock() = open;
        // Sets the open-bytes gauge.
        self.evict_over_budget();
    }

    fn invalid(&self, reason: &str) {
        self.metrics
            .traces_invalid_spans
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
                let Some(acc) = open.map.get(&id) else {
                    continue;
                };
                let next = acc.last_seen + self.idle;
                if next > now {
                    open.due.push_back((id, next));
                    continue;
                }
                if let Some(acc) = open.remove(&id) {
                    done.push(acc);
                }
            }
            self.metrics.traces_open.set(open.len() as i64);
            self.metrics.traces_open_bytes.set(open.bytes as i64);
        }
        for acc in done {
            self.write(acc);
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
                if let Some(acc) = open.remove(&id) {
                    done.push(acc);
                }
            }
            self.metrics.traces_open_bytes.set(open.bytes as i64);
        }
        if !done.is_empty() {
            self.metrics.traces_evicted.inc_by(done.len() as u64);
        }
        for acc in done {
            self.write(acc);
        }
    }

    fn write(&mut self, acc: Acc) {
        if acc.span_count == 0 {
            return;
        }
        let late = acc.late;
        let mut doc = acc.into_doc(&self.names);
        doc.version = now_unix_nano().max(doc.version.saturating_add(1));
        doc.state = if late {
            TraceState::UpdatedLate
        } else {
            TraceState::Complete
        };
        if doc.end < doc.start {
            doc.end = doc.start;
        }
        let key = self
            .index
            .key_for(i64::try_from(unix_secs()).unwrap_or(i64::MAX));
        if self.writer.as_ref().is_some_and(|w| w.part.start != key) {
            self.commit();
            self.writer = None;
        }
        let written = self.open_writer(key)
            && match self.writer.as_mut() {
                Some(w) => match self.fields.add(&w.writer, &doc, &mut w.meta) {
                    Ok(()) => true,
                    Err(e) => {
                        self.fail("indexing a trace summary", &e);
                        false
                    }
                },
                None => false,
            };
        if !written {
            tracing::debug!("trace summary kept for the next index writer");
        }
        self.metrics
            .traces_completed
            .with_label_values(&[doc.state.as_str()])
            .inc();
        self.dirty = true;
        self.completed.insert(&doc.trace_id);
        self.recent.insert(doc.trace_id, doc);
    }

    /// The WAL position through which nothing is needed any more.
    fn safe_lsn(&self) -> u64 {
        match self.shared.open.lock().oldest_lsn() {
            Some(first) => first.saturating_sub(1),
            None => self.last_lsn,
        }
    }

    /// Open a writer for partition `key` unless one is open, with the summaries of a
    /// failed one written again first; `false` while waiting out a failure.
    fn open_writer(&mut self, key: i64) -> bool {
        if self.writer.is_some() {
            return true;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let memory = self
            .index_cfg
            .writer_memory
            .as_usize()
            .clamp(15_000_000, 32 << 20);
        let (part, writer) = match self.index.writer(key, memory, 1) {
            Ok(w) => w,
            Err(e) => {
                self.fail("opening a partition", &e);
                return false;
            }
        };
        let meta = meta_for_writing(&part);
        let mut w = Writer { part, writer, meta };
        for doc in self.recent.values() {
            if let Err(e) = self.fields.add(&w.writer, doc, &mut w.meta) {
                self.writer = Some(w);
                self.fail("indexing a trace summary", &e);
                return false;
            }
        }
        self.writer = Some(w);
        true
    }

    /// The trace index failed while `what`: drop the writer (what it had not committed is
    /// in `recent`) and wait before the next one, up to 8 s.
    fn fail(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.writer = None;
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(500)
            .saturating_mul(1u32 << self.failures.min(5).saturating_sub(1))
            .min(Duration::from_secs(8));
        self.retry_at = Some(Instant::now() + wait);
        self.metrics
            .index_failures
            .with_label_values(&["trace_summaries"])
            .inc();
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            tracing::error!(error = %e, failures = self.failures, kept = self.recent.len(), retry_in_ms = wait.as_millis() as u64, "trace index write failed while {what}; the summaries are kept and written again after the wait");
        }
    }

    fn commit(&mut self) {
        self.last_commit = Instant::now();
        if self.writer.is_none() && self.dirty {
            let key = self
                .index
                .key_for(i64::try_from(unix_secs()).unwrap_or(i64::MAX));
            if !self.open_writer(key) {
                return;
            }
        }
        let safe = self.safe_lsn();
        if !self.dirty && safe <= self.gate.tracker.load(Ordering::Acquire) {
            return;
        }
        if self.writer.is_none() {
            if self.dirty {
                return;
            }
            // Nothing written: still record progress so the WAL can be truncated.
            self.gate.tracker_safe(safe, &self.checkpoints);
            return;
        }
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        w.meta.lsn = w.meta.lsn.max(safe);
        match self.index.commit(&w.part, &mut w.writer, w.meta) {
            Ok(()) => {
                self.dirty = false;
                self.recent.clear();
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "trace index writes work again");
                }
                self.failures = 0;
                self.retry_at = None;
                self.metrics
                    .index_commits
                    .with_label_values(&["trace_summaries"])
                    .inc();
                self.gate.tracker_safe(safe, &self.checkpoints);
            }
            Err(e) => self.fail("committing", &e),
        }
    }

    fn maintenance(&mut self) {
        self.last_maintenance = Some(Instant::now());
        let now_s = unix_secs();
        self.shared.red.lock().expire(now_s);
        self.shared.graph.lock().expire(now_s);
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = i64::try_from(now_s)
            .unwrap_or(i64::MAX)
            .saturating_sub(retention);
        let keep = self.writer.as_ref().map(|w| w.part.start);
        let removed = self.index.remove_older_than(cutoff, keep);
        if removed > 0 && keep.is_none() {
            self.writer = None;
        }
        self.index
            .close_idle_readers(crate::store::partition::READER_IDLE, keep);
        self.metrics
            .index_open_readers
            .with_label_values(&["traces"])
            .set(self.index.open_readers() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(seed: u64) -> impl Iterator<Item = [u8; 16]> {
        // splitmix64: random-looking ids, like W3C trace ids.
        let mut x = seed;
        std::iter::repeat_with(move || {
            let mut next = || {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next().to_be_bytes());
            id[8..].copy_from_slice(&next().to_be_bytes());
            id
        })
    }

    #[test]
    fn completed_filter_rotates_by_count_and_keeps_false_positives_rare() {
        let mut c = Completed::new();
        let full = BLOOM_CAPACITY as usize;
        for id in ids(1).take(full) {
            c.insert(&id);
        }
        assert!(ids(1).take(1000).all(|id| c.contains(&id)));
        // Two full generations: every id of both is found, and ids never inserted are
        // (falsely) found at about the design rate of 0.1 % per generation.
        for id in ids(2).take(full) {
            c.insert(&id);
        }
        assert_eq!(
            c.count, BLOOM_CAPACITY,
            "the first generation rotated at capacity"
        );
        assert!(
            ids(1).take(1000).all(|id| c.contains(&id)),
            "previous generation"
        );
        assert!(
            ids(2).take(1000).all(|id| c.contains(&id)),
            "current generation"
        );
        let tries = 200_000;
        let false_hits = ids(3).take(tries).filter(|id| c.contains(id)).count();
        assert!(false_hits * 1000 / tries <= 3, "{false_hits} of {tries}");
        // A third generation pushes out the first.
        for id in ids(4).take(full) {
            c.insert(&id);
        }
        let kept = ids(1).take(1000).filter(|id| c.contains(id)).count();
        assert!(kept < 20, "{kept} of the oldest generation still found");
    }
}
