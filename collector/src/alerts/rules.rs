//! Values of rules: span-derived signals from the RED metrics, and OTLP metrics combined
//! by an aggregation over the evaluation window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use lookout_config::{Aggregation, AlertRule, AlertSignal};
use lookout_proto::api::{RedStats, ServicesResponse};

use super::model::Labels;
use crate::prom::{MetricStore, SeriesSnapshot, SeriesValue};
use crate::traces::red::Red;

/// Where metric rules read series from.
pub trait MetricSource: Send + Sync + 'static {
    /// The series of metric `name` (the exposed name; counters with or without `_total`).
    fn series(&self, name: &str) -> Vec<SeriesSnapshot>;
}

/// The OTLP metrics received by this collector.
pub struct StoreSource(pub std::sync::Arc<parking_lot::Mutex<MetricStore>>);

impl MetricSource for StoreSource {
    fn series(&self, name: &str) -> Vec<SeriesSnapshot> {
        self.0.lock().series(name)
    }
}

/// One value of a rule for one instance.
pub struct Sample {
    /// Instance labels besides `alertname` and `severity`.
    pub labels: Labels,
    /// The value; `None` when there is no data (never breaches).
    pub value: Option<f64>,
    /// Example trace ids (RED rules).
    pub trace_ids: Vec<String>,
}

/// Most example trace ids given with an instance.
const MAX_TRACE_IDS: usize = 5;

/// Per-evaluation cache of RED figures, shared by all rules asking the same question.
#[derive(Default)]
pub struct RedCache {
    stats: HashMap<(String, Option<String>, Duration), Option<RedStats>>,
    services: Option<Vec<String>>,
    /// Figures of every service and operation per window (error-rate examples).
    by_operation: HashMap<Duration, ServicesResponse>,
    /// Cluster mode: every member's figures merged, per window of the rules; read
    /// instead of this node's RED.
    merged: Option<HashMap<Duration, ServicesResponse>>,
}

/// The figures of `service` (or its operation `op`) in `res`.
fn stats_in(res: Option<&ServicesResponse>, service: &str, op: Option<&str>) -> Option<RedStats> {
    let svc = res?.services.iter().find(|s| s.service == service)?;
    match op {
        None => Some(svc.stats.clone()),
        Some(op) => {
            let op = crate::traces::red::normalise_operation(op);
            let o = svc.operations.iter().find(|o| o.operation == op.as_ref())?;
            Some(o.stats.clone())
        }
    }
}

impl RedCache {
    /// A cache over the cluster's merged figures.
    pub fn merged(merged: HashMap<Duration, ServicesResponse>) -> Self {
        Self {
            by_operation: merged.clone(),
            merged: Some(merged),
            ..Self::default()
        }
    }

    fn services(&mut self, red: &Red) -> &[String] {
        let merged = &self.merged;
        self.services.get_or_insert_with(|| {
            let mut names: Vec<String> = match merged {
                Some(m) => m
                    .values()
                    .flat_map(|r| r.services.iter().map(|s| s.service.clone()))
                    .collect(),
                None => red.service_names(),
            };
            names.sort();
            names.dedup();
            names.retain(|s| s != crate::traces::red::OVERFLOW);
            names
        })
    }

    fn stats(
        &mut self,
        red: &Red,
        now_s: u64,
        window: Duration,
        service: &str,
        op: Option<&str>,
    ) -> Option<&RedStats> {
        let merged = &self.merged;
        self.stats
            .entry((service.to_string(), op.map(str::to_string), window))
            .or_insert_with(|| match merged {
                Some(m) => stats_in(m.get(&window), service, op),
                None => red.stats(now_s, window, service, op),
            })
            .as_ref()
    }

    /// Example traces of an error-rate sample: failed traces only. RED's examples of a
    /// series are its newest failed traces and then its slowest ones, which may well have
    /// succeeded; so only the first example of a series with errors is sure to have
    /// failed. Taken from the rule's scope, then (for a whole service) from each of its
    /// operations with errors, most errors first.
    fn error_trace_ids(
        &mut self,
        red: &Red,
        now_s: u64,
        window: Duration,
        service: &str,
        op: Option<&str>,
    ) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        let mut add = |s: &RedStats| {
            if let Some(id) = s.exemplar_trace_ids.first().filter(|_| s.errors > 0) {
                if !ids.contains(id) && ids.len() < MAX_TRACE_IDS {
                    ids.push(id.clone());
                }
            }
        };
        if let Some(s) = self.stats(red, now_s, window, service, op) {
            add(s);
        }
        if op.is_none() {
            let all = self
                .by_operation
                .entry(window)
                .or_insert_with(|| red.services(now_s, window));
            if let Some(svc) = all.services.iter().find(|s| s.service == service) {
                let mut ops: Vec<&RedStats> = svc.operations.iter().map(|o| &o.stats).collect();
                ops.sort_by_key(|s| std::cmp::Reverse(s.errors));
                ops.into_iter().for_each(&mut add);
            }
        }
        ids
    }
}

/// Values of a span-signal rule: one sample per service (or the named one).
pub fn red_samples(
    rule: &AlertRule,
    signal: AlertSignal,
    red: &Red,
    cache: &mut RedCache,
    now_s: u64,
) -> Vec<Sample> {
    let services: Vec<String> = match &rule.service {
        Some(s) => vec![s.clone()],
        None => cache.services(red).to_vec(),
    };
    let window = rule.window.get();
    services
        .into_iter()
        .map(|service| {
            let op = rule.operation.as_deref();
            let stats = cache.stats(red, now_s, window, &service, op);
            let value = match (signal, stats) {
                (AlertSignal::RequestRate, s) => Some(s.map_or(0.0, |s| s.request_rate)),
                (AlertSignal::ErrorRate, s) => Some(s.map_or(0.0, |s| s.error_rate)),
                (_, None) => None,
                (_, Some(s)) if s.requests == 0 => None,
                (AlertSignal::LatencyP50, Some(s)) => Some(s.p50_ms),
                (AlertSignal::LatencyP90, Some(s)) => Some(s.p90_ms),
                (AlertSignal::LatencyP95, Some(s)) => Some(s.p95_ms),
                (AlertSignal::LatencyP99, Some(s)) => Some(s.p99_ms),
            };
            let trace_ids = match signal {
                // A breach of the error rate is explained by traces that failed.
                AlertSignal::ErrorRate => cache.error_trace_ids(red, now_s, window, &service, op),
                _ => stats
                    .map(|s| {
                        s.exemplar_trace_ids
                            .iter()
                            .take(MAX_TRACE_IDS)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let mut labels = Labels::new();
            labels.insert("service".into(), service);
            if let Some(op) = &rule.operation {
                labels.insert("operation".into(), op.clone());
            }
            Sample {
                labels,
                value,
                trace_ids,
            }
        })
        .collect()
}

/// Snapshots of a metric rule's series over its window, for rates and windowed quantiles.
#[derive(Default)]
pub struct MetricHistory {
    samples: VecDeque<(i64, BTreeMap<Labels, SeriesValue>)>,
}

/// Values of a metric rule: one sample per `job` (or the rule's service).
pub fn metric_samples(
    rule: &AlertRule,
    metric: &str,
    source: &dyn MetricSource,
    history: &mut MetricHistory,
    now_ms: i64,
) -> Vec<Sample> {
    let current: BTreeMap<Labels, SeriesValue> = source
        .series(metric)
        .into_iter()
        .map(|s| (s.labels.into_iter().collect::<Labels>(), s.value))
        .filter(|(labels, _)| {
            rule.matchers.iter().all(|(k, v)| labels.get(k) == Some(v))
                && rule
                    .service
                    .as_ref()
                    .is_none_or(|svc| labels.get("job") == Some(svc))
        })
        .collect();
    let window_ms = i64::try_from(rule.window.get().as_millis()).unwrap_or(i64::MAX);
    history.samples.push_back((now_ms, current));
    // Keep the newest sample at or before the window start as the baseline.
    while history.samples.len() > 2 && history.samples[1].0 <= now_ms - window_ms {
        history.samples.pop_front();
    }
    let Some(((_, current), older)) = history.samples.make_contiguous().split_last() else {
        return Vec::new();
    };
    let agg = rule.aggregation.unwrap_or(Aggregation::Avg);
    // Each series' baseline is its oldest sample in the window: a series that appeared
    // after the window's first sample still gets a rate from its own first sample on.
    let before = |l: &Labels| {
        older
            .iter()
            .find_map(|(t, b)| b.get(l).map(|v| (v, (now_ms - t) as f64 / 1000.0)))
    };

    let mut by_job: BTreeMap<String, Vec<(&Labels, &SeriesValue)>> = BTreeMap::new();
    for (labels, v) in current {
        let job = labels
            .get("job")
            .cloned()
            .unwrap_or_else(|| "unknown_service".into());
        by_job.entry(job).or_default().push((labels, v));
    }
    if let Some(svc) = &rule.service {
        by_job.entry(svc.clone()).or_default();
    }
    by_job
        .into_iter()
        .map(|(job, series)| {
            let value = aggregate(agg, &series, &before);
            let mut labels = Labels::new();
            labels.insert("service".into(), job);
            labels.insert("metric".into(), metric.to_string());
            Sample {
                labels,
                value,
                trace_ids: Vec::new(),
            }
        })
        .collect()
}

fn scalar(v: &SeriesValue) -> Option<f64> {
    match v {
        SeriesValue::Gauge(x) | SeriesValue::Counter(x) => Some(*x),
        SeriesValue::Histogram { count, sum, .. } | SeriesValue::Summary { count, sum, .. } => {
            (*count > 0).then(|| sum / *count as f64)
        }
    }
}

fn total(v: &SeriesValue) -> f64 {
    match v {
        SeriesValue::Gauge(x) | SeriesValue::Counter(x) => *x,
        SeriesValue::Histogram { count, .. } | SeriesValue::Summary { count, .. } => *count as f64,
    }
}

/// How a series' value at the window start is looked up: the value and its age in
/// seconds.
type Baseline<'a> = dyn Fn(&Labels) -> Option<(&'a SeriesValue, f64)> + 'a;

fn aggregate<'a>(
    agg: Aggregation,
    series: &[(&'a Labels, &'a SeriesValue)],
    before: &Baseline<'a>,
) -> Option<f64> {
    let latest = || series.iter().filter_map(|(_, v)| scalar(v));
    match agg {
        Aggregation::Count => Some(series.len() as f64),
        _ if series.is_empty() => None,
        Aggregation::Sum => Some(latest().sum()),
        Aggregation::Min => latest().reduce(f64::min),
        Aggregation::Max => latest().reduce(f64::max),
        Aggregation::Avg => {
            let v: Vec<f64> = latest().collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        }
        Aggregation::Increase => increase(series, before, false),
        Aggregation::Rate => increase(series, before, true),
        Aggregation::P50 => windowed_quantile(0.5, series, before),
        Aggregation::P90 => windowed_quantile(0.9, series, before),
        Aggregation::P95 => windowed_quantile(0.95, series, before),
        Aggregation::P99 => windowed_quantile(0.99, series, before),
    }
}

/// The increase of the series' totals over the window, summed (per second with
/// `per_second`); `None` when no series has an earlier sample.
fn increase<'a>(
    series: &[(&'a Labels, &'a SeriesValue)],
    before: &Baseline<'a>,
    per_second: bool,
) -> Option<f64> {
    let mut any = false;
    let sum: f64 = series
        .iter()
        .map(|(l, v)| {
            let now = total(v);
            // A series without an earlier sample counts from its next sample on (its
            // total may stem from long before the window), as Prometheus' increase()
            // needs two samples.
            let Some((b, secs)) = before(l) else {
                return 0.0;
            };
            let b = total(b);
            // A drop is a counter reset: everything since counts.
            let inc = if b <= now { now - b } else { now };
            if !per_second {
                any = true;
                inc
            } else if secs > 0.0 {
                any = true;
                inc / secs
            } else {
                0.0
            }
        })
        .sum();
    any.then_some(sum)
}

/// Quantile `q` of the histogram observations made in the window: bucket increases
/// summed over the series with the bounds of the first one.
fn windowed_quantile<'a>(
    q: f64,
    series: &[(&'a Labels, &'a SeriesValue)],
    before: &Baseline<'a>,
) -> Option<f64> {
    let mut merged: Option<(Vec<f64>, Vec<f64>)> = None;
    for (l, v) in series {
        let SeriesValue::Histogram { bounds, counts, .. } = v else {
            continue;
        };
        let base = match before(l).map(|(v, _)| v) {
            Some(SeriesValue::Histogram {
                bounds: b,
                counts: c,
                ..
            }) if b == bounds && c.iter().zip(counts).all(|(o, n)| o <= n) => Some(c),
            _ => None,
        };
        let inc: Vec<f64> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| (n - base.map_or(0, |b| b[i])) as f64)
            .collect();
        match &mut merged {
            None => merged = Some((bounds.clone(), inc)),
            Some((mb, mc)) if mb == bounds => {
                for (a, b) in mc.iter_mut().zip(inc) {
                    *a += b;
                }
            }
            Some(_) => {}
        }
    }
    let (mut bounds, counts) = merged?;
    bounds.push(f64::INFINITY);
    quantile(q, &bounds, &counts)
}

/// Prometheus' `histogram_quantile` over cumulative bucket counts: linear interpolation
/// within the bucket; the `+Inf` bucket answers the largest finite bound.
pub fn quantile(q: f64, bounds: &[f64], cumulative: &[f64]) -> Option<f64> {
    let total = *cumulative.last()?;
    if total <= 0.0 || bounds.len() != cumulative.len() {
        return None;
    }
    let rank = q * total;
    let i = cumulative.iter().position(|c| *c >= rank)?;
    if bounds[i].is_infinite() {
        return bounds.iter().rev().find(|b| b.is_finite()).copied();
    }
    let (lower, below) = if i == 0 {
        (0.0_f64.min(bounds[0]), 0.0)
    } else {
        (bounds[i - 1], cumulative[i - 1])
    };
    let in_bucket = cumulative[i] - below;
    if in_bucket <= 0.0 {
        return Some(bounds[i]);
    }
    Some(lower + (bounds[i] - lower) * (rank - below) / in_bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_like_prometheus() {
        let bounds = [0.1, 0.5, 1.0, f64::INFINITY];
        // 10 observations <= 0.1, 80 in (0.1, 0.5], 10 in (0.5, 1].
        let cum = [10.0, 90.0, 100.0, 100.0];
        assert!((quantile(0.5, &bounds, &cum).unwrap_or(0.0) - 0.3).abs() < 1e-9);
        assert!((quantile(0.95, &bounds, &cum).unwrap_or(0.0) - 0.75).abs() < 1e-9);
        assert_eq!(quantile(0.5, &bounds, &[0.0; 4]), None);
        assert_eq!(quantile(0.99, &bounds, &[0.0, 0.0, 0.0, 5.0]), Some(1.0));
    }

    struct Fixed(Vec<SeriesSnapshot>);
    impl MetricSource for Fixed {
        fn series(&self, _: &str) -> Vec<SeriesSnapshot> {
            self.0.clone()
        }
    }

    fn labels(job: &str, route: &str) -> Vec<(String, String)> {
        [("job", job), ("route", route)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn rule(text: &str) -> AlertRule {
        let cfg: lookout_config::CollectorConfig = lookout_config::parse(
            &format!("[[alerts]]\nname = \"R\"\nreceivers = [\"r\"]\n{text}\n[receivers.r]\nurl = \"http://x\"\n"),
            std::path::Path::new("t.toml"),
        )
        .expect("rule");
        cfg.alerts[0].clone()
    }

    #[test]
    fn counter_rate_per_job_with_matchers_and_reset() {
        let r = rule("metric = \"jobs_total\"\naggregation = \"rate\"\nthreshold = 1\nwindow = \"10s\"\nmatchers = { route = \"/a\" }");
        let mut h = MetricHistory::default();
        let at = |v1: f64, v2: f64| {
            Fixed(vec![
                SeriesSnapshot {
                    labels: labels("api", "/a"),
                    value: SeriesValue::Counter(v1),
                },
                SeriesSnapshot {
                    labels: labels("api", "/b"),
                    value: SeriesValue::Counter(v2),
                },
            ])
        };
        metric_samples(&r, "jobs_total", &at(100.0, 0.0), &mut h, 0);
        let s = metric_samples(&r, "jobs_total", &at(150.0, 1e6), &mut h, 10_000);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels["service"], "api");
        assert_eq!(s[0].value, Some(5.0));
        // Reset: 150 -> 20 counts as an increase of 20 over the next 10 s.
        let s = metric_samples(&r, "jobs_total", &at(20.0, 0.0), &mut h, 20_000);
        assert_eq!(s[0].value, Some(2.0));
    }

    #[test]
    fn error_rate_examples_are_failed_traces_only() {
        use crate::traces::red::RedConfig;
        use lookout_proto::otlp::trace::v1::span::SpanKind;
        use lookout_proto::otlp::trace::v1::status::StatusCode;
        use lookout_proto::otlp::trace::v1::{Span, Status};

        let now = 1_000_000u64;
        let mut red = Red::new(RedConfig::default()).started_at(now - 3_600);
        let span = |op: &str, trace: u8, dur_ms: u64, failed: bool| Span {
            trace_id: vec![trace; 16],
            span_id: vec![trace; 8],
            name: op.into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 1_000 + dur_ms * 1_000_000,
            status: failed.then(|| Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            }),
            ..Default::default()
        };
        // Two operations, each with a fast failed request and slower successful ones:
        // the slowest traces of the window succeeded.
        let failed = [0xe1u8, 0xe2];
        for (base, op, bad) in [(0x10u8, "GET /a", failed[0]), (0x20, "GET /b", failed[1])] {
            red.observe(now, "api", &span(op, bad, 5, true));
            for ok in 1..=9u8 {
                red.observe(now, "api", &span(op, base + ok, 100 * u64::from(ok), false));
            }
        }
        let hex = |b: u8| format!("{b:02x}").repeat(16);
        let failed: Vec<String> = failed.iter().map(|b| hex(*b)).collect();
        for text in [
            "signal = \"error_rate\"\nop = \">\"\nthreshold = 0.01\nservice = \"api\"",
            "signal = \"error_rate\"\nop = \">\"\nthreshold = 0.01",
        ] {
            let r = rule(text);
            let s = red_samples(
                &r,
                AlertSignal::ErrorRate,
                &red,
                &mut RedCache::default(),
                now,
            );
            let ids = &s[0].trace_ids;
            assert!(!ids.is_empty(), "{text}: examples are given");
            assert!(
                ids.iter().all(|id| failed.contains(id)),
                "{text}: only failed traces, got {ids:?}"
            );
            assert_eq!(ids.len(), 2, "{text}: one per failing operation: {ids:?}");
        }
        // One operation's rule: its failed trace.
        let r = rule("signal = \"error_rate\"\nop = \">\"\nthreshold = 0.01\nservice = \"api\"\noperation = \"GET /b\"");
        let s = red_samples(
            &r,
            AlertSignal::ErrorRate,
            &red,
            &mut RedCache::default(),
            now,
        );
        assert_eq!(s[0].trace_ids, [failed[1].clone()]);
        // No errors, no examples; latency rules still get the slowest traces.
        let mut quiet = Red::new(RedConfig::default()).started_at(now - 3_600);
        quiet.observe(now, "api", &span("GET /a", 0x51, 900, false));
        let r = rule("signal = \"error_rate\"\nop = \">\"\nthreshold = 0.01");
        let s = red_samples(
            &r,
            AlertSignal::ErrorRate,
            &quiet,
            &mut RedCache::default(),
            now,
        );
        assert!(s[0].trace_ids.is_empty(), "{:?}", s[0].trace_ids);
        let r = rule("signal = \"latency_p99\"\nop = \">\"\nthreshold = 1");
        let s = red_samples(
            &r,
            AlertSignal::LatencyP99,
            &quiet,
            &mut RedCache::default(),
            now,
        );
        assert_eq!(s[0].trace_ids, [hex(0x51)]);
    }

    #[test]
    fn histogram_quantile_over_window() {
        let r = rule("metric = \"d\"\naggregation = \"p99\"\nthreshold = 1");
        let mut h = MetricHistory::default();
        let hist = |c: [u64; 3]| {
            Fixed(vec![SeriesSnapshot {
                labels: labels("api", "/a"),
                value: SeriesValue::Histogram {
                    bounds: vec![0.1, 1.0],
                    counts: c.to_vec(),
                    count: c[2],
                    sum: 0.0,
                },
            }])
        };
        metric_samples(&r, "d", &hist([1000, 1000, 1000]), &mut h, 0);
        // In the window: 100 new observations, all in (0.1, 1].
        let s = metric_samples(&r, "d", &hist([1000, 1100, 1100]), &mut h, 5_000);
        let v = s[0].value.unwrap_or(0.0);
        assert!((v - 0.991).abs() < 1e-9, "{v}");
    }
}
