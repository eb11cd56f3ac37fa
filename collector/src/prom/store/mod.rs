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
//!
//! Files: [`series`] (identity and labels), [`value`] (update rules), [`histogram`] and
//! [`exponential`] (bucket arithmetic), [`report`] (counts and self-metrics), [`render`]
//! (the exposition), [`snapshot`] (the read API); limits, expiry and replay are here.

mod exponential;
mod histogram;
mod render;
mod report;
mod series;
mod snapshot;
#[cfg(test)]
mod testing;
mod value;

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::metrics::v1::metric::Data;
use lookout_proto::otlp::metrics::v1::{AggregationTemporality, Gauge, Metric, Sum};

pub use exponential::MAX_CLASSIC_BUCKETS;
pub use report::{ApplyReport, DropReason, PointType, StoreMetrics};
pub use snapshot::{SeriesSnapshot, SeriesValue};

use super::convert::{self, PromKind};
use super::expo::{render_labels, Exposition};
use series::{DataPoint, Family, Names, PerJob, PointCtx, Series, Targets};
use value::{PointUpdate, Update};

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

/// Series of the OTLP metrics received, in Prometheus form. See the module docs.
pub struct MetricStore {
    cfg: StoreConfig,
    families: BTreeMap<String, Family>,
    names: Names,
    targets: Targets,
    series: usize,
    per_job: PerJob,
}

impl MetricStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            families: BTreeMap::new(),
            names: Names::new(),
            targets: Targets::default(),
            series: 0,
            per_job: PerJob::default(),
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
                    seen = seen.max(self.apply_metric(&ctx, m, &mut rep));
                }
            }
            if let Some(seen_ns) = seen {
                self.targets.note(&target, seen_ns);
            }
        }
        rep
    }

    /// Apply one metric; returns the latest `seen` time of its accepted points.
    fn apply_metric(
        &mut self,
        ctx: &PointCtx<'_>,
        m: &Metric,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let data = m.data.as_ref()?;
        let (point_type, kind, n) = classify(data);
        rep.receive(point_type, n);
        if n == 0 {
            return None;
        }
        let accepted = delta_points(data).and_then(|delta| {
            let name = convert::convert_name(&m.name, &m.unit, kind).ok_or(DropReason::Invalid)?;
            let fam = self.take_family(&name.family, kind)?;
            Ok((delta, name, fam))
        });
        let (delta, name, mut fam) = match accepted {
            Ok(a) => a,
            Err(reason) => {
                rep.drop(reason, n);
                return None;
            }
        };
        fam.describe(m, &name.unit);
        let seen = self.apply_points(&mut fam, ctx, data, delta, rep);
        if fam.series.is_empty() {
            self.names.release(&name.family, kind);
        } else {
            self.families.insert(name.family, fam);
        }
        seen
    }

    /// The family `name` of `kind`, taken out of the store (a new one when it has no
    /// series); refused when the name belongs to a family of another kind.
    fn take_family(&mut self, name: &str, kind: PromKind) -> Result<Family, DropReason> {
        if self.families.get(name).is_some_and(|f| f.kind != kind) {
            return Err(DropReason::NameConflict);
        }
        match self.families.remove(name) {
            Some(f) => Ok(f),
            None if self.names.claim(name, kind) => Ok(Family::new(kind)),
            None => Err(DropReason::NameConflict),
        }
    }

    /// Apply the points of `data` to `fam`; returns the latest `seen` time of those
    /// accepted.
    fn apply_points(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        data: &Data,
        delta: bool,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let counter = fam.kind == PromKind::Counter;
        match data {
            Data::Gauge(Gauge { data_points }) | Data::Sum(Sum { data_points, .. }) => {
                self.points(fam, ctx, data_points, rep, |p| {
                    Update::number(p, counter, delta)
                })
            }
            Data::Histogram(h) => self.points(fam, ctx, &h.data_points, rep, |p| {
                Update::histogram(p, delta)
            }),
            Data::ExponentialHistogram(h) => self.points(fam, ctx, &h.data_points, rep, |p| {
                Update::exponential(p, delta)
            }),
            Data::Summary(s) => self.points(fam, ctx, &s.data_points, rep, Update::summary),
        }
    }

    fn points<P: DataPoint>(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        points: &[P],
        rep: &mut ApplyReport,
        update: impl Fn(&P) -> PointUpdate,
    ) -> Option<u64> {
        let mut seen = None;
        for p in points {
            let applied = match update(p) {
                Ok(u) => self.upsert(fam, ctx, p, u, rep),
                Err(reason) => {
                    rep.drop(reason, 1);
                    None
                }
            };
            seen = seen.max(applied);
        }
        seen
    }

    /// Apply one point to its series, made if new (within the limits), removed when the
    /// point has no recorded value; returns its `seen` time when accepted.
    fn upsert<P: DataPoint>(
        &mut self,
        fam: &mut Family,
        ctx: &PointCtx<'_>,
        p: &P,
        update: Option<Update>,
        rep: &mut ApplyReport,
    ) -> Option<u64> {
        let labels = ctx.labels(p.attributes(), P::RESERVED_LABEL);
        let key = render_labels(&labels);
        let Some(update) = update else {
            if let Some(gone) = fam.series.remove(key.as_str()) {
                self.series -= 1;
                self.per_job.forget(&gone);
            }
            return None;
        };
        let time = ctx.time(p.time_ns());
        let seen = ctx.seen(p.time_ns());
        let start_ns = p.start_ns();
        match fam.series.get_mut(key.as_str()) {
            Some(s) => {
                if !s.update(start_ns, time, seen, update) {
                    rep.drop(DropReason::OutOfOrder, 1);
                    return None;
                }
            }
            None => {
                if let Err(reason) = self.admit(&ctx.target.job) {
                    rep.drop(reason, 1);
                    return None;
                }
                let series = Series::new(labels, start_ns, time, seen, update);
                fam.series.insert(key.into_boxed_str(), series);
            }
        }
        Some(seen)
    }

    /// Count a new series of `job`, unless `max_series` or `max_series_per_service`
    /// refuses it.
    fn admit(&mut self, job: &str) -> Result<(), DropReason> {
        if self.series >= self.cfg.max_series {
            return Err(DropReason::MaxSeries);
        }
        if self.per_job.get(job) >= self.cfg.max_series_per_service {
            return Err(DropReason::MaxSeriesPerService);
        }
        self.per_job.add(job);
        self.series += 1;
        Ok(())
    }

    fn stale_ns(&self) -> u64 {
        u64::try_from(self.cfg.stale_after.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Remove series (and `target_info` entries) not updated for `stale_after`; returns
    /// how many series were removed.
    pub fn expire(&mut self, now_ns: u64) -> u64 {
        let stale = self.stale_ns();
        let mut removed = 0usize;
        let mut empty: Vec<String> = Vec::new();
        for (name, fam) in self.families.iter_mut() {
            removed += fam.expire(now_ns, stale, &mut self.per_job);
            if fam.series.is_empty() {
                empty.push(name.clone());
            }
        }
        for name in empty {
            if let Some(f) = self.families.remove(&name) {
                self.names.release(&name, f.kind);
            }
        }
        self.targets.expire(now_ns, stale);
        self.series = self.series.saturating_sub(removed);
        removed as u64
    }

    /// Write every fresh series (and `target_info`) to `w`.
    pub fn render(&self, w: &mut Exposition, now_ns: u64) {
        let stale = self.stale_ns();
        let fresh = |seen: u64| now_ns.saturating_sub(seen) <= stale;
        self.targets.render(w, fresh);
        let mut cumulative: Vec<u64> = Vec::with_capacity(64);
        for (name, fam) in &self.families {
            fam.render(name, w, fresh, &mut cumulative);
        }
    }

    /// Series of the family exposed as `name` (for counters with or without `_total`),
    /// for metric-based alert rules. Series not yet removed by [`MetricStore::expire`]
    /// are included.
    pub fn series(&self, name: &str) -> Vec<SeriesSnapshot> {
        let fam = self.families.get(name).or_else(|| {
            name.strip_suffix("_total")
                .and_then(|base| self.families.get(base))
                .filter(|f| f.kind == PromKind::Counter)
        });
        fam.map(Family::snapshot).unwrap_or_default()
    }

    /// Exposed family names (counters with `_total`), sorted.
    pub fn names(&self) -> Vec<String> {
        self.families
            .iter()
            .map(|(n, f)| match f.kind {
                PromKind::Counter => format!("{n}_total"),
                _ => n.clone(),
            })
            .collect()
    }
}

/// Point type, family kind and number of points of a metric.
fn classify(data: &Data) -> (PointType, PromKind, usize) {
    match data {
        Data::Gauge(g) => (PointType::Gauge, PromKind::Gauge, g.data_points.len()),
        Data::Sum(s) => (
            PointType::Sum,
            if s.is_monotonic {
                PromKind::Counter
            } else {
                PromKind::Gauge
            },
            s.data_points.len(),
        ),
        Data::Histogram(h) => (
            PointType::Histogram,
            PromKind::Histogram,
            h.data_points.len(),
        ),
        Data::ExponentialHistogram(h) => (
            PointType::ExponentialHistogram,
            PromKind::Histogram,
            h.data_points.len(),
        ),
        Data::Summary(s) => (PointType::Summary, PromKind::Summary, s.data_points.len()),
    }
}

/// Whether the points of `data` are deltas; refused when the temporality is neither
/// cumulative nor delta, or for a non-monotonic delta sum.
fn delta_points(data: &Data) -> Result<bool, DropReason> {
    let temporality = match data {
        Data::Sum(s) => s.aggregation_temporality,
        Data::Histogram(h) => h.aggregation_temporality,
        Data::ExponentialHistogram(h) => h.aggregation_temporality,
        Data::Gauge(_) | Data::Summary(_) => return Ok(false),
    };
    let delta = match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Cumulative) => false,
        Ok(AggregationTemporality::Delta) => true,
        _ => return Err(DropReason::Invalid),
    };
    if let Data::Sum(s) = data {
        if !s.is_monotonic && delta {
            return Err(DropReason::DeltaNonMonotonic);
        }
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use lookout_proto::attr;
    use lookout_proto::otlp::metrics::v1::{Gauge, Histogram};

    use super::testing::*;
    use super::*;
    use crate::prom::Format;

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
                        .map(|i| num(0, t, 1.0, vec![attr::string("i", i.to_string())]))
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
            .map(|i| num(0, T0, 1.0, vec![attr::string("i", i.to_string())]))
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
}
