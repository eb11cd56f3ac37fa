//! RED metrics derived from spans at ingest (the idea of the OpenTelemetry Collector's
//! spanmetrics connector): per service and operation, from entry spans (`traces::entry`),
//! request and error counts and a latency histogram, over a sliding window of time slices
//! for the API and alerting, and as cumulative Prometheus series. Cardinality is bounded:
//! ids in operation names are normalised, operations per service and services are capped
//! with an `__overflow__` bucket, idle series expire.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

// Seeded per process: names come from clients.
use foldhash::fast::RandomState;
use std::time::Duration;

use lookout_proto::api::{OperationStats, RedStats, ServiceStats, ServicesResponse};
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::Span;

use crate::prom::expo::{push_labels, Exemplar, Exposition, Kind};

/// Name of the series that collects what is past a cardinality cap.
pub const OVERFLOW: &str = "__overflow__";

/// Slices searched for duration exemplars (the newest ones).
const EXEMPLAR_SLICES: usize = 30;

/// Upper bounds (seconds) of the classic Prometheus histogram buckets.
pub(crate) const PROM_BUCKETS: [f64; 14] = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    f64::INFINITY,
];

/// A log-linear latency histogram in microseconds: exact below 32 µs, then 32 buckets per
/// power of two (at most 1/32 relative width, so percentiles are within ~1.6 %).
/// Sparse: only buckets that were hit are kept.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hist {
    buckets: BTreeMap<u16, u32>,
    count: u64,
}

impl Hist {
    fn index(us: u64) -> u16 {
        if us < 32 {
            return us as u16;
        }
        let e = 63 - u64::from(us.leading_zeros());
        let sub = (us >> (e - 5)) & 31;
        ((e - 4) * 32 + sub).min(u64::from(u16::MAX)) as u16
    }

    /// Lower bound and width of bucket `i`, µs.
    fn bounds(i: u16) -> (f64, f64) {
        let i = u64::from(i);
        if i < 32 {
            return (i as f64, 1.0);
        }
        let e = i / 32 + 4;
        let sub = i % 32;
        let shift = (e - 5) as i32;
        ((32 + sub) as f64 * 2f64.powi(shift), 2f64.powi(shift))
    }

    /// Record a duration in nanoseconds.
    pub(crate) fn record(&mut self, ns: u64) {
        *self.buckets.entry(Self::index(ns / 1000)).or_default() += 1;
        self.count += 1;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (k, v) in &other.buckets {
            *self.buckets.entry(*k).or_default() += v;
        }
        self.count += other.count;
    }

    /// The buckets hit, `[index, count]`, for another cluster member to add up.
    pub(crate) fn to_pairs(&self) -> Vec<[u32; 2]> {
        self.buckets
            .iter()
            .map(|(k, v)| [u32::from(*k), *v])
            .collect()
    }

    /// The histogram of [`Hist::to_pairs`]; pairs out of range are left out.
    pub(crate) fn from_pairs(pairs: &[[u32; 2]]) -> Self {
        let mut h = Hist::default();
        for [k, v] in pairs {
            if let Ok(k) = u16::try_from(*k) {
                *h.buckets.entry(k).or_default() += v;
                h.count += u64::from(*v);
            }
        }
        h
    }

    /// The `q` quantile in milliseconds (bucket midpoint); 0 when empty.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (k, v) in &self.buckets {
            seen += u64::from(*v);
            if seen >= rank {
                let (lo, w) = Self::bounds(*k);
                let mid = if *k < 32 { lo } else { lo + w / 2.0 };
                return mid / 1000.0;
            }
        }
        0.0
    }
}

/// Cumulative Prometheus-style histogram.
#[derive(Debug, Clone, Default)]
pub(crate) struct PromHist {
    pub(crate) buckets: [u64; 14],
    pub(crate) sum_s: f64,
    pub(crate) count: u64,
}

impl PromHist {
    pub(crate) fn record(&mut self, ns: u64) {
        let s = ns as f64 / 1e9;
        for (i, le) in PROM_BUCKETS.iter().enumerate() {
            if s <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum_s += s;
        self.count += 1;
    }

    /// Write this histogram (`_bucket`, `_sum`, `_count` of the current family of `w`)
    /// with `labels` (rendered); `exemplars[i]` is bucket `i`'s exemplar, if any.
    pub(crate) fn render(&self, w: &mut Exposition, labels: &str, exemplars: &[Option<Exemplar>]) {
        w.histogram(
            labels,
            &PROM_BUCKETS[..PROM_BUCKETS.len() - 1],
            &self.buckets,
            Some(self.sum_s),
            &|i| exemplars.get(i).copied().flatten(),
        );
    }
}

/// Add `other`'s figures to `into`: a cluster's RED from its members', each over the
/// same window. Counts and rates add up, the percentiles come from the added histograms
/// ([`RedStats::latency_buckets`]), the examples keep failed traces first.
pub fn merge_stats(into: &mut RedStats, other: &RedStats) {
    into.requests += other.requests;
    into.errors += other.errors;
    into.request_rate += other.request_rate;
    into.error_rate = if into.requests == 0 {
        0.0
    } else {
        into.errors as f64 / into.requests as f64
    };
    let mut hist = Hist::from_pairs(&into.latency_buckets);
    hist.merge(&Hist::from_pairs(&other.latency_buckets));
    into.p50_ms = hist.quantile_ms(0.50);
    into.p90_ms = hist.quantile_ms(0.90);
    into.p95_ms = hist.quantile_ms(0.95);
    into.p99_ms = hist.quantile_ms(0.99);
    into.latency_buckets = hist.to_pairs();
    if into.rate_history.len() < other.rate_history.len() {
        into.rate_history.resize(other.rate_history.len(), 0.0);
    }
    for (a, b) in into.rate_history.iter_mut().zip(&other.rate_history) {
        *a += b;
    }
    for id in &other.exemplar_trace_ids {
        if into.exemplar_trace_ids.len() < 5 && !into.exemplar_trace_ids.contains(id) {
            into.exemplar_trace_ids.push(id.clone());
        }
    }
}

/// Merge `other`, a member's answer over the same window, into `into`: services and
/// their operations by name.
pub fn merge_services(into: &mut ServicesResponse, other: ServicesResponse) {
    for svc in other.services {
        match into.services.iter_mut().find(|s| s.service == svc.service) {
            Some(mine) => {
                merge_stats(&mut mine.stats, &svc.stats);
                for op in svc.operations {
                    match mine
                        .operations
                        .iter_mut()
                        .find(|o| o.operation == op.operation)
                    {
                        Some(o) => merge_stats(&mut o.stats, &op.stats),
                        None => mine.operations.push(op),
                    }
                }
                mine.operations.sort_by(|a, b| {
                    b.stats
                        .requests
                        .cmp(&a.stats.requests)
                        .then_with(|| a.operation.cmp(&b.operation))
                });
                for sig in svc.signals {
                    if !mine.signals.contains(&sig) {
                        mine.signals.push(sig);
                    }
                }
                mine.signals.sort();
                mine.last_seen_unix_nano = mine.last_seen_unix_nano.max(svc.last_seen_unix_nano);
            }
            None => into.services.push(svc),
        }
    }
    into.services.sort_by(|a, b| a.service.cmp(&b.service));
}

/// Leave the histograms out of an answer for users (they are for members).
pub fn strip_histograms(res: &mut ServicesResponse) {
    for s in &mut res.services {
        s.stats.latency_buckets = Vec::new();
        for o in &mut s.operations {
            o.stats.latency_buckets = Vec::new();
        }
    }
}

/// Settings of [`Red`].
#[derive(Debug, Clone)]
pub struct RedConfig {
    /// Longest window kept.
    pub window: Duration,
    /// Length of a time slice.
    pub slice: Duration,
    /// Operations per service before `__overflow__`.
    pub max_operations_per_service: usize,
    /// Services before `__overflow__`.
    pub max_services: usize,
    /// Series without spans for this long are dropped.
    pub idle_expiry: Duration,
}

impl Default for RedConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            slice: Duration::from_secs(10),
            max_operations_per_service: 200,
            max_services: 1000,
            idle_expiry: Duration::from_secs(900),
        }
    }
}

#[derive(Debug, Default)]
struct Slice {
    start_s: u64,
    requests: u64,
    errors: u64,
    hist: Hist,
    /// Slowest request of the slice and the latest failed one (trace ids).
    slowest: Option<(u64, [u8; 16])>,
    last_error: Option<[u8; 16]>,
}

#[derive(Debug, Default)]
struct Series {
    slices: VecDeque<Slice>,
    calls: [u64; 3],
    /// Latest trace per status (exemplars of the calls counter).
    last_trace: [Option<[u8; 16]>; 3],
    prom: PromHist,
    last_seen_s: u64,
}

/// RED metrics of every service and operation.
pub struct Red {
    cfg: RedConfig,
    services: HashMap<String, HashMap<String, Series, RandomState>, RandomState>,
    overflowed: u64,
    expired: u64,
    /// Since when spans have been counted (Unix seconds): a window reaching further back
    /// covers only this much, and rates divide by what it covers.
    started_s: Option<u64>,
}

/// Replace id-like path segments with `{id}` and drop query strings, so that
/// `GET /users/123?x=1` and `GET /users/456` are one operation.
pub fn normalise_operation(name: &str) -> Cow<'_, str> {
    let base = name.split_once('?').map_or(name, |(b, _)| b);
    let looks_like_id = |seg: &str| {
        if seg.is_empty() {
            return false;
        }
        let digits = seg.bytes().filter(u8::is_ascii_digit).count();
        let all_digits = digits == seg.len();
        let hex = seg.len() >= 8 && seg.bytes().all(|b| b.is_ascii_hexdigit()) && digits > 0;
        let uuid = seg.len() == 36
            && seg.bytes().enumerate().all(|(i, b)| {
                matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
            });
        let long_mixed = seg.len() >= 16
            && digits > 0
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        all_digits || hex || uuid || long_mixed
    };
    if base.len() == name.len() && !base.split(['/', ' ']).any(looks_like_id) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(base.len());
    let mut seg = String::new();
    for c in base.chars().chain(std::iter::once('\0')) {
        if c == '/' || c == ' ' || c == '\0' {
            if looks_like_id(&seg) {
                out.push_str("{id}");
            } else {
                out.push_str(&seg);
            }
            seg.clear();
            if c != '\0' {
                out.push(c);
            }
        } else {
            seg.push(c);
        }
    }
    Cow::Owned(out)
}

/// What RED keeps of one entry span.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Operation (span name, normalised when recorded).
    pub name: &'a str,
    /// End minus start.
    pub duration_ns: u64,
    /// 0 unset, 1 ok, 2 error.
    pub status: usize,
    /// The span's trace, when its id is valid.
    pub trace: Option<[u8; 16]>,
}

impl<'a> Call<'a> {
    /// The call that `span` stands for.
    pub fn of(span: &'a Span) -> Self {
        Self {
            name: &span.name,
            duration_ns: span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano),
            status: status_index(span),
            trace: span.trace_id.as_slice().try_into().ok(),
        }
    }
}

fn status_index(span: &Span) -> usize {
    match span.status.as_ref().map(|s| s.code) {
        Some(c) if c == StatusCode::Ok as i32 => 1,
        Some(c) if c == StatusCode::Error as i32 => 2,
        _ => 0,
    }
}

const STATUS_NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

impl Red {
    /// Empty metrics.
    pub fn new(cfg: RedConfig) -> Self {
        Self {
            cfg,
            services: HashMap::default(),
            overflowed: 0,
            expired: 0,
            started_s: None,
        }
    }

    /// Counting started at `now_s` (Unix seconds); without it, at the first span or
    /// expiry pass.
    pub fn started_at(mut self, now_s: u64) -> Self {
        self.started_s = Some(now_s);
        self
    }

    /// Spans counted under `__overflow__`.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Series dropped for being idle.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// Record one span arriving at `now_s` (Unix seconds) if it is a server or consumer
    /// span. Spans of other kinds that enter a service are counted through
    /// [`Red::record`] by the entry classifier (`traces::entry`).
    pub fn observe(&mut self, now_s: u64, service: &str, span: &Span) {
        self.started_s.get_or_insert(now_s);
        if span.kind != SpanKind::Server as i32 && span.kind != SpanKind::Consumer as i32 {
            return;
        }
        self.record(now_s, service, &Call::of(span));
    }

    /// Count one call (an entry span) of `service` arriving at `now_s` (Unix seconds).
    pub fn record(&mut self, now_s: u64, service: &str, call: &Call<'_>) {
        self.started_s.get_or_insert(now_s);
        let op = normalise_operation(call.name);
        let mut svc_key = service;
        if !self.services.contains_key(service) && self.services.len() >= self.cfg.max_services {
            svc_key = OVERFLOW;
            self.overflowed += 1;
        }
        // Look up before inserting: no key allocation per span for a known service.
        if !self.services.contains_key(svc_key) {
            self.services
                .insert(svc_key.to_string(), Default::default());
        }
        let Some(ops) = self.services.get_mut(svc_key) else {
            return;
        };
        let mut op_key: &str = &op;
        if !ops.contains_key(op_key) && ops.len() >= self.cfg.max_operations_per_service {
            op_key = OVERFLOW;
            if svc_key != OVERFLOW {
                self.overflowed += 1;
            }
        }
        let series = match ops.get_mut(op_key) {
            Some(s) => s,
            None => ops.entry(op_key.to_string()).or_default(),
        };
        let dur = call.duration_ns;
        let st = call.status.min(2);
        series.calls[st] += 1;
        if let Some(id) = call.trace {
            series.last_trace[st] = Some(id);
        }
        series.prom.record(dur);
        series.last_seen_s = now_s;
        let slice_s = self.cfg.slice.as_secs().max(1);
        let start_s = now_s - now_s % slice_s;
        if series.slices.back().is_none_or(|s| s.start_s < start_s) {
            series.slices.push_back(Slice {
                start_s,
                ..Default::default()
            });
        }
        // A clock step backwards lands in the newest slice.
        if let Some(slice) = series.slices.back_mut() {
            slice.requests += 1;
            slice.hist.record(dur);
            let id = call.trace;
            if st == 2 {
                slice.errors += 1;
                slice.last_error = id.or(slice.last_error);
            }
            if let Some(id) = id {
                if slice.slowest.is_none_or(|(d, _)| dur > d) {
                    slice.slowest = Some((dur, id));
                }
            }
        }
        let keep = self.cfg.window.as_secs().max(slice_s);
        while series
            .slices
            .front()
            .is_some_and(|s| s.start_s + keep + slice_s <= now_s)
        {
            series.slices.pop_front();
        }
    }

    /// Drop series idle longer than the idle expiry, and slices older than the window.
    pub fn expire(&mut self, now_s: u64) {
        self.started_s.get_or_insert(now_s);
        let idle = self.cfg.idle_expiry.as_secs();
        let keep = self.cfg.window.as_secs() + self.cfg.slice.as_secs().max(1);
        let mut expired = 0u64;
        for ops in self.services.values_mut() {
            ops.retain(|_, s| {
                let live = s.last_seen_s + idle > now_s;
                if !live {
                    expired += 1;
                }
                live
            });
            for s in ops.values_mut() {
                while s.slices.front().is_some_and(|x| x.start_s + keep <= now_s) {
                    s.slices.pop_front();
                }
            }
        }
        self.services.retain(|_, ops| !ops.is_empty());
        self.expired += expired;
    }

    /// Seconds of the last `window_s` in which spans were being counted: the whole window
    /// once the collector has run that long, less just after a start.
    fn covered_s(&self, now_s: u64, window_s: u64) -> u64 {
        let up = self.started_s.map_or(window_s, |s| now_s.saturating_sub(s));
        up.clamp(1, window_s.max(1))
    }

    fn stats_of<'a>(
        &self,
        now_s: u64,
        window: Duration,
        series: impl Iterator<Item = &'a Series>,
    ) -> RedStats {
        let slice_s = self.cfg.slice.as_secs().max(1);
        let window_s = window.as_secs().max(1);
        let from = (now_s - now_s % slice_s).saturating_sub(window_s.saturating_sub(slice_s));
        let n_slices = window_s.div_ceil(slice_s).max(1);
        // At most 60 points for sparklines.
        let per_point = n_slices.div_ceil(60);
        let points = n_slices.div_ceil(per_point) as usize;
        let mut history = vec![0u64; points];
        let (mut requests, mut errors) = (0u64, 0u64);
        let mut hist = Hist::default();
        let mut slow: Vec<(u64, [u8; 16])> = Vec::new();
        let mut failed: Vec<(u64, [u8; 16])> = Vec::new();
        for s in series {
            for sl in s.slices.iter().filter(|x| x.start_s >= from) {
                requests += sl.requests;
                errors += sl.errors;
                hist.merge(&sl.hist);
                let idx = ((sl.start_s - from) / slice_s / per_point) as usize;
                if let Some(h) = history.get_mut(idx.min(points - 1)) {
                    *h += sl.requests;
                }
                if let Some(x) = sl.slowest {
                    slow.push(x);
                }
                if let Some(id) = sl.last_error {
                    failed.push((sl.start_s, id));
                }
            }
        }
        slow.sort_by_key(|x| std::cmp::Reverse(x.0));
        failed.sort_by_key(|x| std::cmp::Reverse(x.0));
        let mut exemplars: Vec<String> = Vec::new();
        for id in failed
            .iter()
            .take(3)
            .chain(slow.iter().take(2))
            .map(|x| hex::encode(x.1))
        {
            if !exemplars.contains(&id) {
                exemplars.push(id);
            }
        }
        let point_s = (per_point * slice_s) as f64;
        RedStats {
            requests,
            errors,
            request_rate: requests as f64 / self.covered_s(now_s, window_s) as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: hist.quantile_ms(0.50),
            p90_ms: hist.quantile_ms(0.90),
            p95_ms: hist.quantile_ms(0.95),
            p99_ms: hist.quantile_ms(0.99),
            rate_history: history.iter().map(|c| *c as f64 / point_s).collect(),
            exemplar_trace_ids: exemplars,
            latency_buckets: hist.to_pairs(),
        }
    }

    /// RED figures over the last `window` for the API, every service sorted by name.
    pub fn services(&self, now_s: u64, window: Duration) -> ServicesResponse {
        let mut services: Vec<ServiceStats> = self
            .services
            .iter()
            .map(|(name, ops)| {
                let mut operations: Vec<OperationStats> = ops
                    .iter()
                    .map(|(op, s)| OperationStats {
                        operation: op.clone(),
                        stats: self.stats_of(now_s, window, std::iter::once(s)),
                    })
                    .collect();
                operations.sort_by(|a, b| {
                    b.stats
                        .requests
                        .cmp(&a.stats.requests)
                        .then_with(|| a.operation.cmp(&b.operation))
                });
                ServiceStats {
                    service: name.clone(),
                    stats: self.stats_of(now_s, window, ops.values()),
                    operations,
                    signals: Vec::new(),
                    last_seen_unix_nano: 0,
                }
            })
            .collect();
        services.sort_by(|a, b| a.service.cmp(&b.service));
        ServicesResponse {
            window_s: window.as_secs(),
            services,
            warnings: Vec::new(),
        }
    }

    /// Figures of a service without entry spans over `window`: zero, with a history of
    /// the same length as the others'.
    pub fn idle_stats(&self, now_s: u64, window: Duration) -> RedStats {
        self.stats_of(now_s, window, std::iter::empty())
    }

    /// Figures of one service (all operations, or one normalised operation) over `window`.
    pub fn stats(
        &self,
        now_s: u64,
        window: Duration,
        service: &str,
        operation: Option<&str>,
    ) -> Option<RedStats> {
        let ops = self.services.get(service)?;
        match operation {
            Some(op) => {
                let s = ops.get(normalise_operation(op).as_ref())?;
                Some(self.stats_of(now_s, window, std::iter::once(s)))
            }
            None => Some(self.stats_of(now_s, window, ops.values())),
        }
    }

    /// Every service with RED series.
    pub fn service_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.services.keys().cloned().collect();
        v.sort();
        v
    }

    /// Exposition of the cumulative series. In OpenMetrics, each calls counter carries
    /// the latest trace of its status and each duration bucket the trace of the slowest
    /// recent span (last [`EXEMPLAR_SLICES`] slices) that fell in it.
    pub fn render_prometheus(&self, w: &mut Exposition) {
        let mut rows: Vec<(&String, &String, &Series)> = self
            .services
            .iter()
            .flat_map(|(svc, ops)| ops.iter().map(move |(op, s)| (svc, op, s)))
            .collect();
        rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let want = w.wants_exemplars();
        let mut labels = String::new();
        if w.family(
            "lookout_span_calls",
            Kind::Counter,
            "Entry spans (server, consumer, root, or with a parent in another service) by service, operation and status code.",
            "",
        ) {
            for (svc, op, s) in &rows {
                for (i, n) in s.calls.iter().enumerate() {
                    if *n > 0 {
                        labels.clear();
                        push_labels(
                            &mut labels,
                            &[
                                ("service", svc.as_str()),
                                ("operation", op.as_str()),
                                ("status_code", STATUS_NAMES[i]),
                            ],
                        );
                        let ex = s.last_trace[i].filter(|_| want).map(|id| Exemplar {
                            trace_id: id,
                            span_id: None,
                            value: 1.0,
                            timestamp_ns: None,
                        });
                        w.counter(&labels, *n as f64, ex.as_ref());
                    }
                }
            }
        }
        if w.family(
            "lookout_span_duration_seconds",
            Kind::Histogram,
            "Duration of server and consumer spans by service and operation.",
            "seconds",
        ) {
            let mut exemplars = [None; PROM_BUCKETS.len()];
            for (svc, op, s) in &rows {
                labels.clear();
                push_labels(
                    &mut labels,
                    &[("service", svc.as_str()), ("operation", op.as_str())],
                );
                exemplars.fill(None);
                if want {
                    // Newest slices first: each bucket keeps the latest slowest span.
                    for (dur, id) in s
                        .slices
                        .iter()
                        .rev()
                        .take(EXEMPLAR_SLICES)
                        .filter_map(|sl| sl.slowest)
                    {
                        let secs = dur as f64 / 1e9;
                        let i = PROM_BUCKETS.partition_point(|le| *le < secs);
                        if let Some(slot @ None) = exemplars.get_mut(i) {
                            *slot = Some(Exemplar {
                                trace_id: id,
                                span_id: None,
                                value: secs,
                                timestamp_ns: None,
                            });
                        }
                    }
                }
                s.prom.render(w, &labels, &exemplars);
            }
        }
        if w.family(
            "lookout_red_overflow_spans",
            Kind::Counter,
            "Spans counted under __overflow__ by the RED cardinality caps.",
            "",
        ) {
            w.counter("", self.overflowed as f64, None);
        }
        if w.family(
            "lookout_red_expired_series",
            Kind::Counter,
            "RED series dropped after being idle.",
            "",
        ) {
            w.counter("", self.expired as f64, None);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::trace::v1::Status;

    use super::*;

    fn span(name: &str, kind: SpanKind, dur_ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_000 + dur_ms * 1_000_000,
            status: error.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    /// Members' figures merged equal those of one node that saw every span: the
    /// cluster's p99 is the true p99, not an average of percentiles.
    #[test]
    fn merged_figures_are_those_of_all_spans_together() {
        let now = 1_000_000u64;
        let w = Duration::from_secs(60);
        let new = || Red::new(RedConfig::default()).started_at(now - 3_600);
        let (mut a, mut b, mut all) = (new(), new(), new());
        for i in 1..=1000u64 {
            // Fast requests on one member, slow ones on the other.
            let (member, ms) = if i % 10 == 0 {
                (&mut b, 1000 + i)
            } else {
                (&mut a, i % 50 + 1)
            };
            let sp = span("GET /x", SpanKind::Server, ms, i % 7 == 0);
            member.observe(now, "api", &sp);
            all.observe(now, "api", &sp);
        }
        b.observe(now, "db", &span("query", SpanKind::Server, 3, false));
        all.observe(now, "db", &span("query", SpanKind::Server, 3, false));
        let mut merged = a.services(now, w);
        merge_services(&mut merged, b.services(now, w));
        let want = all.services(now, w);
        assert_eq!(merged.services.len(), 2);
        for (m, w) in merged.services.iter().zip(&want.services) {
            assert_eq!(m.service, w.service);
            let (ms, ws) = (&m.stats, &w.stats);
            assert_eq!((ms.requests, ms.errors), (ws.requests, ws.errors));
            assert_eq!(
                (ms.p50_ms, ms.p90_ms, ms.p95_ms, ms.p99_ms),
                (ws.p50_ms, ws.p90_ms, ws.p95_ms, ws.p99_ms)
            );
            assert!((ms.request_rate - ws.request_rate).abs() < 1e-9);
            assert!((ms.error_rate - ws.error_rate).abs() < 1e-12);
            assert_eq!(ms.rate_history, ws.rate_history);
            assert_eq!(m.operations.len(), w.operations.len());
        }
        // An average of the members' p99s would be far off.
        let (pa, pb) = (
            a.stats(now, w, "api", None).unwrap().p99_ms,
            b.stats(now, w, "api", None).unwrap().p99_ms,
        );
        assert!(((pa + pb) / 2.0 - want.services[0].stats.p99_ms).abs() > 100.0);
        strip_histograms(&mut merged);
        assert!(merged.services[0].stats.latency_buckets.is_empty());
    }

    #[test]
    fn counts_rates_and_percentiles() {
        let now = 1_000_000u64;
        let mut red = Red::new(RedConfig::default()).started_at(now - 3_600);
        for i in 1..=1000u64 {
            red.observe(now, "api", &span("GET /x", SpanKind::Server, i, i % 4 == 0));
        }
        red.observe(now, "api", &span("call", SpanKind::Client, 5, false));
        let s = red
            .stats(now, Duration::from_secs(60), "api", None)
            .unwrap();
        assert_eq!((s.requests, s.errors), (1000, 250));
        assert!((s.error_rate - 0.25).abs() < 1e-12);
        assert!((s.request_rate - 1000.0 / 60.0).abs() < 1e-9);
        for (got, want) in [(s.p50_ms, 500.0), (s.p95_ms, 950.0), (s.p99_ms, 990.0)] {
            assert!((got - want).abs() / want < 0.02, "{got} vs {want}");
        }
        assert_eq!(s.rate_history.len(), 6);
        assert!(!s.exemplar_trace_ids.is_empty());
    }

    #[test]
    fn rates_divide_by_the_time_covered_since_the_start() {
        let start = 1_000_000u64;
        let mut red = Red::new(RedConfig::default()).started_at(start);
        // 5 requests a second for the 30 s since the start.
        for t in 0..30u64 {
            for _ in 0..5 {
                red.observe(
                    start + t,
                    "api",
                    &span("GET /x", SpanKind::Server, 1, false),
                );
            }
        }
        let s = red
            .stats(start + 30, Duration::from_secs(300), "api", None)
            .unwrap();
        assert_eq!(s.requests, 150);
        // Before: 150 / 300 s = 0.5/s, so `request_rate < 1` fired after every restart.
        assert!((s.request_rate - 5.0).abs() < 1e-9, "{}", s.request_rate);
    }

    #[test]
    fn window_slides() {
        let mut red = Red::new(RedConfig::default());
        red.observe(1000, "api", &span("op", SpanKind::Server, 1, false));
        red.observe(1100, "api", &span("op", SpanKind::Consumer, 1, false));
        let w = Duration::from_secs(60);
        assert_eq!(red.stats(1100, w, "api", None).unwrap().requests, 1);
        assert_eq!(
            red.stats(1100, Duration::from_secs(300), "api", None)
                .unwrap()
                .requests,
            2
        );
        assert_eq!(red.stats(1300, w, "api", None).unwrap().requests, 0);
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            normalise_operation("GET /users/123/orders/9f8e7d6c5b4a3f2e"),
            "GET /users/{id}/orders/{id}"
        );
        assert_eq!(normalise_operation("GET /a?b=1"), "GET /a");
        assert_eq!(
            normalise_operation("GET /o/123e4567-e89b-12d3-a456-426614174000"),
            "GET /o/{id}"
        );
        assert_eq!(
            normalise_operation("GET /static/app.js"),
            "GET /static/app.js"
        );
        assert!(matches!(normalise_operation("charge"), Cow::Borrowed(_)));
    }

    #[test]
    fn caps_and_expiry() {
        let mut red = Red::new(RedConfig {
            max_operations_per_service: 2,
            max_services: 1,
            ..RedConfig::default()
        });
        for op in ["a", "b", "c", "d"] {
            red.observe(100, "s1", &span(op, SpanKind::Server, 1, false));
        }
        red.observe(100, "s2", &span("a", SpanKind::Server, 1, false));
        assert_eq!(red.overflowed(), 3);
        let names = red.service_names();
        assert_eq!(names, [OVERFLOW, "s1"]);
        assert_eq!(
            red.stats(100, Duration::from_secs(60), "s1", Some(OVERFLOW))
                .unwrap()
                .requests,
            2
        );
        red.expire(100 + 901);
        assert!(red.service_names().is_empty());
        assert_eq!(red.expired(), 4);
    }

    #[test]
    fn prometheus_text() {
        let mut red = Red::new(RedConfig::default());
        red.observe(100, "a\"b", &span("GET /x", SpanKind::Server, 3, true));
        red.observe(100, "a\"b", &span("GET /x", SpanKind::Server, 30, false));
        let mut w = Exposition::new(crate::prom::Format::Text);
        red.render_prometheus(&mut w);
        let out = w.finish();
        assert!(out.contains("lookout_span_calls_total{service=\"a\\\"b\",operation=\"GET /x\",status_code=\"STATUS_CODE_ERROR\"} 1\n"), "{out}");
        assert!(out.contains("lookout_span_duration_seconds_bucket{service=\"a\\\"b\",operation=\"GET /x\",le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains(
            "lookout_span_duration_seconds_count{service=\"a\\\"b\",operation=\"GET /x\"} 2\n"
        ));
        assert!(!out.contains("trace_id"), "{out}");
        crate::prom::testing::promtool_check_metrics(&out, true);
    }

    #[test]
    fn openmetrics_exemplars() {
        let mut red = Red::new(RedConfig::default());
        let mut slow = span("GET /x", SpanKind::Server, 30, true);
        slow.trace_id = vec![7; 16];
        red.observe(100, "api", &span("GET /x", SpanKind::Server, 3, false));
        red.observe(100, "api", &slow);
        let mut w = Exposition::new(crate::prom::Format::OpenMetrics);
        red.render_prometheus(&mut w);
        let out = w.finish();
        let sevens = "07".repeat(16);
        let ones = "01".repeat(16);
        assert!(out.contains("# TYPE lookout_span_calls counter\n"), "{out}");
        assert!(out.contains(&format!(
            "lookout_span_calls_total{{service=\"api\",operation=\"GET /x\",status_code=\"STATUS_CODE_ERROR\"}} 1 # {{trace_id=\"{sevens}\"}} 1\n"
        )), "{out}");
        assert!(out.contains(&format!(
            "lookout_span_calls_total{{service=\"api\",operation=\"GET /x\",status_code=\"STATUS_CODE_UNSET\"}} 1 # {{trace_id=\"{ones}\"}} 1\n"
        )), "{out}");
        // The slowest span of the slice (30 ms) is the exemplar of the 0.05 bucket.
        assert!(out.contains(&format!(
            "lookout_span_duration_seconds_bucket{{service=\"api\",operation=\"GET /x\",le=\"0.05\"}} 2 # {{trace_id=\"{sevens}\"}} 0.03\n"
        )), "{out}");
        assert!(out.contains("# UNIT lookout_span_duration_seconds seconds\n"));
        assert!(out.ends_with("# EOF\n"));
        crate::prom::testing::promtool_check_openmetrics(&out);
    }

    #[test]
    fn histogram_buckets_are_consistent() {
        for us in [0u64, 1, 31, 32, 33, 63, 64, 1000, 123_456, 1 << 40] {
            let i = Hist::index(us);
            let (lo, w) = Hist::bounds(i);
            assert!(
                lo <= us as f64 && (us as f64) < lo + w,
                "{us} in [{lo}, {})",
                lo + w
            );
        }
    }
}
