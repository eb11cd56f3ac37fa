//! Which spans enter a service, for RED and the service graph.
//!
//! A service's requests are its entry spans: server and consumer spans, root spans, and
//! spans of any kind whose parent is in another service. Whether the parent is remote is
//! read from the span flags when the SDK sets them (OTLP 1.1; current SDKs do). Without
//! them, a span whose parent is in the same request is decided there, one whose parent is
//! a client span still waiting in the service graph or a recent entry span (of an SDK
//! without the flags) is decided by that span's service, and any other waits (bounded, for the graph's pair wait) for its parent: a parent in
//! another service makes it an entry, one in the same service does not, and a parent that
//! never comes makes it the entry of its service.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

// Seeded per process: ids come from clients.
use foldhash::fast::RandomState;

use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::Span;

use super::graph::{parent_is_remote, Graph};
use super::red::{Call, Red};

/// Trace id and a span id.
type Key = ([u8; 16], [u8; 8]);

/// A span waiting for its parent to say whether it enters its service.
#[derive(Debug)]
struct Waiting {
    service: Arc<str>,
    name: String,
    duration_ns: u64,
    status: usize,
    at_s: u64,
}

/// How one span counts.
enum Kind {
    /// An entry span of its service.
    Entry,
    /// Inside its service.
    Inner,
    /// It has a parent that may or may not be in its service.
    Unknown([u8; 8]),
}

fn id8(b: &[u8]) -> Option<[u8; 8]> {
    let id: [u8; 8] = b.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

fn classify(span: &Span) -> Kind {
    if span.kind == SpanKind::Server as i32 || span.kind == SpanKind::Consumer as i32 {
        return Kind::Entry;
    }
    let Some(parent) = id8(&span.parent_span_id) else {
        return Kind::Entry;
    };
    match parent_is_remote(span) {
        Some(true) => Kind::Entry,
        Some(false) => Kind::Inner,
        None => Kind::Unknown(parent),
    }
}

fn is_error(status: usize) -> bool {
    status == 2
}

/// Spans waiting for their parent, and what was decided without one.
pub struct Entries {
    /// Recent entry spans without the flags, so a child arriving after its parent (work
    /// left running after the response) finds it.
    recent: HashMap<Key, Arc<str>, RandomState>,
    recent_order: VecDeque<(Key, u64)>,
    waiting: HashMap<Key, Vec<Waiting>, RandomState>,
    order: VecDeque<(Key, u64)>,
    count: usize,
    max: usize,
    wait_s: u64,
    /// Waited for a parent that never came, and counted as entries.
    orphans: u64,
    /// Dropped because too many were waiting.
    dropped: u64,
}

impl Entries {
    /// At most `max` spans wait, each at most `wait_s` seconds.
    pub fn new(max: usize, wait_s: u64) -> Self {
        Self {
            recent: HashMap::default(),
            recent_order: VecDeque::new(),
            waiting: HashMap::default(),
            order: VecDeque::new(),
            count: 0,
            max,
            wait_s,
            orphans: 0,
            dropped: 0,
        }
    }

    /// Spans waiting for their parent.
    pub fn waiting(&self) -> usize {
        self.count
    }

    /// Spans whose parent never came, counted as entries.
    pub fn orphans(&self) -> u64 {
        self.orphans
    }

    /// Spans dropped from the wait because it was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Feed one request's spans, arriving at `now_s`, to RED and the service graph.
    pub fn observe(
        &mut self,
        now_s: u64,
        req: &ExportTraceServiceRequest,
        services: &[String],
        red: &mut Red,
        graph: &mut Graph,
    ) {
        let spans = || {
            req.resource_spans
                .iter()
                .zip(services)
                .flat_map(|(rs, svc)| {
                    rs.scope_spans
                        .iter()
                        .flat_map(move |ss| ss.spans.iter().map(move |s| (svc.as_str(), s)))
                })
        };
        // Every client half waits before a child in this request looks for it.
        for (svc, span) in spans() {
            graph.observe(now_s, svc, span);
        }
        let mut local: Option<HashMap<Key, &str, RandomState>> = None;
        for (svc, span) in spans() {
            let parent = match classify(span) {
                Kind::Entry => {
                    red.record(now_s, svc, &Call::of(span));
                    if parent_is_remote(span).is_none() {
                        self.remember(now_s, span, svc);
                    }
                    continue;
                }
                Kind::Inner => continue,
                Kind::Unknown(p) => p,
            };
            let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                continue;
            };
            let local = local.get_or_insert_with(|| {
                spans()
                    .filter_map(|(s, sp)| {
                        Some((
                            (sp.trace_id.as_slice().try_into().ok()?, id8(&sp.span_id)?),
                            s,
                        ))
                    })
                    .collect()
            });
            let parent_service = match local.get(&(trace, parent)) {
                Some(s) => Some(*s),
                None => graph
                    .waiting_caller(&trace, parent)
                    .or_else(|| self.recent.get(&(trace, parent)).map(|s| &**s)),
            };
            let call = Call::of(span);
            match parent_service {
                Some(p) if p == svc => {}
                Some(p) => {
                    let p: Arc<str> = Arc::from(p);
                    red.record(now_s, svc, &call);
                    self.remember(now_s, span, svc);
                    graph.link(
                        now_s,
                        trace,
                        parent,
                        &p,
                        svc,
                        call.duration_ns,
                        is_error(call.status),
                    );
                }
                None => self.wait(
                    (trace, parent),
                    Waiting {
                        service: Arc::from(svc),
                        name: span.name.clone(),
                        duration_ns: call.duration_ns,
                        status: call.status,
                        at_s: now_s,
                    },
                ),
            }
        }
        if self.count == 0 {
            return;
        }
        for (svc, span) in spans() {
            let (Ok(trace), Some(id)) = (
                <[u8; 16]>::try_from(span.trace_id.as_slice()),
                id8(&span.span_id),
            ) else {
                continue;
            };
            let Some(children) = self.waiting.remove(&(trace, id)) else {
                continue;
            };
            self.count -= children.len();
            for c in children {
                if *c.service == *svc {
                    continue;
                }
                red.record(now_s, &c.service, &c.call(trace));
                graph.link(
                    now_s,
                    trace,
                    id,
                    svc,
                    &c.service,
                    c.duration_ns,
                    is_error(c.status),
                );
            }
        }
    }

    fn remember(&mut self, now_s: u64, span: &Span, service: &str) {
        let (Ok(trace), Some(id)) = (
            <[u8; 16]>::try_from(span.trace_id.as_slice()),
            id8(&span.span_id),
        ) else {
            return;
        };
        while self.recent.len() >= self.max {
            let Some((k, _)) = self.recent_order.pop_front() else {
                break;
            };
            self.recent.remove(&k);
        }
        self.recent.insert((trace, id), Arc::from(service));
        self.recent_order.push_back(((trace, id), now_s));
    }

    fn wait(&mut self, key: Key, w: Waiting) {
        while self.count >= self.max {
            let Some((k, _)) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.waiting.remove(&k) {
                self.count -= v.len();
                self.dropped += v.len() as u64;
            }
        }
        self.order.push_back((key, w.at_s));
        self.waiting.entry(key).or_default().push(w);
        self.count += 1;
    }

    /// Whether a span has waited its time.
    pub fn due(&self, now_s: u64) -> bool {
        let due =
            |q: &VecDeque<(Key, u64)>| q.front().is_some_and(|(_, at)| at + self.wait_s <= now_s);
        due(&self.order) || due(&self.recent_order)
    }

    /// Count spans whose parent did not come within the wait as entries of their service.
    pub fn expire(&mut self, now_s: u64, red: &mut Red) {
        while let Some((k, at)) = self.recent_order.front().copied() {
            if at + self.wait_s > now_s {
                break;
            }
            self.recent_order.pop_front();
            self.recent.remove(&k);
        }
        while let Some((k, at)) = self.order.front().copied() {
            if at + self.wait_s > now_s {
                break;
            }
            self.order.pop_front();
            let Some(v) = self.waiting.get_mut(&k) else {
                continue;
            };
            // Later spans under the same parent keep waiting for their own time.
            let (due, keep): (Vec<Waiting>, Vec<Waiting>) =
                std::mem::take(v).into_iter().partition(|w| w.at_s <= at);
            if keep.is_empty() {
                self.waiting.remove(&k);
            } else {
                *v = keep;
            }
            self.count -= due.len();
            self.orphans += due.len() as u64;
            for w in due {
                red.record(now_s, &w.service, &w.call(k.0));
            }
        }
    }
}

impl Waiting {
    fn call(&self, trace: [u8; 16]) -> Call<'_> {
        Call {
            name: &self.name,
            duration_ns: self.duration_ns,
            status: self.status,
            trace: Some(trace),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, SpanFlags};

    use super::*;
    use crate::traces::graph::GraphConfig;
    use crate::traces::red::RedConfig;

    const REMOTE: u32 =
        SpanFlags::ContextHasIsRemoteMask as u32 | SpanFlags::ContextIsRemoteMask as u32;
    const LOCAL: u32 = SpanFlags::ContextHasIsRemoteMask as u32;

    fn sp(kind: SpanKind, id: u8, parent: u8, flags: u32) -> Span {
        Span {
            trace_id: vec![9; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            kind: kind as i32,
            name: format!("op{id}"),
            flags,
            start_time_unix_nano: 0,
            end_time_unix_nano: 5_000_000,
            ..Default::default()
        }
    }

    fn peer(mut s: Span, key: &str, value: &str) -> Span {
        s.attributes.push(KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(V::StringValue(value.into())),
            }),
            ..Default::default()
        });
        s
    }

    /// One request with a resource per `(service, spans)`.
    fn req(parts: Vec<(&str, Vec<Span>)>) -> (ExportTraceServiceRequest, Vec<String>) {
        let services = parts.iter().map(|(s, _)| s.to_string()).collect();
        let resource_spans = parts
            .into_iter()
            .map(|(_, spans)| ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        (ExportTraceServiceRequest { resource_spans }, services)
    }

    struct World {
        entries: Entries,
        red: Red,
        graph: Graph,
    }

    impl World {
        fn new() -> Self {
            Self {
                entries: Entries::new(1000, 10),
                red: Red::new(RedConfig::default()),
                graph: Graph::new(GraphConfig::default()),
            }
        }

        fn send(&mut self, now_s: u64, parts: Vec<(&str, Vec<Span>)>) {
            let (r, s) = req(parts);
            self.entries
                .observe(now_s, &r, &s, &mut self.red, &mut self.graph);
        }

        fn requests(&self, service: &str) -> u64 {
            self.red
                .stats(105, Duration::from_secs(300), service, None)
                .map_or(0, |s| s.requests)
        }

        fn edges(&self) -> Vec<(String, String, u64, bool)> {
            self.graph
                .dependencies(0, 1000)
                .edges
                .into_iter()
                .map(|e| (e.caller, e.callee, e.calls, e.inferred))
                .collect()
        }
    }

    #[test]
    fn root_spans_of_any_kind_are_entries() {
        let mut w = World::new();
        w.send(
            100,
            vec![
                ("cron", vec![sp(SpanKind::Internal, 1, 0, 0)]),
                ("script", vec![sp(SpanKind::Client, 2, 0, 0)]),
            ],
        );
        assert_eq!((w.requests("cron"), w.requests("script")), (1, 1));
    }

    #[test]
    fn a_remote_parent_makes_an_entry_and_an_edge_in_either_order() {
        let mut w = World::new();
        // The callee's internal span comes first, its caller's client span later.
        w.send(
            100,
            vec![(
                "worker",
                vec![
                    sp(SpanKind::Internal, 3, 2, REMOTE),
                    sp(SpanKind::Internal, 4, 3, LOCAL),
                ],
            )],
        );
        assert_eq!(w.requests("worker"), 1);
        w.send(101, vec![("web", vec![sp(SpanKind::Client, 2, 1, LOCAL)])]);
        assert_eq!(w.edges(), [("web".into(), "worker".into(), 1, false)]);
        // Caller first this time.
        let mut w = World::new();
        w.send(
            100,
            vec![("web", vec![sp(SpanKind::Producer, 2, 1, LOCAL)])],
        );
        w.send(
            101,
            vec![("worker", vec![sp(SpanKind::Internal, 3, 2, REMOTE)])],
        );
        assert_eq!(w.requests("worker"), 1);
        assert_eq!(w.edges(), [("web".into(), "worker".into(), 1, false)]);
        assert_eq!(w.entries.waiting(), 0);
    }

    #[test]
    fn without_flags_the_parent_decides_in_the_request_later_or_never() {
        let mut w = World::new();
        // Parent in the same request and service: inside; in another service: an entry.
        w.send(
            100,
            vec![
                (
                    "api",
                    vec![
                        sp(SpanKind::Server, 1, 0, 0),
                        sp(SpanKind::Internal, 2, 1, 0),
                    ],
                ),
                ("jobs", vec![sp(SpanKind::Internal, 3, 2, 0)]),
            ],
        );
        assert_eq!((w.requests("api"), w.requests("jobs")), (1, 1));
        assert_eq!(w.edges(), [("api".into(), "jobs".into(), 1, false)]);
        // Parent arriving later, in the same service and in another one.
        w.send(
            101,
            vec![(
                "jobs",
                vec![
                    sp(SpanKind::Internal, 11, 10, 0),
                    sp(SpanKind::Internal, 21, 20, 0),
                ],
            )],
        );
        assert_eq!(w.entries.waiting(), 2);
        w.send(102, vec![("jobs", vec![sp(SpanKind::Internal, 10, 0, 0)])]);
        w.send(102, vec![("api", vec![sp(SpanKind::Client, 20, 1, 0)])]);
        // `10` is a root (1); `11` is inside it; `21` is called by the client span `20`.
        assert_eq!(w.requests("jobs"), 3);
        assert_eq!(w.entries.waiting(), 0);
        assert!(w.edges().contains(&("api".into(), "jobs".into(), 2, false)));
        // A parent that never comes: the span is its service's entry.
        w.send(103, vec![("lone", vec![sp(SpanKind::Internal, 31, 30, 0)])]);
        assert_eq!(w.requests("lone"), 0);
        w.entries.expire(112, &mut w.red);
        assert_eq!(w.requests("lone"), 0);
        assert!(w.entries.due(113));
        w.entries.expire(113, &mut w.red);
        assert_eq!((w.requests("lone"), w.entries.orphans()), (1, 1));
    }

    #[test]
    fn a_local_parent_is_inside_and_waits_for_nothing() {
        let mut w = World::new();
        w.send(
            100,
            vec![("api", vec![sp(SpanKind::Internal, 2, 1, LOCAL)])],
        );
        assert_eq!((w.requests("api"), w.entries.waiting()), (0, 0));
    }

    #[test]
    fn a_client_span_naming_its_peer_is_an_inferred_call_when_no_callee_comes() {
        let mut w = World::new();
        w.send(
            100,
            vec![(
                "web",
                vec![
                    sp(SpanKind::Server, 1, 0, 0),
                    peer(
                        sp(SpanKind::Client, 2, 1, LOCAL),
                        "server.address",
                        "payments.example",
                    ),
                    peer(sp(SpanKind::Client, 3, 1, LOCAL), "peer.service", "db"),
                    sp(SpanKind::Client, 4, 1, LOCAL),
                    peer(sp(SpanKind::Client, 5, 1, LOCAL), "peer.service", "web"),
                ],
            )],
        );
        assert!(w.edges().is_empty());
        w.graph.expire(111);
        let mut edges = w.edges();
        edges.sort();
        assert_eq!(
            edges,
            [
                ("web".into(), "db".into(), 1, true),
                ("web".into(), "payments.example".into(), 1, true)
            ]
        );
        // The unnamed one and the one naming its own service stay unpaired.
        assert_eq!(w.graph.expired_unpaired(), 2);
    }

    #[test]
    fn waiting_is_bounded() {
        let mut w = World::new();
        w.entries = Entries::new(2, 10);
        for id in 1..=5u8 {
            w.send(
                100,
                vec![("s", vec![sp(SpanKind::Internal, id, 100 + id, 0)])],
            );
        }
        assert_eq!((w.entries.waiting(), w.entries.dropped()), (2, 3));
    }
}
