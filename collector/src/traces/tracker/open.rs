//! Traces being assembled: one compact entry per open trace (names by number, attributes
//! as hashes), in completion order.

use std::collections::{BTreeMap, HashMap, VecDeque};

// Seeded per process: keys come from clients.
use foldhash::fast::RandomState;
use std::time::Instant;

use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::Span;

use crate::store::traces::{attr_value_hash, Summary, TraceState};

/// Most distinct `(service, operation)` pairs kept per trace.
const MAX_OPS_PER_TRACE: usize = 64;
/// Most attribute hashes kept per trace (searches for attributes past it miss the trace).
const MAX_ATTRS_PER_TRACE: usize = 256;
/// Most services kept per trace.
const MAX_SERVICES_PER_TRACE: usize = 64;

/// Names of services and operations, stored once; traces refer to them by number.
#[derive(Default)]
pub(super) struct Names {
    ids: HashMap<Box<str>, u32, RandomState>,
    names: Vec<Box<str>>,
}

/// Most distinct names kept; past it new names are not recorded on traces (counted).
const MAX_NAMES: usize = 500_000;

impl Names {
    pub(super) fn id(&mut self, name: &str) -> Option<u32> {
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
    pub(super) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// One open trace, compact: names by number, attributes as hashes.
pub(super) struct OpenTrace {
    pub(super) id: [u8; 16],
    pub(super) first_lsn: u64,
    pub(super) max_lsn: u64,
    /// Spans through this WAL position are in the stored version this continues.
    pub(super) counted_through: u64,
    pub(super) last_seen: Instant,
    pub(super) start: u64,
    pub(super) end: u64,
    /// Start of the root span chosen so far; `u64::MAX` without a root.
    pub(super) root_start: u64,
    /// Start of the earliest span (the root stand-in without a real root).
    pub(super) earliest: u64,
    pub(super) span_count: u64,
    pub(super) error_count: u64,
    pub(super) late_spans: u64,
    pub(super) prev_version: u64,
    pub(super) root: Option<(u32, u32)>,
    pub(super) services: Vec<u32>,
    pub(super) ops: Vec<(u32, u32)>,
    pub(super) attrs: Vec<u64>,
    /// A stored version exists.
    pub(super) late: bool,
}

impl OpenTrace {
    pub(super) fn new(id: [u8; 16], lsn: u64, now: Instant) -> Self {
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

    pub(super) fn from_stored(prev: Summary, lsn: u64, now: Instant, names: &mut Names) -> Self {
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
    pub(super) fn bytes(&self) -> usize {
        const SLOT: usize = std::mem::size_of::<([u8; 16], OpenTrace)>() + 1;
        const DUE: usize = std::mem::size_of::<([u8; 16], Instant)>();
        (SLOT + DUE) * 3 / 2
            + self.services.capacity() * 4
            + self.ops.capacity() * 8
            + self.attrs.capacity() * 8
    }

    pub(super) fn add(
        &mut self,
        lsn: u64,
        service: Option<u32>,
        res_attrs: &[u64],
        span: &Span,
        names: &mut Names,
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

    pub(super) fn into_doc(self, names: &Names) -> Summary {
        let (root_service, root_operation) =
            self.root.map_or((String::new(), String::new()), |(s, o)| {
                (names.name(s).to_string(), names.name(o).to_string())
            });
        Summary {
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
pub struct OpenTraces {
    pub(super) map: HashMap<[u8; 16], OpenTrace, RandomState>,
    /// Trace ids in the order their completion is due (checked lazily).
    pub(super) due: VecDeque<([u8; 16], Instant)>,
    /// First WAL positions of open traces (a multiset).
    pub(super) first_lsns: BTreeMap<u64, u32>,
    pub(super) bytes: usize,
}

impl OpenTraces {
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

    pub(super) fn insert(&mut self, id: [u8; 16], acc: OpenTrace, due: Instant) {
        *self.first_lsns.entry(acc.first_lsn).or_default() += 1;
        self.bytes += acc.bytes();
        self.due.push_back((id, due));
        self.map.insert(id, acc);
    }

    pub(super) fn remove(&mut self, id: &[u8; 16]) -> Option<OpenTrace> {
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

    pub(super) fn oldest_lsn(&self) -> Option<u64> {
        self.first_lsns.keys().next().copied()
    }
}
