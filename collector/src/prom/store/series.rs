//! Series identity: families (one name, one kind) and their series by label set, the
//! labels of a point, the name table that keeps families from colliding, series counts
//! per `job`, and `target_info` per target.

use std::collections::{BTreeMap, HashMap};

use lookout_proto::otlp::common::v1::KeyValue;
use lookout_proto::otlp::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};

use super::value::{Update, ValueState};
use crate::prom::convert::{self, PromKind, Target};
use crate::prom::expo::{render_labels, Kind};

/// Family key of `target_info`, reserved in the name table (never a valid metric name).
const TARGET_KEY: &str = " target";

/// The series of one metric name.
pub(super) struct Family {
    pub(super) kind: PromKind,
    pub(super) help: String,
    pub(super) unit: String,
    /// By rendered labels.
    pub(super) series: BTreeMap<Box<str>, Series>,
}

impl Family {
    pub(super) fn new(kind: PromKind) -> Self {
        Self {
            kind,
            help: String::new(),
            unit: String::new(),
            series: BTreeMap::new(),
        }
    }

    /// Take help and unit from the first metric that has them.
    pub(super) fn describe(&mut self, m: &Metric, unit: &str) {
        if self.help.is_empty() {
            self.help = if m.description.is_empty() {
                format!("OTLP metric {}", m.name)
            } else {
                m.description.clone()
            };
        }
        if self.unit.is_empty() && !unit.is_empty() {
            self.unit = unit.to_string();
        }
    }

    /// Remove series last seen more than `stale_ns` before `now_ns`; returns how many.
    pub(super) fn expire(&mut self, now_ns: u64, stale_ns: u64, per_job: &mut PerJob) -> usize {
        let before = self.series.len();
        self.series.retain(|_, s| {
            let keep = now_ns.saturating_sub(s.seen_ns) <= stale_ns;
            if !keep {
                per_job.forget(s);
            }
            keep
        });
        before - self.series.len()
    }
}

/// One series: its labels, its times and its value.
pub(super) struct Series {
    pub(super) labels: Box<[(Box<str>, Box<str>)]>,
    /// Start of the cumulative stream (first delta's start for delta streams).
    start_ns: u64,
    /// Time of the latest point.
    last_ns: u64,
    /// When the series was last updated (arrival time; point time during replay).
    pub(super) seen_ns: u64,
    pub(super) value: ValueState,
}

impl Series {
    /// A series made by its first point.
    pub(super) fn new(
        labels: Vec<(String, String)>,
        start_ns: u64,
        time_ns: u64,
        seen_ns: u64,
        update: Update,
    ) -> Self {
        Self {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
            start_ns: if start_ns == 0 { time_ns } else { start_ns },
            last_ns: time_ns,
            seen_ns,
            value: update.into_new_value(),
        }
    }

    /// Apply a later point; `false` (and nothing changed) when it is out of order: older
    /// than the last point (cumulative points with a new start time are a reset and
    /// welcome), or for deltas, overlapping or repeating it.
    pub(super) fn update(
        &mut self,
        start_ns: u64,
        time_ns: u64,
        seen_ns: u64,
        update: Update,
    ) -> bool {
        let ordered = if update.is_delta() {
            time_ns > self.last_ns && (start_ns == 0 || start_ns >= self.last_ns)
        } else {
            time_ns >= self.last_ns || start_ns > self.start_ns
        };
        if !ordered {
            return false;
        }
        if !update.is_delta() && start_ns != 0 {
            self.start_ns = start_ns;
        }
        self.last_ns = time_ns;
        self.seen_ns = self.seen_ns.max(seen_ns);
        update.apply_to(&mut self.value);
        true
    }

    fn job(&self) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| &**k == "job")
            .map_or("", |(_, v)| &**v)
    }
}

/// Series per `job`, for `max_series_per_service`.
#[derive(Default)]
pub(super) struct PerJob(HashMap<Box<str>, usize>);

impl PerJob {
    pub(super) fn get(&self, job: &str) -> usize {
        self.0.get(job).copied().unwrap_or(0)
    }

    pub(super) fn add(&mut self, job: &str) {
        *self.0.entry(job.into()).or_insert(0) += 1;
    }

    /// One series of `s`'s `job` fewer.
    pub(super) fn forget(&mut self, s: &Series) {
        let job = s.job();
        if let Some(n) = self.0.get_mut(job) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(job);
            }
        }
    }
}

/// Every family name and sample name → its family key, to refuse collisions (a counter
/// `x` and a gauge `x_total`, a histogram `y` and a gauge `y_count`, `target_info`).
pub(super) struct Names(HashMap<String, String>);

impl Names {
    pub(super) fn new() -> Self {
        let mut names = HashMap::new();
        for n in ["target", "target_info"] {
            names.insert(n.to_string(), TARGET_KEY.to_string());
        }
        Self(names)
    }

    /// Register `family` of `kind`; `false` if one of its names is taken by another
    /// family.
    pub(super) fn claim(&mut self, family: &str, kind: PromKind) -> bool {
        let wanted: Vec<String> = sample_names(family, kind).collect();
        if wanted
            .iter()
            .any(|n| self.0.get(n).is_some_and(|owner| owner != family))
        {
            return false;
        }
        for n in wanted {
            self.0.insert(n, family.to_string());
        }
        true
    }

    /// Free the names of `family`.
    pub(super) fn release(&mut self, family: &str, kind: PromKind) {
        for n in sample_names(family, kind) {
            if self.0.get(&n).is_some_and(|owner| owner == family) {
                self.0.remove(&n);
            }
        }
    }
}

/// The family name and every sample name of a family.
fn sample_names(family: &str, kind: PromKind) -> impl Iterator<Item = String> + '_ {
    std::iter::once("")
        .chain(Kind::from(kind).suffixes().iter().copied())
        .map(move |s| format!("{family}{s}"))
}

/// `target_info` of one target.
pub(super) struct TargetEntry {
    /// Rendered `target_info` labels.
    pub(super) rendered: Box<str>,
    pub(super) seen_ns: u64,
}

/// `target_info` per rendered `instance`/`job`.
#[derive(Default)]
pub(super) struct Targets(pub(super) BTreeMap<Box<str>, TargetEntry>);

impl Targets {
    /// `target` had points seen at `seen_ns`: its `target_info` is the latest resource.
    pub(super) fn note(&mut self, target: &Target, seen_ns: u64) {
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
        match self.0.get_mut(key.as_str()) {
            Some(t) => {
                t.rendered = rendered;
                t.seen_ns = t.seen_ns.max(seen_ns);
            }
            None => {
                self.0
                    .insert(key.into_boxed_str(), TargetEntry { rendered, seen_ns });
            }
        }
    }

    /// Remove targets last seen more than `stale_ns` before `now_ns`.
    pub(super) fn expire(&mut self, now_ns: u64, stale_ns: u64) {
        self.0
            .retain(|_, t| now_ns.saturating_sub(t.seen_ns) <= stale_ns);
    }
}

/// Where a point comes from: how its series is found or made.
pub(super) struct PointCtx<'a> {
    pub(super) target: &'a Target,
    pub(super) scope_name: &'a str,
    pub(super) scope_version: &'a str,
    pub(super) now_ns: u64,
    pub(super) replay: bool,
}

impl PointCtx<'_> {
    /// Labels of a point, sorted; `extra` is the reserved `le`/`quantile` label.
    pub(super) fn labels(&self, attrs: &[KeyValue], extra: &str) -> Vec<(String, String)> {
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
    pub(super) fn seen(&self, time_ns: u64) -> u64 {
        if self.replay && time_ns != 0 {
            time_ns.min(self.now_ns)
        } else {
            self.now_ns
        }
    }

    /// A point's time; now when it has none.
    pub(super) fn time(&self, time_ns: u64) -> u64 {
        if time_ns == 0 {
            self.now_ns
        } else {
            time_ns
        }
    }
}

/// What the data points of every OTLP type have in common.
pub(super) trait DataPoint {
    /// The label the point's samples reserve (`le`, `quantile`), or empty.
    const RESERVED_LABEL: &'static str;
    /// Its attributes.
    fn attributes(&self) -> &[KeyValue];
    /// `start_time_unix_nano` (0 when unknown).
    fn start_ns(&self) -> u64;
    /// `time_unix_nano` (0 when unknown).
    fn time_ns(&self) -> u64;
}

macro_rules! data_point {
    ($point:ty, $reserved:literal) => {
        impl DataPoint for $point {
            const RESERVED_LABEL: &'static str = $reserved;
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
            fn start_ns(&self) -> u64 {
                self.start_time_unix_nano
            }
            fn time_ns(&self) -> u64 {
                self.time_unix_nano
            }
        }
    };
}

data_point!(NumberDataPoint, "");
data_point!(HistogramDataPoint, "le");
data_point!(ExponentialHistogramDataPoint, "le");
data_point!(SummaryDataPoint, "quantile");
