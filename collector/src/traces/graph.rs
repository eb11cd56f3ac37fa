//! The service graph (the idea of the OpenTelemetry Collector's servicegraph connector
//! and Tempo's service graphs): a client (or producer) span and the server (or consumer)
//! span whose parent it is form one call from the caller's service to the callee's. Halves
//! wait for their partner a bounded time in a bounded table; paired calls are counted per
//! edge in time buckets (for `/api/v1/dependencies` over a range) and cumulatively (for
//! Prometheus).
//!
//! Beyond client/server pairs: a span of any kind whose parent is remote (span flags) is a
//! callee half like a server span, and the entry classifier (`traces::entry`) links a
//! child to a parent in another service through [`Graph::link`]. A client span whose
//! callee never sends a span is, when it names its peer (`peer.service`,
//! `server.address`, ...), an inferred call to that peer, as Tempo's and the
//! Collector's virtual nodes are.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

// Seeded per process: keys come from clients.
use foldhash::fast::RandomState;
use std::sync::Arc;
use std::time::Duration;

use lookout_proto::api::{DependenciesResponse, DependencyEdge};
use lookout_proto::otlp::common::v1::any_value::Value as AnyValue;
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::{Span, SpanFlags};

use super::red::{Hist, PromHist};
use crate::prom::expo::{push_labels, Exposition, Kind};

/// Settings of [`Graph`].
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// How long a half waits for its partner.
    pub pair_ttl: Duration,
    /// Most halves waiting.
    pub max_pending: usize,
    /// Width of a time bucket of edge counts.
    pub bucket: Duration,
    /// How long buckets are kept.
    pub history: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            pair_ttl: Duration::from_secs(10),
            max_pending: 100_000,
            bucket: Duration::from_secs(60),
            history: Duration::from_secs(86_400),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

#[derive(Debug)]
struct Half {
    side: Side,
    service: Arc<str>,
    duration_ns: u64,
    error: bool,
    at_s: u64,
    /// What a caller names as its peer, for an inferred call when no callee comes.
    peer: Option<Arc<str>>,
}

/// Attributes of a client span that name the service it calls, most specific first.
const PEER_ATTRIBUTES: [&str; 5] = [
    "peer.service",
    "server.address",
    "net.peer.name",
    "db.system.name",
    "db.system",
];

/// Most distinct inferred peers; past it, calls to new ones are not inferred.
const MAX_PEERS: usize = 1000;

/// Whether `span`'s parent is in another process, as its SDK marked it (span flags,
/// OTLP 1.1): `Some(true)` remote, `Some(false)` local, `None` not marked.
pub(crate) fn parent_is_remote(span: &Span) -> Option<bool> {
    const HAS_IS_REMOTE: u32 = SpanFlags::ContextHasIsRemoteMask as u32;
    const IS_REMOTE: u32 = SpanFlags::ContextIsRemoteMask as u32;
    (span.flags & HAS_IS_REMOTE != 0).then_some(span.flags & IS_REMOTE != 0)
}

fn peer_of(span: &Span) -> Option<&str> {
    // One pass over the attributes, keeping the most specific key seen.
    let mut best: Option<(usize, &str)> = None;
    for kv in &span.attributes {
        let Some(rank) = PEER_ATTRIBUTES.iter().position(|k| *k == kv.key) else {
            continue;
        };
        if best.is_some_and(|(r, _)| r <= rank) {
            continue;
        }
        if let Some(AnyValue::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            if !v.is_empty() && v.len() <= 255 {
                best = Some((rank, v));
            }
        }
    }
    best.map(|(_, v)| v)
}

type Key = ([u8; 16], [u8; 8]);

/// Caller and callee service.
type Edge = (Arc<str>, Arc<str>);

/// Most service names shared between halves; past it each half holds its own copy.
const MAX_NAMES: usize = 10_000;

#[derive(Debug, Default, Clone)]
struct EdgeStats {
    calls: u64,
    /// Calls inferred from a client span alone.
    inferred: u64,
    errors: u64,
    sum_ns: u128,
    hist: Hist,
}

#[derive(Debug, Default)]
struct EdgeTotal {
    calls: u64,
    errors: u64,
    prom: PromHist,
}

/// Service graph state.
pub struct Graph {
    cfg: GraphConfig,
    pending: HashMap<Key, Half, RandomState>,
    order: VecDeque<(Key, u64)>,
    buckets: BTreeMap<u64, HashMap<Edge, EdgeStats>>,
    totals: HashMap<Edge, EdgeTotal>,
    /// Service names, shared by the halves and edges that name them.
    names: HashSet<Arc<str>, RandomState>,
    /// Peers that calls were inferred to.
    peers: HashSet<Arc<str>, RandomState>,
    expired_unpaired: u64,
    dropped_pending: u64,
}

fn id8(b: &[u8]) -> Option<[u8; 8]> {
    let id: [u8; 8] = b.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

impl Graph {
    /// Empty graph.
    pub fn new(cfg: GraphConfig) -> Self {
        let cap = cfg.max_pending.min(1 << 20);
        Self {
            cfg,
            // Grown as halves wait: a table sized for the most at once spreads a few
            // thousand entries over tens of MiB, one cache miss per span.
            pending: HashMap::default(),
            order: VecDeque::with_capacity(cap.min(4096)),
            buckets: BTreeMap::new(),
            totals: HashMap::new(),
            names: HashSet::default(),
            peers: HashSet::default(),
            expired_unpaired: 0,
            dropped_pending: 0,
        }
    }

    /// Halves whose partner never came.
    pub fn expired_unpaired(&self) -> u64 {
        self.expired_unpaired
    }

    /// Halves dropped because the table was full.
    pub fn dropped_pending(&self) -> u64 {
        self.dropped_pending
    }

    /// Feed one span arriving at `now_s` (Unix seconds).
    pub fn observe(&mut self, now_s: u64, service: &str, span: &Span) {
        let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
            return;
        };
        let kind = span.kind;
        let (side, key_id) = if kind == SpanKind::Client as i32 || kind == SpanKind::Producer as i32
        {
            (Side::Caller, id8(&span.span_id))
        } else if kind == SpanKind::Server as i32
            || kind == SpanKind::Consumer as i32
            || parent_is_remote(span) == Some(true)
        {
            (Side::Callee, id8(&span.parent_span_id))
        } else {
            return;
        };
        let Some(key_id) = key_id else {
            return;
        };
        let key = (trace, key_id);
        let peer = match side {
            Side::Caller => peer_of(span).map(|p| self.name(p)),
            Side::Callee => None,
        };
        let half = Half {
            side,
            peer,
            service: self.name(service),
            duration_ns: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
            error: span
                .status
                .as_ref()
                .is_some_and(|s| s.code == StatusCode::Error as i32),
            at_s: now_s,
        };
        match self.pending.remove(&key) {
            Some(other) if other.side != side => {
                let (caller, callee) = if side == Side::Caller {
                    (half, other)
                } else {
                    (other, half)
                };
                self.record(now_s, caller, callee, false);
            }
            Some(other) => {
                // Same side twice (a duplicate span): keep the first.
                self.pending.insert(key, other);
            }
            None => {
                while self.pending.len() >= self.cfg.max_pending {
                    let Some((k, _)) = self.order.pop_front() else {
                        break;
                    };
                    if self.pending.remove(&k).is_some() {
                        self.dropped_pending += 1;
                    }
                }
                self.order.push_back((key, now_s));
                self.pending.insert(key, half);
            }
        }
    }

    /// The peer a caller that got no callee names, unless it names itself or the peer
    /// cap is reached.
    fn inferred_callee(&mut self, half: &Half) -> Option<Arc<str>> {
        let peer = half.peer.clone().filter(|p| *p != half.service)?;
        if self.peers.contains(&peer) {
            return Some(peer);
        }
        if self.peers.len() >= MAX_PEERS {
            return None;
        }
        self.peers.insert(peer.clone());
        Some(peer)
    }

    fn name(&mut self, service: &str) -> Arc<str> {
        if let Some(n) = self.names.get(service) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(service);
        if self.names.len() < MAX_NAMES {
            self.names.insert(n.clone());
        }
        n
    }

    /// The service of the client or producer span `(trace, span)` waiting for its callee.
    pub(crate) fn waiting_caller(&self, trace: &[u8; 16], span: [u8; 8]) -> Option<&str> {
        self.pending
            .get(&(*trace, span))
            .filter(|h| h.side == Side::Caller)
            .map(|h| &*h.service)
    }

    /// A call from `parent_service` into `child_service`, found by the entry classifier:
    /// the child span `(duration_ns, error)` has its parent `(trace, parent)` in another
    /// service. When that parent is a client span waiting for its callee, they pair.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn link(
        &mut self,
        now_s: u64,
        trace: [u8; 16],
        parent: [u8; 8],
        parent_service: &str,
        child_service: &str,
        duration_ns: u64,
        error: bool,
    ) {
        let callee = Half {
            side: Side::Callee,
            service: self.name(child_service),
            duration_ns,
            error,
            at_s: now_s,
            peer: None,
        };
        let caller = match self.pending.remove(&(trace, parent)) {
            Some(h) if h.side == Side::Caller => h,
            other => {
                if let Some(h) = other {
                    self.pending.insert((trace, parent), h);
                }
                Half {
                    side: Side::Caller,
                    service: self.name(parent_service),
                    duration_ns,
                    error: false,
                    at_s: now_s,
                    peer: None,
                }
            }
        };
        self.record(now_s, caller, callee, false);
    }

    fn record(&mut self, now_s: u64, caller: Half, callee: Half, inferred: bool) {
        let error = caller.error || callee.error;
        let edge = (caller.service, callee.service);
        let w = self.cfg.bucket.as_secs().max(1);
        let b = self
            .buckets
            .entry(now_s - now_s % w)
            .or_default()
            .entry(edge.clone())
            .or_default();
        b.calls += 1;
        b.inferred += u64::from(inferred);
        b.errors += u64::from(error);
        b.sum_ns += u128::from(callee.duration_ns);
        b.hist.record(callee.duration_ns);
        let t = self.totals.entry(edge).or_default();
        t.calls += 1;
        t.errors += u64::from(error);
        t.prom.record(callee.duration_ns);
    }

    /// Give up on halves older than the pair wait, and drop buckets past the history.
    pub fn expire(&mut self, now_s: u64) {
        let ttl = self.cfg.pair_ttl.as_secs();
        while let Some((k, at)) = self.order.front().copied() {
            if at + ttl > now_s {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&k).is_none_or(|h| h.at_s != at) {
                continue;
            }
            let Some(half) = self.pending.remove(&k) else {
                continue;
            };
            match self.inferred_callee(&half) {
                Some(peer) => {
                    let callee = Half {
                        side: Side::Callee,
                        service: peer,
                        duration_ns: half.duration_ns,
                        error: false,
                        at_s: now_s,
                        peer: None,
                    };
                    self.record(now_s, half, callee, true);
                }
                None => self.expired_unpaired += 1,
            }
        }
        let cutoff = now_s.saturating_sub(self.cfg.history.as_secs());
        while self
            .buckets
            .first_key_value()
            .is_some_and(|(start, _)| *start < cutoff)
        {
            self.buckets.pop_first();
        }
    }

    /// Edges seen in `[from_s, to_s]` (bucket-granular), by calls, highest first.
    pub fn dependencies(&self, from_s: u64, to_s: u64) -> DependenciesResponse {
        let w = self.cfg.bucket.as_secs().max(1);
        let mut agg: HashMap<&Edge, EdgeStats> = HashMap::new();
        for (_, edges) in self.buckets.range(from_s - from_s % w..=to_s) {
            for (edge, s) in edges {
                let a = agg.entry(edge).or_default();
                a.calls += s.calls;
                a.inferred += s.inferred;
                a.errors += s.errors;
                a.sum_ns += s.sum_ns;
                a.hist.merge(&s.hist);
            }
        }
        let mut edges: Vec<DependencyEdge> = agg
            .into_iter()
            .map(|((caller, callee), s)| DependencyEdge {
                caller: caller.to_string(),
                callee: callee.to_string(),
                calls: s.calls,
                errors: s.errors,
                avg_ms: if s.calls == 0 {
                    0.0
                } else {
                    s.sum_ns as f64 / s.calls as f64 / 1e6
                },
                p95_ms: s.hist.quantile_ms(0.95),
                inferred: s.calls > 0 && s.inferred == s.calls,
            })
            .collect();
        edges.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| (&a.caller, &a.callee).cmp(&(&b.caller, &b.callee)))
        });
        DependenciesResponse {
            edges,
            warnings: Vec::new(),
        }
    }

    /// Exposition of the cumulative edge series.
    pub fn render_prometheus(&self, w: &mut Exposition) {
        let mut rows: Vec<(&Edge, &EdgeTotal)> = self.totals.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let labels: Vec<String> = rows
            .iter()
            .map(|(e, _)| {
                let mut l = String::new();
                push_labels(&mut l, &[("client", &e.0), ("server", &e.1)]);
                l
            })
            .collect();
        if w.family(
            "lookout_service_graph_request",
            Kind::Counter,
            "Calls between services (client or producer span to its child in another service, or inferred from the peer a client span names).",
            "",
        ) {
            for (l, (_, t)) in labels.iter().zip(&rows) {
                w.counter(l, t.calls as f64, None);
            }
        }
        if w.family(
            "lookout_service_graph_request_failed",
            Kind::Counter,
            "Calls between services where either side failed.",
            "",
        ) {
            for (l, (_, t)) in labels.iter().zip(&rows) {
                w.counter(l, t.errors as f64, None);
            }
        }
        if w.family(
            "lookout_service_graph_request_server_seconds",
            Kind::Histogram,
            "Duration of calls between services, as the server saw it.",
            "seconds",
        ) {
            for (l, (_, t)) in labels.iter().zip(&rows) {
                t.prom.render(w, l, &[]);
            }
        }
        if w.family(
            "lookout_service_graph_unpaired_spans",
            Kind::Counter,
            "Client or server halves whose partner never arrived (expired) or were dropped (table full).",
            "",
        ) {
            w.counter("reason=\"expired\"", self.expired_unpaired as f64, None);
            w.counter("reason=\"dropped\"", self.dropped_pending as f64, None);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::trace::v1::Status;

    use super::*;

    fn sp(kind: SpanKind, id: u8, parent: u8, dur_ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            kind: kind as i32,
            start_time_unix_nano: 0,
            end_time_unix_nano: dur_ms * 1_000_000,
            status: error.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pairs_in_either_order() {
        let mut g = Graph::new(GraphConfig::default());
        g.observe(100, "web", &sp(SpanKind::Client, 2, 1, 50, false));
        g.observe(100, "api", &sp(SpanKind::Server, 3, 2, 40, true));
        g.observe(100, "api", &sp(SpanKind::Consumer, 5, 4, 10, false));
        g.observe(101, "api", &sp(SpanKind::Producer, 4, 3, 1, false));
        let d = g.dependencies(0, 200);
        assert_eq!(d.edges.len(), 2);
        let wa = d.edges.iter().find(|e| e.caller == "web").unwrap();
        assert_eq!((wa.calls, wa.errors), (1, 1));
        assert!((wa.avg_ms - 40.0).abs() < 1e-9);
        let aa = d.edges.iter().find(|e| e.caller == "api").unwrap();
        assert_eq!(aa.callee, "api");
        assert!(g.pending.is_empty());
    }

    #[test]
    fn expiry_drop_and_ranges() {
        let mut g = Graph::new(GraphConfig {
            max_pending: 2,
            ..GraphConfig::default()
        });
        g.observe(100, "a", &sp(SpanKind::Client, 1, 0, 1, false));
        g.observe(100, "a", &sp(SpanKind::Client, 2, 0, 1, false));
        g.observe(100, "a", &sp(SpanKind::Client, 3, 0, 1, false));
        assert_eq!(g.dropped_pending(), 1);
        g.expire(111);
        assert_eq!(g.expired_unpaired(), 2);
        g.observe(1000, "a", &sp(SpanKind::Client, 7, 0, 1, false));
        g.observe(1000, "b", &sp(SpanKind::Server, 8, 7, 1, false));
        assert_eq!(g.dependencies(0, 900).edges.len(), 0);
        assert_eq!(g.dependencies(990, 1010).edges[0].calls, 1);
        g.expire(1000 + 86_400 + 61);
        assert!(g.dependencies(0, u64::MAX / 2).edges.is_empty());
    }

    #[test]
    fn prometheus_text() {
        let mut g = Graph::new(GraphConfig::default());
        g.observe(100, "web", &sp(SpanKind::Client, 2, 1, 50, false));
        g.observe(100, "api", &sp(SpanKind::Server, 3, 2, 40, true));
        let mut w = Exposition::new(crate::prom::Format::Text);
        g.render_prometheus(&mut w);
        let out = w.finish();
        assert!(
            out.contains("lookout_service_graph_request_total{client=\"web\",server=\"api\"} 1\n")
        );
        assert!(out.contains(
            "lookout_service_graph_request_failed_total{client=\"web\",server=\"api\"} 1\n"
        ));
        assert!(out.contains("lookout_service_graph_request_server_seconds_bucket{client=\"web\",server=\"api\",le=\"0.05\"} 1\n"), "{out}");
        crate::prom::testing::promtool_check_metrics(&out, true);
        let mut w = Exposition::new(crate::prom::Format::OpenMetrics);
        g.render_prometheus(&mut w);
        let om = w.finish();
        assert!(
            om.contains("# TYPE lookout_service_graph_request counter\n"),
            "{om}"
        );
        crate::prom::testing::promtool_check_openmetrics(&om);
    }
}
