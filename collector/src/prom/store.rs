//! The OTLP metrics received from services, held as Prometheus series for `/metrics` and
//! for metric-based alert rules.
//!
//! Each OTLP data point is converted by the rules of [`super::convert`] and lands in one
//! series (family name + labels, including `job` and `instance`):
//!
//! - gauges and non-monotonic cumulative sums: the latest value (a gauge);
//! - monotonic sums: a counter. Cumulative points replace the value (a drop or a new start
//!   time is a reset, which Prometheus handles); delta points are added to the series'
//!   running total, which starts at the first delta's start time. A delta that overlaps
//!   the last one (start before the previous point's time) or repeats it is dropped.
//!   Non-monotonic *delta* sums are dropped, as the specification requires: their running
//!   total would be wrong by whatever was sent before the collector started;
//! - histograms: cumulative points replace the buckets, delta points are added bucket by
//!   bucket; different bounds reset the series to the new point;
//! - exponential histograms: converted to classic buckets (see [`MAX_CLASSIC_BUCKETS`]);
//!   deltas are first added in exponential form (at the coarser of the two scales);
//! - summaries: the latest quantiles, sum and count.
//!
//! Points older than the series' last point are dropped (`out_of_order`). A point with
//! the "no recorded value" flag removes its series. Exemplars with a trace id are kept per
//! series (counters: the latest; histograms: per bucket) for OpenMetrics. Series not
//! updated for `stale_after` are no longer exposed and are removed by
//! [`MetricStore::expire`]; past `max_series`, points of new series are dropped.
//!
//! Not thread-safe on purpose: callers share it as `Arc<parking_lot::Mutex<MetricStore>>`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::metrics::v1::exponential_histogram_data_point::Buckets;
use lookout_proto::otlp::metrics::v1::metric::Data;
use lookout_proto::otlp::metrics::v1::{
    exemplar, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};

use super::convert::{self, PromKind, Target};
use super::expo::{render_labels, Exemplar, Kind, Writer};
use crate::metrics::Metrics;

/// Most finite buckets of a classic histogram converted from an exponential one. The
/// exponential histogram is downscaled (scale − 1 merges pairs of adjacent buckets) until
/// its negative buckets, the zero bucket (when it has counts or negative buckets exist)
/// and its positive buckets number at most this; the bounds are then `−base^i` for
/// negative bucket `i`, the zero threshold, and `base^(i+1)` for positive bucket `i`,
/// with `base = 2^(2^−scale)`, plus `+Inf`. Bounds that are not finite or not increasing
/// are merged into the next bucket.
pub const MAX_CLASSIC_BUCKETS: usize = 40;

/// Most exponential buckets (positive + negative) kept while adding deltas.
const MAX_EXP_BUCKETS: usize = 320;
const MIN_SCALE: i32 = -10;
const MAX_SCALE: i32 = 20;

/// Family key of `target_info`, reserved in the name table (never a valid metric name).
const TARGET_KEY: &str = " target";

/// Settings of [`MetricStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// A series without a new point for this long is no longer exposed.
    pub stale_after: Duration,
    /// Most series held; points of new series past it are dropped.
    pub max_series: usize,
    /// Most series held per `job` (service); points of its new series past it are dropped.
    pub max_series_per_service: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::from(&lookout_config::MetricsConfig::default())
    }
}

impl From<&lookout_config::MetricsConfig> for StoreConfig {
    fn from(c: &lookout_config::MetricsConfig) -> Self {
        Self {
            stale_after: c.stale_after.get(),
            max_series: c.max_series,
            max_series_per_service: c.max_series_per_service,
        }
    }
}

/// OTLP point types, as counted in `lookout_metrics_points_received_total{type}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointType {
    /// Gauge points.
    Gauge = 0,
    /// Sum points.
    Sum,
    /// Explicit-bucket histogram points.
    Histogram,
    /// Exponential histogram points.
    ExponentialHistogram,
    /// Summary points.
    Summary,
}

impl PointType {
    /// Every type.
    pub const ALL: [PointType; 5] = [
        PointType::Gauge,
        PointType::Sum,
        PointType::Histogram,
        PointType::ExponentialHistogram,
        PointType::Summary,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PointType::Gauge => "gauge",
            PointType::Sum => "sum",
            PointType::Histogram => "histogram",
            PointType::ExponentialHistogram => "exponential_histogram",
            PointType::Summary => "summary",
        }
    }
}

/// Why a point was dropped, as counted in `lookout_metrics_points_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// It would have created a series past `max_series`.
    MaxSeries = 0,
    /// It would have created a series of its service past `max_series_per_service`.
    MaxSeriesPerService,
    /// No valid name, no value, bad histogram layout (bounds not increasing or more than
    /// 1024, counts not matching), exponential scale outside -10..=20, unspecified
    /// temporality, negative delta of a counter.
    Invalid,
    /// Older than (or overlapping) the series' last point.
    OutOfOrder,
    /// A non-monotonic delta sum (cannot be made cumulative correctly).
    DeltaNonMonotonic,
    /// Its name is taken by a metric of another type (or by `target_info`).
    NameConflict,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 6] = [
        DropReason::MaxSeries,
        DropReason::MaxSeriesPerService,
        DropReason::Invalid,
        DropReason::OutOfOrder,
        DropReason::DeltaNonMonotonic,
        DropReason::NameConflict,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxSeries => "max_series",
            DropReason::MaxSeriesPerService => "max_series_per_service",
            DropReason::Invalid => "invalid",
            DropReason::OutOfOrder => "out_of_order",
            DropReason::DeltaNonMonotonic => "delta_non_monotonic",
            DropReason::NameConflict => "name_conflict",
        }
    }
}

/// What one [`MetricStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    received: [u64; 5],
    dropped: [u64; DropReason::ALL.len()],
}

impl ApplyReport {
    /// Points received of type `t`.
    pub fn received(&self, t: PointType) -> u64 {
        self.received[t as usize]
    }

    /// Points dropped for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }

    /// Points dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    fn drop(&mut self, r: DropReason, n: usize) {
        self.dropped[r as usize] += n as u64;
    }

    /// Add these counts to the self-metrics.
    pub fn publish(&self, m: &Metrics) {
        for t in PointType::ALL {
            let n = self.received(t);
            if n > 0 {
                m.otlp_points_received
                    .with_label_values(&[t.as_str()])
                    .inc_by(n);
            }
        }
        for r in DropReason::ALL {
            let n = self.dropped(r);
            if n > 0 {
                m.otlp_points_dropped
                    .with_label_values(&[r.as_str()])
                    .inc_by(n);
            }
        }
    }
}

/// One series as read by metric-based alert rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    /// Labels sorted by name, including `job` and `instance` (and `otel_scope_name`,
    /// `otel_scope_version` when the scope had them).
    pub labels: Vec<(String, String)>,
    /// Current value.
    pub value: SnapshotValue,
}

/// The value of a [`SeriesSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotValue {
    /// A gauge (OTLP gauge or non-monotonic sum).
    Gauge(f64),
    /// A counter's cumulative total (OTLP monotonic sum).
    Counter(f64),
    /// A classic histogram (from an OTLP histogram or exponential histogram).
    Histogram {
        /// Finite upper bounds, ascending.
        bounds: Vec<f64>,
        /// Cumulative counts per bound; one more than `bounds`, the last is `+Inf`.
        counts: Vec<u64>,
        /// Observations.
        count: u64,
        /// Sum of observations (0 when the source did not send it).
        sum: f64,
    },
    /// A summary.
    Summary {
        /// Observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// `(quantile, value)`, ascending by quantile.
        quantiles: Vec<(f64, f64)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyKind {
    Gauge,
    Counter,
    Histogram,
    Summary,
}

impl FamilyKind {
    fn expo(self) -> Kind {
        match self {
            FamilyKind::Gauge => Kind::Gauge,
            FamilyKind::Counter => Kind::Counter,
            FamilyKind::Histogram => Kind::Histogram,
            FamilyKind::Summary => Kind::Summary,
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            FamilyKind::Gauge => &[""],
            FamilyKind::Counter => &["_total"],
            FamilyKind::Histogram => &["_bucket", "_sum", "_count"],
            FamilyKind::Summary => &["", "_sum", "_count"],
        }
    }
}

struct Family {
    kind: FamilyKind,
    help: String,
    unit: String,
    /// By rendered labels.
    series: BTreeMap<Box<str>, Series>,
}

struct Series {
    labels: Box<[(Box<str>, Box<str>)]>,
    /// Start of the cumulative stream (first delta's start for delta streams).
    start_ns: u64,
    /// Time of the latest point.
    last_ns: u64,
    /// When the series was last updated (arrival time; point time during replay).
    seen_ns: u64,
    value: SeriesValue,
}

enum SeriesValue {
    Number {
        value: f64,
        exemplar: Option<Exemplar>,
    },
    Histogram(Hist),
    Summary {
        count: u64,
        sum: f64,
        quantiles: Vec<(f64, f64)>,
    },
}

/// A classic histogram with per-bucket (not cumulative) counts.
#[derive(Debug, Clone, PartialEq)]
struct Hist {
    bounds: Vec<f64>,
    /// One more than `bounds`; the last is the `+Inf` bucket.
    counts: Vec<u64>,
    count: u64,
    sum: Option<f64>,
    /// Empty, or one per bucket.
    exemplars: Vec<Option<Exemplar>>,
    /// Running exponential state of a delta exponential histogram.
    exp: Option<Box<ExpState>>,
}

impl Hist {
    fn cumulative_into(&self, out: &mut Vec<u64>) {
        out.clear();
        let mut run = 0u64;
        for c in &self.counts {
            run = run.saturating_add(*c);
            out.push(run);
        }
        if let Some(last) = out.last_mut() {
            *last = (*last).max(self.count);
        }
    }

    /// Exemplar of bucket `i`, or the nearest lower bucket's (as the specification asks
    /// of pull exporters).
    fn exemplar(&self, i: usize) -> Option<Exemplar> {
        let upto = i.min(self.exemplars.len().checked_sub(1)?);
        self.exemplars[..=upto].iter().rev().find_map(|e| *e)
    }

    /// Keep `new` exemplars (largest per bucket) over the old ones.
    fn set_exemplars(&mut self, old: Vec<Option<Exemplar>>, new: &[Exemplar]) {
        self.exemplars = if old.len() == self.counts.len() {
            old
        } else {
            Vec::new()
        };
        if new.is_empty() {
            return;
        }
        let mut fresh: Vec<Option<Exemplar>> = vec![None; self.counts.len()];
        for e in new {
            let i = self.bounds.partition_point(|b| *b < e.value);
            if let Some(slot) = fresh.get_mut(i) {
                if slot.is_none_or(|s| e.value > s.value) {
                    *slot = Some(*e);
                }
            }
        }
        if self.exemplars.is_empty() {
            self.exemplars = fresh;
        } else {
            for (slot, f) in self.exemplars.iter_mut().zip(fresh) {
                if f.is_some() {
                    *slot = f;
                }
            }
        }
    }
}

/// Dense exponential buckets: `counts[k]` is bucket `offset + k`.
#[derive(Debug, Clone, Default, PartialEq)]
struct ExpBuckets {
    offset: i64,
    counts: Vec<u64>,
}

impl ExpBuckets {
    fn from_proto(b: Option<&Buckets>) -> Self {
        let Some(b) = b else {
            return Self::default();
        };
        let mut s = Self {
            offset: i64::from(b.offset),
            counts: b.bucket_counts.clone(),
        };
        s.trim();
        s
    }

    fn trim(&mut self) {
        let lead = self.counts.iter().take_while(|c| **c == 0).count();
        if lead == self.counts.len() {
            self.counts.clear();
            self.offset = 0;
            return;
        }
        self.counts.drain(..lead);
        self.offset += lead as i64;
        while self.counts.last() == Some(&0) {
            self.counts.pop();
        }
    }

    fn len(&self) -> usize {
        self.counts.len()
    }

    fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// Merge to `scale - by`: bucket `i` becomes `i >> by` (floor).
    fn downscale(&mut self, by: u32) {
        if by == 0 || self.counts.is_empty() {
            return;
        }
        let by = by.min(62);
        let first = self.offset >> by;
        let last = (self.offset + self.counts.len() as i64 - 1) >> by;
        let mut out = vec![0u64; usize::try_from(last - first + 1).unwrap_or(0)];
        for (k, c) in self.counts.iter().enumerate() {
            let i = ((self.offset + k as i64) >> by) - first;
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                *slot = slot.saturating_add(*c);
            }
        }
        self.offset = first;
        self.counts = out;
    }

    /// Buckets a dense range covering both would have.
    fn union_span(&self, other: &ExpBuckets) -> u64 {
        let end = |b: &ExpBuckets| b.offset + b.counts.len() as i64;
        match (self.counts.is_empty(), other.counts.is_empty()) {
            (true, _) => other.counts.len() as u64,
            (_, true) => self.counts.len() as u64,
            _ => end(self)
                .max(end(other))
                .abs_diff(self.offset.min(other.offset)),
        }
    }

    fn add(&mut self, other: &ExpBuckets) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        let first = self.offset.min(other.offset);
        let end =
            (self.offset + self.counts.len() as i64).max(other.offset + other.counts.len() as i64);
        let mut out = vec![0u64; usize::try_from(end - first).unwrap_or(0)];
        for b in [&*self, other] {
            let start = usize::try_from(b.offset - first).unwrap_or(0);
            for (k, c) in b.counts.iter().enumerate() {
                if let Some(slot) = out.get_mut(start + k) {
                    *slot = slot.saturating_add(*c);
                }
            }
        }
        self.offset = first;
        self.counts = out;
    }
}

/// An exponential histogram point (or the running total of delta points).
#[derive(Debug, Clone, PartialEq)]
struct ExpState {
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    pos: ExpBuckets,
    neg: ExpBuckets,
    count: u64,
    sum: Option<f64>,
}

impl ExpState {
    fn from_point(p: &ExponentialHistogramDataPoint) -> Option<Self> {
        let valid = (MIN_SCALE..=MAX_SCALE).contains(&p.scale)
            && p.zero_threshold.is_finite()
            && p.zero_threshold >= 0.0;
        if !valid {
            return None;
        }
        let mut s = Self {
            scale: p.scale,
            zero_count: p.zero_count,
            zero_threshold: p.zero_threshold,
            pos: ExpBuckets::from_proto(p.positive.as_ref()),
            neg: ExpBuckets::from_proto(p.negative.as_ref()),
            count: p.count,
            sum: p.sum,
        };
        // Bound what a hostile point can make us hold.
        s.limit(MAX_EXP_BUCKETS);
        Some(s)
    }

    fn downscale(&mut self, by: u32) {
        if by == 0 {
            return;
        }
        self.pos.downscale(by);
        self.neg.downscale(by);
        self.scale -= by as i32;
    }

    fn zero_slot(&self) -> usize {
        usize::from(self.zero_count > 0 || !self.neg.counts.is_empty())
    }

    /// Downscale until at most `max` buckets (or the smallest scale).
    fn limit(&mut self, max: usize) {
        while self.pos.len() + self.neg.len() + self.zero_slot() > max && self.scale > MIN_SCALE {
            self.downscale(1);
        }
    }

    fn merge(&mut self, other: &ExpState) {
        let mut other = other.clone();
        let scale = self.scale.min(other.scale);
        self.downscale(self.scale.abs_diff(scale));
        other.downscale(other.scale.abs_diff(scale));
        // Coarsen until the union fits, so that far-apart offsets cannot make us allocate
        // a huge dense range; at the smallest scale, the running state restarts.
        while self.pos.union_span(&other.pos) + self.neg.union_span(&other.neg)
            > MAX_EXP_BUCKETS as u64
        {
            if self.scale <= MIN_SCALE {
                *self = other;
                return;
            }
            self.downscale(1);
            other.downscale(1);
        }
        self.pos.add(&other.pos);
        self.neg.add(&other.neg);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.zero_threshold = self.zero_threshold.max(other.zero_threshold);
        self.count = self.count.saturating_add(other.count);
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.limit(MAX_EXP_BUCKETS);
    }

    /// `base^i` where `base = 2^(2^-scale)`.
    fn power(scale: i32, i: i64) -> f64 {
        let i = i as f64;
        if scale >= 0 {
            (i / f64::from(1u32 << scale.min(30))).exp2()
        } else {
            (i * f64::from(1u32 << (-scale).min(30))).exp2()
        }
    }

    /// Classic buckets, see [`MAX_CLASSIC_BUCKETS`].
    fn to_classic(&self) -> Hist {
        let mut e = self.clone();
        e.limit(MAX_CLASSIC_BUCKETS);
        let mut bounds: Vec<f64> = Vec::with_capacity(MAX_CLASSIC_BUCKETS);
        let mut counts: Vec<u64> = Vec::with_capacity(MAX_CLASSIC_BUCKETS + 1);
        let mut pending = 0u64;
        let mut push = |bound: f64, c: u64| {
            pending = pending.saturating_add(c);
            if bound.is_finite() && bounds.last().is_none_or(|l| bound > *l) {
                bounds.push(bound);
                counts.push(pending);
                pending = 0;
            }
        };
        for (k, c) in e.neg.counts.iter().enumerate().rev() {
            push(-Self::power(e.scale, e.neg.offset + k as i64), *c);
        }
        if e.zero_slot() == 1 {
            push(e.zero_threshold, e.zero_count);
        }
        for (k, c) in e.pos.counts.iter().enumerate() {
            push(Self::power(e.scale, e.pos.offset + k as i64 + 1), *c);
        }
        counts.push(pending);
        let total = e
            .pos
            .total()
            .saturating_add(e.neg.total())
            .saturating_add(e.zero_count);
        let count = e.count.max(total);
        if let Some(last) = counts.last_mut() {
            *last = last.saturating_add(count - total);
        }
        Hist {
            bounds,
            counts,
            count,
            sum: e.sum,
            exemplars: Vec::new(),
            exp: None,
        }
    }
}

struct TargetEntry {
    /// Rendered `target_info` labels.
    rendered: Box<str>,
    seen_ns: u64,
}

/// Series of the OTLP metrics received, in Prometheus form. See the module docs.
pub struct MetricStore {
    cfg: StoreConfig,
    families: BTreeMap<String, Family>,
    /// Every family name and sample name → its family key, to refuse collisions.
    names: HashMap<String, String>,
    /// `target_info` per rendered `instance`/`job`.
    targets: BTreeMap<Box<str>, TargetEntry>,
    series: usize,
    /// Series per `job`.
    per_job: HashMap<Box<str>, usize>,
}

/// One series of its `job` fewer.
fn forget_job(per_job: &mut HashMap<Box<str>, usize>, s: &Series) {
    let job = s
        .labels
        .iter()
        .find(|(k, _)| &**k == "job")
        .map_or("", |(_, v)| &**v);
    if let Some(n) = per_job.get_mut(job) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_job.remove(job);
        }
    }
}

/// How a point's series is found or made.
struct PointCtx<'a> {
    target: &'a Target,
    scope_name: &'a str,
    scope_version: &'a str,
    now_ns: u64,
    replay: bool,
}

impl PointCtx<'_> {
    /// Labels of a point, sorted; `extra` is the reserved `le`/`quantile` label.
    fn labels(
        &self,
        attrs: &[lookout_proto::otlp::common::v1::KeyValue],
        extra: &str,
    ) -> Vec<(String, String)> {
        let mut reserved = vec!["job", "instance", "otel_scope_name", "otel_scope_version"];
        if !extra.is_empty() {
            reserved.push(extra);
        }
        let mut l = convert::attribute_labels(attrs, &reserved);
        l.push(("job".into(), self.target.job.clone()));
        l.push(("instance".into(), self.target.instance.clone()));
        if !self.scope_name.is_empty() {
            l.push(("otel_scope_name".into(), self.scope_name.into()));
        }
        if !self.scope_version.is_empty() {
            l.push(("otel_scope_version".into(), self.scope_version.into()));
        }
        l.sort_by(|a, b| a.0.cmp(&b.0));
        l
    }

    /// When a point updates its series, for staleness: now, or during replay the point's
    /// own time (so replayed old points stay stale).
    fn seen(&self, time_ns: u64) -> u64 {
        if self.replay && time_ns != 0 {
            time_ns.min(self.now_ns)
        } else {
            self.now_ns
        }
    }

    fn time(&self, time_ns: u64) -> u64 {
        if time_ns == 0 {
            self.now_ns
        } else {
            time_ns
        }
    }
}

fn exemplar_of(e: &lookout_proto::otlp::metrics::v1::Exemplar) -> Option<Exemplar> {
    let trace_id: [u8; 16] = e.trace_id.as_slice().try_into().ok()?;
    if trace_id == [0; 16] {
        return None;
    }
    let span_id = <[u8; 8]>::try_from(e.span_id.as_slice())
        .ok()
        .filter(|s| *s != [0; 8]);
    let value = match e.value? {
        exemplar::Value::AsDouble(d) => d,
        exemplar::Value::AsInt(i) => i as f64,
    };
    Some(Exemplar {
        trace_id,
        span_id,
        value,
        timestamp_ns: (e.time_unix_nano != 0).then_some(e.time_unix_nano),
    })
}

fn exemplars_of(list: &[lookout_proto::otlp::metrics::v1::Exemplar]) -> Vec<Exemplar> {
    list.iter().filter_map(exemplar_of).collect()
}

fn latest_exemplar(list: &[lookout_proto::otlp::metrics::v1::Exemplar]) -> Option<Exemplar> {
    list.iter()
        .filter_map(exemplar_of)
        .max_by_key(|e| e.timestamp_ns.unwrap_or(0))
}

const NO_RECORDED_VALUE: u32 = 1;

/// Most explicit bounds accepted in a histogram point (each is a line per scrape).
const MAX_EXPLICIT_BOUNDS: usize = 1024;

fn hist_from_point(p: &HistogramDataPoint) -> Option<Hist> {
    let ok_bounds = p.explicit_bounds.len() <= MAX_EXPLICIT_BOUNDS
        && p.explicit_bounds.iter().all(|b| b.is_finite())
        && p.explicit_bounds.windows(2).all(|w| w[0] < w[1]);
    if !ok_bounds {
        return None;
    }
    let (bounds, counts) = if p.bucket_counts.is_empty() {
        (Vec::new(), vec![p.count])
    } else if p.bucket_counts.len() == p.explicit_bounds.len() + 1 {
        (p.explicit_bounds.clone(), p.bucket_counts.clone())
    } else {
        return None;
    };
    let total = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
    Some(Hist {
        bounds,
        counts,
        count: p.count.max(total),
        sum: p.sum,
        exemplars: Vec::new(),
        exp: None,
    })
}

/// The per-type part of applying one point to its (possibly new) series.
enum Update {
    /// Replace a gauge value.
    Gauge(f64),
    /// Cumulative counter value.
    CounterCumulative(f64, Option<Exemplar>),
    /// Delta counter increment.
    CounterDelta(f64, Option<Exemplar>),
    /// Cumulative (replace) or delta (add) histogram.
    Hist {
        hist: Hist,
        delta: bool,
        exemplars: Vec<Exemplar>,
    },
    /// Delta exponential histogram, to add in exponential form.
    ExpDelta(Box<ExpState>, Vec<Exemplar>),
    Summary(u64, f64, Vec<(f64, f64)>),
}

impl Update {
    fn is_delta(&self) -> bool {
        matches!(
            self,
            Update::CounterDelta(..) | Update::Hist { delta: true, .. } | Update::ExpDelta(..)
        )
    }

    fn into_new_value(self) -> SeriesValue {
        match self {
            Update::Gauge(v) => SeriesValue::Number {
                value: v,
                exemplar: None,
            },
            Update::CounterCumulative(v, e) | Update::CounterDelta(v, e) => SeriesValue::Number {
                value: v,
                exemplar: e,
            },
            Update::Hist {
                mut hist,
                exemplars,
                ..
            } => {
                hist.set_exemplars(Vec::new(), &exemplars);
                SeriesValue::Histogram(hist)
            }
            Update::ExpDelta(state, exemplars) => {
                let mut hist = state.to_classic();
                hist.exp = Some(state);
                hist.set_exemplars(Vec::new(), &exemplars);
                SeriesValue::Histogram(hist)
            }
            Update::Summary(count, sum, quantiles) => SeriesValue::Summary {
                count,
                sum,
                quantiles,
            },
        }
    }

    /// Apply to an existing value.
    fn apply_to(self, value: &mut SeriesValue) {
        match (self, value) {
            (Update::Gauge(v), SeriesValue::Number { value, .. }) => *value = v,
            (Update::CounterCumulative(v, e), SeriesValue::Number { value, exemplar }) => {
                *value = v;
                if e.is_some() {
                    *exemplar = e;
                }
            }
            (Update::CounterDelta(v, e), SeriesValue::Number { value, exemplar }) => {
                *value += v;
                if e.is_some() {
                    *exemplar = e;
                }
            }
            (
                Update::Hist {
                    hist,
                    delta,
                    exemplars,
                },
                SeriesValue::Histogram(old),
            ) => {
                let same = old.bounds == hist.bounds && old.exp.is_none();
                let old_ex = if same {
                    std::mem::take(&mut old.exemplars)
                } else {
                    Vec::new()
                };
                if delta && same {
                    for (a, b) in old.counts.iter_mut().zip(&hist.counts) {
                        *a = a.saturating_add(*b);
                    }
                    old.count = old.count.saturating_add(hist.count);
                    old.sum = match (old.sum, hist.sum) {
                        (Some(a), Some(b)) => Some(a + b),
                        _ => None,
                    };
                } else {
                    *old = hist;
                }
                old.set_exemplars(old_ex, &exemplars);
            }
            (Update::ExpDelta(state, exemplars), SeriesValue::Histogram(old)) => {
                let merged = match old.exp.take() {
                    Some(mut running) => {
                        running.merge(&state);
                        running
                    }
                    None => state,
                };
                let mut hist = merged.to_classic();
                hist.exp = Some(merged);
                let old_ex = if hist.bounds == old.bounds {
                    std::mem::take(&mut old.exemplars)
                } else {
                    Vec::new()
                };
                hist.set_exemplars(old_ex, &exemplars);
                *old = hist;
            }
            (
                Update::Summary(c, s, q),
                SeriesValue::Summary {
                    count,
                    sum,
                    quantiles,
                },
            ) => {
                *count = c;
                *sum = s;
                *quantiles = q;
            }
            // The family kind fixes the value kind; anything else replaces it.
            (u, value) => *value = u.into_new_value(),
        }
    }
}

impl MetricStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        let mut names = HashMap::new();
        for n in ["target", "target_info"] {
            names.insert(n.to_string(), TARGET_KEY.to_string());
        }
        Self {
            cfg,
            families: BTreeMap::new(),
            names,
            targets: BTreeMap::new(),
            series: 0,
            per_job: HashMap::new(),
        }
    }

    /// Series held (fresh or not yet expired).
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Apply an export request received at `now_ns` (Unix nanoseconds).
    pub fn apply(&mut self, req: &ExportMetricsServiceRequest, now_ns: u64) -> ApplyReport {
        self.apply_inner(req, now_ns, false)
    }

    /// Apply a request replayed from the WAL at start-up: like [`MetricStore::apply`], but
    /// series are as fresh as their points' own times, so that a replayed old point does
    /// not bring back a stale series.
    pub fn replay(&mut self, req: &ExportMetricsServiceRequest, now_ns: u64) -> ApplyReport {
        self.apply_inner(req, now_ns, true)
    }

    fn apply_inner(
        &mut self,
        req: &ExportMetricsServiceRequest,
        now_ns: u64,
        replay: bool,
    ) -> ApplyReport {
        let mut rep = ApplyReport::default();
        for rm in &req.resource_metrics {
            let resource = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            let target = convert::target(resource);
            let mut seen: Option<u64> = None;
            for sm in &rm.scope_metrics {
                let (scope_name, scope_version) = sm
                    .scope
                    .as_ref()
                    .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
                let ctx = PointCtx {
                    target: &target,
                    scope_name,
                    scope_version,
                    now_ns,
                    replay,
                };
                for m in &sm.metrics {
                    if let Some(t) = self.apply_metric(&ctx, m, &mut rep) {
                        seen = Some(seen.map_or(t, |s: u64| s.max(t)));
                    }
                }
            }
            if let Some(seen_ns) = seen {
                let key = render_labels(&[
                    ("instance", target.instance.as_str()),
                    ("job", target.job.as_str()),
                ]);
                let mut all: Vec<(&str, &str)> = target
                    .info
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                all.push(("instance", &target.instance));
                all.push(("job", &target.job));
                all.sort_by(|a, b| a.0.cmp(b.0));
                let rendered = render_labels(&all).into_boxed_str();
                match self.targets.get_mut(key.as_str()) {
                    Some(t) => {
                        if t.rendered != rendered {
                            t.rendered = rendered;
                        }
                        t.seen_ns = t.seen_ns.max(seen_ns);
                    }
                    None => {
                        self.targets
                            .insert(key.into_boxed_str(), TargetEntry { rendered, seen_ns });
                    }
                }
            }
        }
        rep
    }

    /// Register `family` of `kind` in the name table; `false` if a name is taken by
    /// another family.
    fn claim_names(&mut self, family: &str, kind: FamilyKind) -> bool {
        let mut wanted = vec![family.to_string()];
        wanted.extend(kind.suffixes().iter().map(|s| format!("{family}{s}")));
        if wanted
            .iter()
            .any(|n| self.names.get(n).is_some_and(|owner| owner != family))
        {
            return false;
        }
        for n in wanted {
            self.names.insert(n, family.to_string());
        }
        true
    }

    fn release_names(&mut self, family: &str, kind: FamilyKind) {
        let names = std::iter::once(String::new())
            .chain(kind.suffixes().iter().map(|s| s.to_string()))
            .map(|s| format!("{family}{s}"));
        for n in names {
            if self.names.get(&n).is_some_and(|owner| owner == family) {
                self.names.remove(&n);
            }
        }
    }

    /// Apply one metric; returns the latest `seen` time of its accepted points.
    fn apply_metric(
        &mut self,
        ctx: &PointCtx<'_>,
        m: &Metric,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let data = m.data.as_ref()?;
        let cumulative = AggregationTemporality::Cumulative as i32;
        let delta = AggregationTemporality::Delta as i32;
        let (ptype, kind, n) = match data {
            Data::Gauge(g) => (PointType::Gauge, FamilyKind::Gauge, g.data_points.len()),
            Data::Sum(s) => (
                PointType::Sum,
                if s.is_monotonic {
                    FamilyKind::Counter
                } else {
                    FamilyKind::Gauge
                },
                s.data_points.len(),
            ),
            Data::Histogram(h) => (
                PointType::Histogram,
                FamilyKind::Histogram,
                h.data_points.len(),
            ),
            Data::ExponentialHistogram(h) => (
                PointType::ExponentialHistogram,
                FamilyKind::Histogram,
                h.data_points.len(),
            ),
            Data::Summary(s) => (PointType::Summary, FamilyKind::Summary, s.data_points.len()),
        };
        rep.received[ptype as usize] += n as u64;
        if n == 0 {
            return None;
        }
        let temporality = match data {
            Data::Sum(s) => Some(s.aggregation_temporality),
            Data::Histogram(h) => Some(h.aggregation_temporality),
            Data::ExponentialHistogram(h) => Some(h.aggregation_temporality),
            Data::Gauge(_) | Data::Summary(_) => None,
        };
        if temporality.is_some_and(|t| t != cumulative && t != delta) {
            rep.drop(DropReason::Invalid, n);
            return None;
        }
        let is_delta = temporality == Some(delta);
        if let Data::Sum(s) = data {
            if !s.is_monotonic && is_delta {
                rep.drop(DropReason::DeltaNonMonotonic, n);
                return None;
            }
        }
        let prom_kind = match kind {
            FamilyKind::Gauge => PromKind::Gauge,
            FamilyKind::Counter => PromKind::Counter,
            FamilyKind::Histogram => PromKind::Histogram,
            FamilyKind::Summary => PromKind::Summary,
        };
        let Some(name) = convert::convert_name(&m.name, &m.unit, prom_kind) else {
            rep.drop(DropReason::Invalid, n);
            return None;
        };
        let mut fam = match self.families.remove(&name.family) {
            Some(f) if f.kind == kind => f,
            Some(f) => {
                let key = name.family.clone();
                self.families.insert(key, f);
                rep.drop(DropReason::NameConflict, n);
                return None;
            }
            None => {
                if !self.claim_names(&name.family, kind) {
                    rep.drop(DropReason::NameConflict, n);
                    return None;
                }
                Family {
                    kind,
                    help: String::new(),
                    unit: String::new(),
                    series: BTreeMap::new(),
                }
            }
        };
        if fam.help.is_empty() {
            fam.help = if m.description.is_empty() {
                format!("OTLP metric {}", m.name)
            } else {
                m.description.clone()
            };
        }
        if fam.unit.is_empty() && !name.unit.is_empty() {
            fam.unit = name.unit.clone();
        }
        let mut seen: Option<u64> = None;
        let mut note = |s: Option<u64>| {
            if let Some(s) = s {
                seen = Some(seen.map_or(s, |x: u64| x.max(s)));
            }
        };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    note(self.number_point(&mut fam, ctx, p, false, rep));
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    note(self.number_point(&mut fam, ctx, p, is_delta, rep));
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    note(self.histogram_point(&mut fam, ctx, p, is_delta, rep));
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    note(self.exp_point(&mut fam, ctx, p, is_delta, rep));
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    note(self.summary_point(&mut fam, ctx, p, rep));
                }
            }
        }
        if fam.series.is_empty() {
            self.release_names(&name.family, kind);
        } else {
            self.families.insert(name.family, fam);
        }
        seen
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        labels: Vec<(String, String)>,
        start_ns: u64,
        time_ns: u64,
        flags: u32,
        update: Update,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let key = render_labels(&labels);
        if flags & NO_RECORDED_VALUE != 0 {
            if let Some(gone) = fam.series.remove(key.as_str()) {
                self.series -= 1;
                forget_job(&mut self.per_job, &gone);
            }
            return None;
        }
        let time = ctx.time(time_ns);
        let seen = ctx.seen(time_ns);
        match fam.series.get_mut(key.as_str()) {
            Some(s) => {
                let ordered = if update.is_delta() {
                    time > s.last_ns && (start_ns == 0 || start_ns >= s.last_ns)
                } else {
                    time >= s.last_ns || start_ns > s.start_ns
                };
                if !ordered {
                    rep.drop(DropReason::OutOfOrder, 1);
                    return None;
                }
                if !update.is_delta() && start_ns != 0 {
                    s.start_ns = start_ns;
                }
                s.last_ns = time;
                s.seen_ns = s.seen_ns.max(seen);
                update.apply_to(&mut s.value);
            }
            None => {
                if self.series >= self.cfg.max_series {
                    rep.drop(DropReason::MaxSeries, 1);
                    return None;
                }
                let job = ctx.target.job.as_str();
                let of_job = self.per_job.get(job).copied().unwrap_or(0);
                if of_job >= self.cfg.max_series_per_service {
                    rep.drop(DropReason::MaxSeriesPerService, 1);
                    return None;
                }
                self.per_job.insert(job.into(), of_job + 1);
                self.series += 1;
                let labels: Box<[(Box<str>, Box<str>)]> = labels
                    .into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                    .collect();
                fam.series.insert(
                    key.into_boxed_str(),
                    Series {
                        labels,
                        start_ns: if start_ns == 0 { time } else { start_ns },
                        last_ns: time,
                        seen_ns: seen,
                        value: update.into_new_value(),
                    },
                );
            }
        }
        Some(seen)
    }

    fn number_point(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        p: &NumberDataPoint,
        delta: bool,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            None => None,
        };
        let value = match value {
            Some(v) => v,
            None if p.flags & NO_RECORDED_VALUE != 0 => f64::NAN,
            None => {
                rep.drop(DropReason::Invalid, 1);
                return None;
            }
        };
        let update = match fam.kind {
            FamilyKind::Counter => {
                let e = latest_exemplar(&p.exemplars);
                if delta {
                    if !(value >= 0.0 && value.is_finite()) && p.flags & NO_RECORDED_VALUE == 0 {
                        rep.drop(DropReason::Invalid, 1);
                        return None;
                    }
                    Update::CounterDelta(value, e)
                } else {
                    Update::CounterCumulative(value, e)
                }
            }
            _ => Update::Gauge(value),
        };
        let labels = ctx.labels(&p.attributes, "");
        self.upsert(
            fam,
            ctx,
            labels,
            p.start_time_unix_nano,
            p.time_unix_nano,
            p.flags,
            update,
            rep,
        )
    }

    fn histogram_point(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        p: &HistogramDataPoint,
        delta: bool,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let hist = match hist_from_point(p) {
            Some(h) => h,
            None if p.flags & NO_RECORDED_VALUE != 0 => Hist {
                bounds: Vec::new(),
                counts: vec![0],
                count: 0,
                sum: None,
                exemplars: Vec::new(),
                exp: None,
            },
            None => {
                rep.drop(DropReason::Invalid, 1);
                return None;
            }
        };
        let labels = ctx.labels(&p.attributes, "le");
        let update = Update::Hist {
            hist,
            delta,
            exemplars: exemplars_of(&p.exemplars),
        };
        self.upsert(
            fam,
            ctx,
            labels,
            p.start_time_unix_nano,
            p.time_unix_nano,
            p.flags,
            update,
            rep,
        )
    }

    fn exp_point(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        p: &ExponentialHistogramDataPoint,
        delta: bool,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let labels = ctx.labels(&p.attributes, "le");
        let state = match ExpState::from_point(p) {
            Some(s) => s,
            None if p.flags & NO_RECORDED_VALUE != 0 => {
                return self.upsert(fam, ctx, labels, 0, 0, p.flags, Update::Gauge(0.0), rep);
            }
            None => {
                rep.drop(DropReason::Invalid, 1);
                return None;
            }
        };
        let exemplars = exemplars_of(&p.exemplars);
        let update = if delta {
            Update::ExpDelta(Box::new(state), exemplars)
        } else {
            Update::Hist {
                hist: state.to_classic(),
                delta: false,
                exemplars,
            }
        };
        self.upsert(
            fam,
            ctx,
            labels,
            p.start_time_unix_nano,
            p.time_unix_nano,
            p.flags,
            update,
            rep,
        )
    }

    fn summary_point(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        p: &SummaryDataPoint,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let mut q: Vec<(f64, f64)> = p
            .quantile_values
            .iter()
            .map(|v| (v.quantile, v.value))
            .collect();
        if q.iter().any(|(q, _)| !(0.0..=1.0).contains(q)) {
            rep.drop(DropReason::Invalid, 1);
            return None;
        }
        q.sort_by(|a, b| a.0.total_cmp(&b.0));
        q.dedup_by(|a, b| a.0 == b.0);
        let labels = ctx.labels(&p.attributes, "quantile");
        self.upsert(
            fam,
            ctx,
            labels,
            p.start_time_unix_nano,
            p.time_unix_nano,
            p.flags,
            Update::Summary(p.count, p.sum, q),
            rep,
        )
    }

    /// Remove series (and `target_info` entries) not updated for `stale_after`; returns
    /// how many series were removed.
    pub fn expire(&mut self, now_ns: u64) -> u64 {
        let stale = u64::try_from(self.cfg.stale_after.as_nanos()).unwrap_or(u64::MAX);
        let mut removed = 0u64;
        let mut empty: Vec<String> = Vec::new();
        let per_job = &mut self.per_job;
        for (name, fam) in self.families.iter_mut() {
            let before = fam.series.len();
            fam.series.retain(|_, s| {
                let keep = now_ns.saturating_sub(s.seen_ns) <= stale;
                if !keep {
                    forget_job(per_job, s);
                }
                keep
            });
            removed += (before - fam.series.len()) as u64;
            if fam.series.is_empty() {
                empty.push(name.clone());
            }
        }
        for name in empty {
            if let Some(f) = self.families.remove(&name) {
                self.release_names(&name, f.kind);
            }
        }
        self.targets
            .retain(|_, t| now_ns.saturating_sub(t.seen_ns) <= stale);
        self.series = self
            .series
            .saturating_sub(usize::try_from(removed).unwrap_or(usize::MAX));
        removed
    }

    /// Write every fresh series (and `target_info`) to `w`.
    pub fn render(&self, w: &mut Writer, now_ns: u64) {
        let stale = u64::try_from(self.cfg.stale_after.as_nanos()).unwrap_or(u64::MAX);
        let fresh = |seen: u64| now_ns.saturating_sub(seen) <= stale;
        if self.targets.values().any(|t| fresh(t.seen_ns))
            && w.family("target", Kind::Info, "Target metadata", "")
        {
            for t in self.targets.values().filter(|t| fresh(t.seen_ns)) {
                w.info(&t.rendered);
            }
        }
        let mut cumulative: Vec<u64> = Vec::with_capacity(64);
        for (name, fam) in &self.families {
            if !w.family(name, fam.kind.expo(), &fam.help, &fam.unit) {
                continue;
            }
            for (labels, s) in fam.series.iter().filter(|(_, s)| fresh(s.seen_ns)) {
                match &s.value {
                    SeriesValue::Number { value, exemplar } => match fam.kind {
                        FamilyKind::Counter => w.counter(labels, *value, exemplar.as_ref()),
                        _ => w.gauge(labels, *value),
                    },
                    SeriesValue::Histogram(h) => {
                        h.cumulative_into(&mut cumulative);
                        w.histogram(labels, &h.bounds, &cumulative, h.sum, &|i| h.exemplar(i));
                    }
                    SeriesValue::Summary {
                        count,
                        sum,
                        quantiles,
                    } => {
                        for (q, v) in quantiles {
                            w.quantile(labels, *q, *v);
                        }
                        w.sum(labels, *sum);
                        w.count(labels, *count);
                    }
                }
            }
        }
    }

    /// Series of the family exposed as `name` (for counters with or without `_total`),
    /// for metric-based alert rules. Series not yet removed by [`MetricStore::expire`]
    /// are included.
    pub fn series(&self, name: &str) -> Vec<SeriesSnapshot> {
        let fam = self.families.get(name).or_else(|| {
            name.strip_suffix("_total")
                .and_then(|base| self.families.get(base))
                .filter(|f| f.kind == FamilyKind::Counter)
        });
        let Some(fam) = fam else {
            return Vec::new();
        };
        fam.series
            .values()
            .map(|s| SeriesSnapshot {
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                value: match &s.value {
                    SeriesValue::Number { value, .. } => match fam.kind {
                        FamilyKind::Counter => SnapshotValue::Counter(*value),
                        _ => SnapshotValue::Gauge(*value),
                    },
                    SeriesValue::Histogram(h) => {
                        let mut counts = Vec::new();
                        h.cumulative_into(&mut counts);
                        SnapshotValue::Histogram {
                            bounds: h.bounds.clone(),
                            count: counts.last().copied().unwrap_or(0),
                            counts,
                            sum: h.sum.unwrap_or(0.0),
                        }
                    }
                    SeriesValue::Summary {
                        count,
                        sum,
                        quantiles,
                    } => SnapshotValue::Summary {
                        count: *count,
                        sum: *sum,
                        quantiles: quantiles.clone(),
                    },
                },
            })
            .collect()
    }

    /// Exposed family names (counters with `_total`), sorted.
    pub fn names(&self) -> Vec<String> {
        self.families
            .iter()
            .map(|(n, f)| match f.kind {
                FamilyKind::Counter => format!("{n}_total"),
                _ => n.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use lookout_proto::otlp::metrics::v1::exponential_histogram_data_point::Buckets;
    use lookout_proto::otlp::metrics::v1::summary_data_point::ValueAtQuantile;
    use lookout_proto::otlp::metrics::v1::{
        self as m, ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum,
        Summary,
    };
    use lookout_proto::otlp::resource::v1::Resource;

    use super::*;
    use crate::prom::testing::{promtool_check_metrics, promtool_check_openmetrics};
    use crate::prom::Format;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;
    const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
    const DELTA: i32 = AggregationTemporality::Delta as i32;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        request_from("checkout", "pod-1", metrics)
    }

    fn request_from(
        service: &str,
        instance: &str,
        metrics: Vec<Metric>,
    ) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", service),
                        kv("service.namespace", "shop"),
                        kv("service.instance.id", instance),
                        kv("host.name", "node-a"),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn metric(name: &str, unit: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            description: format!("{name} help"),
            unit: unit.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn num(start: u64, time: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
        metric(
            name,
            "",
            Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: temporality,
                is_monotonic: monotonic,
            }),
        )
    }

    fn hist(
        start: u64,
        time: u64,
        bounds: &[f64],
        counts: &[u64],
        total: f64,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: counts.iter().sum(),
            sum: Some(total),
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        }
    }

    fn store() -> MetricStore {
        MetricStore::new(StoreConfig {
            stale_after: Duration::from_secs(300),
            max_series: 1000,
            max_series_per_service: 1000,
        })
    }

    fn render(s: &MetricStore, format: Format, now: u64) -> String {
        let mut w = Writer::new(format);
        s.render(&mut w, now);
        w.finish()
    }

    fn value(s: &MetricStore, name: &str) -> f64 {
        match s.series(name).first().map(|x| &x.value) {
            Some(SnapshotValue::Counter(v) | SnapshotValue::Gauge(v)) => *v,
            other => panic!("{name}: {other:?}"),
        }
    }

    const LABELS: &str =
        r#"instance="pod-1",job="shop/checkout",otel_scope_name="lib",otel_scope_version="1.2""#;

    #[test]
    fn converts_names_labels_and_target_info() {
        let mut s = store();
        let rep = s.apply(
            &request(vec![
                metric(
                    "process.memory.usage",
                    "By",
                    Data::Gauge(Gauge {
                        data_points: vec![num(0, T0, 1024.0, vec![kv("pool.name", "heap")])],
                    }),
                ),
                sum(
                    "http.requests",
                    CUMULATIVE,
                    true,
                    vec![num(T0 - S, T0, 7.0, vec![kv("http.route", "/pay\"x\"")])],
                ),
                sum(
                    "queue.depth",
                    CUMULATIVE,
                    false,
                    vec![num(T0 - S, T0, -3.0, vec![])],
                ),
            ]),
            T0,
        );
        assert_eq!(rep.received(PointType::Gauge), 1);
        assert_eq!(rep.received(PointType::Sum), 2);
        assert_eq!(rep.dropped_total(), 0);
        assert_eq!(s.series_count(), 3);
        let text = render(&s, Format::Text, T0);
        let want = format!(
            "# HELP target_info Target metadata\n\
             # TYPE target_info gauge\n\
             target_info{{host_name=\"node-a\",instance=\"pod-1\",job=\"shop/checkout\"}} 1\n\
             # HELP http_requests_total http.requests help\n\
             # TYPE http_requests_total counter\n\
             http_requests_total{{http_route=\"/pay\\\"x\\\"\",{LABELS}}} 7\n\
             # HELP process_memory_usage_bytes process.memory.usage help\n\
             # TYPE process_memory_usage_bytes gauge\n\
             process_memory_usage_bytes{{{LABELS},pool_name=\"heap\"}} 1024\n\
             # HELP queue_depth queue.depth help\n\
             # TYPE queue_depth gauge\n\
             queue_depth{{{LABELS}}} -3\n"
        );
        assert_eq!(text, want);
        promtool_check_metrics(&text, true);
        let om = render(&s, Format::OpenMetrics, T0);
        assert!(om.contains("# TYPE target info\n"), "{om}");
        assert!(om.contains("# TYPE process_memory_usage_bytes gauge\n# UNIT process_memory_usage_bytes bytes\n"), "{om}");
        assert!(om.contains("# TYPE http_requests counter\n"), "{om}");
        promtool_check_openmetrics(&om);
        // The read API, with or without `_total`.
        let snap = s.series("http_requests_total");
        assert_eq!(snap, s.series("http_requests"));
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].value, SnapshotValue::Counter(7.0));
        assert!(snap[0]
            .labels
            .contains(&("job".into(), "shop/checkout".into())));
        assert!(snap[0]
            .labels
            .contains(&("instance".into(), "pod-1".into())));
        assert!(s.series("queue_depth_total").is_empty());
        assert_eq!(
            s.names(),
            [
                "http_requests_total",
                "process_memory_usage_bytes",
                "queue_depth"
            ]
        );
    }

    #[test]
    fn delta_sums_accumulate() {
        let mut s = store();
        let d = |start: u64, time: u64, v: f64| {
            request(vec![sum(
                "jobs",
                DELTA,
                true,
                vec![num(start, time, v, vec![])],
            )])
        };
        s.apply(&d(T0, T0 + S, 2.0), T0 + S);
        s.apply(&d(T0 + S, T0 + 2 * S, 3.0), T0 + 2 * S);
        assert_eq!(value(&s, "jobs_total"), 5.0);
        // A repeat (an SDK retry) and an overlapping delta are dropped.
        let rep = s.apply(&d(T0 + S, T0 + 2 * S, 3.0), T0 + 2 * S);
        assert_eq!(rep.dropped(DropReason::OutOfOrder), 1);
        let rep = s.apply(&d(T0 + S, T0 + 3 * S, 3.0), T0 + 3 * S);
        assert_eq!(rep.dropped(DropReason::OutOfOrder), 1);
        // A gap is fine.
        s.apply(&d(T0 + 10 * S, T0 + 11 * S, 1.0), T0 + 11 * S);
        assert_eq!(value(&s, "jobs_total"), 6.0);
        // Negative deltas of a counter are invalid.
        let rep = s.apply(&d(T0 + 11 * S, T0 + 12 * S, -1.0), T0 + 12 * S);
        assert_eq!(rep.dropped(DropReason::Invalid), 1);
        // Non-monotonic deltas are dropped whole.
        let rep = s.apply(
            &request(vec![sum(
                "updown",
                DELTA,
                false,
                vec![num(T0, T0 + S, 1.0, vec![])],
            )]),
            T0 + S,
        );
        assert_eq!(rep.dropped(DropReason::DeltaNonMonotonic), 1);
        assert!(s.series("updown").is_empty());
    }

    #[test]
    fn cumulative_resets_and_order() {
        let mut s = store();
        let c = |start: u64, time: u64, v: f64| {
            request(vec![sum(
                "hits",
                CUMULATIVE,
                true,
                vec![num(start, time, v, vec![])],
            )])
        };
        s.apply(&c(T0, T0 + S, 10.0), T0 + S);
        s.apply(&c(T0, T0 + 2 * S, 12.0), T0 + 2 * S);
        assert_eq!(value(&s, "hits_total"), 12.0);
        // An older point is dropped.
        let rep = s.apply(&c(T0, T0 + S, 10.0), T0 + 2 * S);
        assert_eq!(rep.dropped(DropReason::OutOfOrder), 1);
        // The process restarted: new start time, lower value. Exposed as is (a reset).
        s.apply(&c(T0 + 5 * S, T0 + 6 * S, 1.0), T0 + 6 * S);
        assert_eq!(value(&s, "hits_total"), 1.0);
        // A drop without a new start time is a reset too.
        s.apply(&c(T0 + 5 * S, T0 + 7 * S, 0.0), T0 + 7 * S);
        assert_eq!(value(&s, "hits_total"), 0.0);
        // "No recorded value" removes the series.
        let mut p = num(T0 + 5 * S, T0 + 8 * S, 0.0, vec![]);
        p.flags = 1;
        p.value = None;
        s.apply(
            &request(vec![sum("hits", CUMULATIVE, true, vec![p])]),
            T0 + 8 * S,
        );
        assert_eq!(s.series_count(), 0);
        assert!(s.series("hits_total").is_empty());
    }

    #[test]
    fn histograms_delta_cumulative_and_bounds_change() {
        let mut s = store();
        let h = |t: i32, p: HistogramDataPoint| {
            request(vec![metric(
                "rpc.duration",
                "ms",
                Data::Histogram(Histogram {
                    data_points: vec![p],
                    aggregation_temporality: t,
                }),
            )])
        };
        s.apply(
            &h(DELTA, hist(T0, T0 + S, &[10.0, 100.0], &[1, 2, 0], 60.0)),
            T0 + S,
        );
        s.apply(
            &h(
                DELTA,
                hist(T0 + S, T0 + 2 * S, &[10.0, 100.0], &[3, 0, 1], 520.0),
            ),
            T0 + 2 * S,
        );
        let snap = s.series("rpc_duration_milliseconds");
        assert_eq!(
            snap[0].value,
            SnapshotValue::Histogram {
                bounds: vec![10.0, 100.0],
                counts: vec![4, 6, 7],
                count: 7,
                sum: 580.0
            }
        );
        let text = render(&s, Format::Text, T0 + 2 * S);
        assert!(
            text.contains(&format!(
                "rpc_duration_milliseconds_bucket{{{LABELS},le=\"100\"}} 6\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "rpc_duration_milliseconds_bucket{{{LABELS},le=\"+Inf\"}} 7\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("rpc_duration_milliseconds_sum{{{LABELS}}} 580\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("rpc_duration_milliseconds_count{{{LABELS}}} 7\n")),
            "{text}"
        );
        promtool_check_metrics(&text, false);
        // New bounds: the series restarts from this point.
        s.apply(
            &h(DELTA, hist(T0 + 2 * S, T0 + 3 * S, &[50.0], &[1, 1], 70.0)),
            T0 + 3 * S,
        );
        let SnapshotValue::Histogram { bounds, counts, .. } =
            &s.series("rpc_duration_milliseconds")[0].value
        else {
            panic!()
        };
        assert_eq!(
            (bounds.as_slice(), counts.as_slice()),
            (&[50.0][..], &[1, 2][..])
        );
        // Cumulative points replace; a layout mismatch is invalid.
        let mut s = store();
        s.apply(
            &h(CUMULATIVE, hist(T0, T0 + S, &[1.0], &[1, 1], 3.0)),
            T0 + S,
        );
        s.apply(
            &h(CUMULATIVE, hist(T0, T0 + 2 * S, &[1.0], &[2, 1], 4.0)),
            T0 + 2 * S,
        );
        let SnapshotValue::Histogram { counts, .. } =
            &s.series("rpc_duration_milliseconds")[0].value
        else {
            panic!()
        };
        assert_eq!(counts, &[2, 3]);
        let rep = s.apply(
            &h(CUMULATIVE, hist(T0, T0 + 3 * S, &[1.0, 2.0], &[2, 1], 4.0)),
            T0 + 3 * S,
        );
        assert_eq!(rep.dropped(DropReason::Invalid), 1);
        let rep = s.apply(
            &h(
                CUMULATIVE,
                hist(T0, T0 + 3 * S, &[2.0, 1.0], &[2, 1, 0], 4.0),
            ),
            T0 + 3 * S,
        );
        assert_eq!(rep.dropped(DropReason::Invalid), 1);
    }

    fn exp_point(
        start: u64,
        time: u64,
        scale: i32,
        zero: u64,
        pos: (i32, Vec<u64>),
        neg: (i32, Vec<u64>),
    ) -> ExponentialHistogramDataPoint {
        let count = zero + pos.1.iter().sum::<u64>() + neg.1.iter().sum::<u64>();
        ExponentialHistogramDataPoint {
            start_time_unix_nano: start,
            time_unix_nano: time,
            count,
            sum: Some(1.0),
            scale,
            zero_count: zero,
            positive: Some(Buckets {
                offset: pos.0,
                bucket_counts: pos.1,
            }),
            negative: Some(Buckets {
                offset: neg.0,
                bucket_counts: neg.1,
            }),
            ..Default::default()
        }
    }

    fn exp_request(t: i32, p: ExponentialHistogramDataPoint) -> ExportMetricsServiceRequest {
        request(vec![metric(
            "latency",
            "s",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![p],
                aggregation_temporality: t,
            }),
        )])
    }

    fn exp_snapshot(s: &MetricStore) -> (Vec<f64>, Vec<u64>, u64) {
        match &s.series("latency_seconds")[0].value {
            SnapshotValue::Histogram {
                bounds,
                counts,
                count,
                ..
            } => (bounds.clone(), counts.clone(), *count),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exponential_histograms_become_classic() {
        // Scale 0: base 2; positive bucket i holds (2^i, 2^(i+1)]; negative bucket i holds
        // [-2^(i+1), -2^i).
        let mut s = store();
        s.apply(
            &exp_request(
                CUMULATIVE,
                exp_point(T0, T0 + S, 0, 2, (0, vec![1, 0, 3]), (1, vec![4])),
            ),
            T0 + S,
        );
        let (bounds, counts, count) = exp_snapshot(&s);
        assert_eq!(bounds, [-2.0, 0.0, 2.0, 4.0, 8.0]);
        assert_eq!(counts, [4, 6, 7, 7, 10, 10]);
        assert_eq!(count, 10);
        // 100 buckets at scale 3 are downscaled to at most 40.
        let mut s = store();
        s.apply(
            &exp_request(
                CUMULATIVE,
                exp_point(T0, T0 + S, 3, 0, (-50, vec![1; 100]), (0, vec![])),
            ),
            T0 + S,
        );
        let (bounds, counts, count) = exp_snapshot(&s);
        assert!(bounds.len() <= MAX_CLASSIC_BUCKETS, "{}", bounds.len());
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(count, 100);
        assert_eq!(counts.last(), Some(&100));
        // Buckets -50..49 at scale 3 → -13..12 at scale 1 (26 buckets, base √2): the first
        // upper bound is √2^-12 = 2^-6, the last √2^13.
        assert_eq!(bounds.len(), 26);
        assert_eq!(bounds[0], 0.015625);
        assert!((bounds[25] - 2f64.powf(6.5)).abs() < 1e-9, "{bounds:?}");
        let text = render(&s, Format::Text, T0 + S);
        promtool_check_metrics(&text, true);
    }

    #[test]
    fn exponential_deltas_merge_across_scales() {
        let mut s = store();
        // 4 values in (1, 2] at scale 1 (buckets 0 and 1), then 2 values in (2, 4] at scale 0.
        s.apply(
            &exp_request(
                DELTA,
                exp_point(T0, T0 + S, 1, 0, (0, vec![1, 3]), (0, vec![])),
            ),
            T0 + S,
        );
        s.apply(
            &exp_request(
                DELTA,
                exp_point(T0 + S, T0 + 2 * S, 0, 1, (1, vec![2]), (0, vec![])),
            ),
            T0 + 2 * S,
        );
        let (bounds, counts, count) = exp_snapshot(&s);
        assert_eq!(bounds, [0.0, 2.0, 4.0]);
        assert_eq!(counts, [1, 5, 7, 7]);
        assert_eq!(count, 7);
    }

    #[test]
    fn exponential_deltas_far_apart_stay_bounded() {
        let mut s = store();
        let far = |start: u64, offset: i32| {
            exp_request(
                DELTA,
                exp_point(start, start + S, -10, 0, (offset, vec![1]), (0, vec![])),
            )
        };
        s.apply(&far(T0, -2_000_000_000), T0 + S);
        s.apply(&far(T0 + S, 2_000_000_000), T0 + 2 * S);
        let (bounds, _, count) = exp_snapshot(&s);
        assert!(bounds.len() <= MAX_CLASSIC_BUCKETS);
        // The running state restarted with the second point.
        assert_eq!(count, 1);
    }

    #[test]
    fn summaries() {
        let mut s = store();
        let p = SummaryDataPoint {
            start_time_unix_nano: T0,
            time_unix_nano: T0 + S,
            count: 10,
            sum: 4.5,
            quantile_values: vec![
                ValueAtQuantile {
                    quantile: 0.99,
                    value: 0.9,
                },
                ValueAtQuantile {
                    quantile: 0.5,
                    value: 0.4,
                },
            ],
            ..Default::default()
        };
        s.apply(
            &request(vec![metric(
                "gc.pause",
                "s",
                Data::Summary(Summary {
                    data_points: vec![p],
                }),
            )]),
            T0 + S,
        );
        let text = render(&s, Format::Text, T0 + S);
        assert!(text.contains(&format!("gc_pause_seconds{{{LABELS},quantile=\"0.5\"}} 0.4\ngc_pause_seconds{{{LABELS},quantile=\"0.99\"}} 0.9\ngc_pause_seconds_sum{{{LABELS}}} 4.5\ngc_pause_seconds_count{{{LABELS}}} 10\n")), "{text}");
        promtool_check_metrics(&text, true);
        promtool_check_openmetrics(&render(&s, Format::OpenMetrics, T0 + S));
        assert_eq!(
            s.series("gc_pause_seconds")[0].value,
            SnapshotValue::Summary {
                count: 10,
                sum: 4.5,
                quantiles: vec![(0.5, 0.4), (0.99, 0.9)]
            }
        );
    }

    #[test]
    fn staleness_and_replay() {
        let mut s = store();
        let g = |time: u64, v: f64| {
            request(vec![metric(
                "temp",
                "Cel",
                Data::Gauge(Gauge {
                    data_points: vec![num(0, time, v, vec![])],
                }),
            )])
        };
        s.apply(&g(T0, 20.0), T0);
        assert!(render(&s, Format::Text, T0 + 300 * S).contains("temp_celsius{"));
        // Past stale_after: no longer exposed, then removed.
        let later = T0 + 301 * S;
        let text = render(&s, Format::Text, later);
        assert!(!text.contains("temp_celsius{"), "{text}");
        assert!(!text.contains("target_info{"), "{text}");
        assert_eq!(s.expire(later), 1);
        assert_eq!(s.series_count(), 0);
        assert!(s.series("temp_celsius").is_empty());
        // Names are free again: the same name may now be a counter.
        s.apply(
            &request(vec![sum(
                "temp_celsius",
                CUMULATIVE,
                true,
                vec![num(T0, later, 1.0, vec![])],
            )]),
            later,
        );
        assert_eq!(value(&s, "temp_celsius_total"), 1.0);
        // Replayed points are as fresh as their own time.
        let mut s = store();
        s.replay(&g(T0, 20.0), T0 + 400 * S);
        s.replay(&g(T0 + 390 * S, 21.0), T0 + 400 * S);
        assert_eq!(value(&s, "temp_celsius"), 21.0);
        assert!(render(&s, Format::Text, T0 + 400 * S).contains("temp_celsius{"));
        let mut s = store();
        s.replay(&g(T0, 20.0), T0 + 400 * S);
        assert!(!render(&s, Format::Text, T0 + 400 * S).contains("temp_celsius{"));
        assert_eq!(s.expire(T0 + 400 * S), 1);
    }

    #[test]
    fn one_service_cannot_take_every_series() {
        let mut s = MetricStore::new(StoreConfig {
            stale_after: Duration::from_secs(60),
            max_series: 10,
            max_series_per_service: 2,
        });
        let gauge = |n: usize, t: u64| {
            metric(
                "g",
                "",
                Data::Gauge(Gauge {
                    data_points: (0..n)
                        .map(|i| num(0, t, 1.0, vec![kv("i", &i.to_string())]))
                        .collect(),
                }),
            )
        };
        let rep = s.apply(&request_from("noisy", "p", vec![gauge(3, T0)]), T0);
        assert_eq!(rep.dropped(DropReason::MaxSeriesPerService), 1);
        let rep = s.apply(&request_from("calm", "p", vec![gauge(2, T0)]), T0);
        assert_eq!(rep.dropped(DropReason::MaxSeriesPerService), 0);
        assert_eq!(s.series_count(), 4);
        // Expired series give their service's slots back.
        let later = T0 + 120 * 1_000_000_000;
        assert_eq!(s.expire(later), 4);
        let rep = s.apply(&request_from("noisy", "p", vec![gauge(2, later)]), later);
        assert_eq!(rep.dropped(DropReason::MaxSeriesPerService), 0);
        assert_eq!(s.series_count(), 2);
    }

    #[test]
    fn caps_and_conflicts() {
        let mut s = MetricStore::new(StoreConfig {
            stale_after: Duration::from_secs(60),
            max_series: 2,
            max_series_per_service: 100,
        });
        let points = (0..3)
            .map(|i| num(0, T0, 1.0, vec![kv("i", &i.to_string())]))
            .collect();
        let rep = s.apply(
            &request(vec![metric(
                "g",
                "",
                Data::Gauge(Gauge {
                    data_points: points,
                }),
            )]),
            T0,
        );
        assert_eq!(rep.dropped(DropReason::MaxSeries), 1);
        assert_eq!(s.series_count(), 2);
        let mut s = store();
        s.apply(
            &request(vec![metric(
                "x",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(0, T0, 1.0, vec![])],
                }),
            )]),
            T0,
        );
        // A counter `x` (family `x`), a histogram whose `_count` would be `x_count`'s
        // neighbour, and `target_info` itself are refused.
        let rep = s.apply(
            &request(vec![
                sum("x", CUMULATIVE, true, vec![num(T0, T0, 1.0, vec![])]),
                metric(
                    "target_info",
                    "",
                    Data::Gauge(Gauge {
                        data_points: vec![num(0, T0, 1.0, vec![])],
                    }),
                ),
                metric(
                    "...",
                    "",
                    Data::Gauge(Gauge {
                        data_points: vec![num(0, T0, 1.0, vec![])],
                    }),
                ),
            ]),
            T0,
        );
        assert_eq!(rep.dropped(DropReason::NameConflict), 2);
        assert_eq!(rep.dropped(DropReason::Invalid), 1);
        s.apply(
            &request(vec![metric(
                "y",
                "",
                Data::Histogram(Histogram {
                    data_points: vec![hist(T0, T0, &[1.0], &[1, 0], 1.0)],
                    aggregation_temporality: CUMULATIVE,
                }),
            )]),
            T0,
        );
        let rep = s.apply(
            &request(vec![metric(
                "y.count",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(0, T0, 1.0, vec![])],
                }),
            )]),
            T0,
        );
        assert_eq!(rep.dropped(DropReason::NameConflict), 1);
    }

    #[test]
    fn openmetrics_exemplars() {
        let trace = [9u8; 16];
        let ex = |v: f64| m::Exemplar {
            trace_id: trace.to_vec(),
            span_id: vec![3; 8],
            time_unix_nano: T0,
            value: Some(m::exemplar::Value::AsDouble(v)),
            ..Default::default()
        };
        let mut c = num(T0 - S, T0, 5.0, vec![]);
        c.exemplars = vec![ex(1.0)];
        let mut h = hist(T0 - S, T0, &[0.1, 1.0, 10.0], &[1, 2, 0, 0], 2.0);
        h.exemplars = vec![ex(0.05), ex(0.5), ex(0.7)];
        let mut s = store();
        s.apply(
            &request(vec![
                sum("orders", CUMULATIVE, true, vec![c]),
                metric(
                    "wait",
                    "s",
                    Data::Histogram(Histogram {
                        data_points: vec![h],
                        aggregation_temporality: CUMULATIVE,
                    }),
                ),
            ]),
            T0,
        );
        let om = render(&s, Format::OpenMetrics, T0);
        let id = "09".repeat(16);
        let sp = "03".repeat(8);
        let tail = |v: &str| {
            format!(" # {{trace_id=\"{id}\",span_id=\"{sp}\"}} {v} 1700000000.000000000\n")
        };
        assert!(
            om.contains(&format!("orders_total{{{LABELS}}} 5{}", tail("1"))),
            "{om}"
        );
        assert!(
            om.contains(&format!(
                "wait_seconds_bucket{{{LABELS},le=\"0.1\"}} 1{}",
                tail("0.05")
            )),
            "{om}"
        );
        // The largest exemplar of the bucket; empty buckets repeat the one below.
        assert!(
            om.contains(&format!(
                "wait_seconds_bucket{{{LABELS},le=\"1\"}} 3{}",
                tail("0.7")
            )),
            "{om}"
        );
        assert!(
            om.contains(&format!(
                "wait_seconds_bucket{{{LABELS},le=\"10\"}} 3{}",
                tail("0.7")
            )),
            "{om}"
        );
        assert!(
            om.contains(&format!(
                "wait_seconds_bucket{{{LABELS},le=\"+Inf\"}} 3{}",
                tail("0.7")
            )),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
        promtool_check_openmetrics(&om);
        let text = render(&s, Format::Text, T0);
        assert!(!text.contains("trace_id"));
        promtool_check_metrics(&text, true);
    }
}
