//! The value a series holds and the rules by which each kind of point updates it:
//! gauges are replaced; counters are replaced (cumulative) or added to (delta);
//! histograms are replaced (cumulative) or added bucket by bucket (delta, same bounds),
//! exponential deltas in exponential form; summaries are replaced.

use lookout_proto::otlp::metrics::v1::{
    exemplar, number_data_point, Exemplar as OtlpExemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
};

use super::exponential::ExpState;
use super::histogram::Hist;
use super::report::DropReason;
use crate::prom::expo::Exemplar;

/// The data point flag "no recorded value": the series is gone.
const NO_RECORDED_VALUE: u32 = 1;

/// The value of a series.
pub(super) enum ValueState {
    /// A gauge or a counter's total, with a counter's latest exemplar.
    Number {
        value: f64,
        exemplar: Option<Exemplar>,
    },
    /// A classic histogram; `exp` is the running exponential state of a delta
    /// exponential histogram.
    Histogram {
        hist: Hist,
        exp: Option<Box<ExpState>>,
    },
    /// The latest summary.
    Summary {
        count: u64,
        sum: f64,
        quantiles: Vec<(f64, f64)>,
    },
}

/// The per-type part of applying one point to its (possibly new) series.
pub(super) enum Update {
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
    /// Count, sum and `(quantile, value)` sorted by quantile.
    Summary(u64, f64, Vec<(f64, f64)>),
}

/// What a point does to its series: `None` when it carries the "no recorded value"
/// flag (the series goes away), or why it is dropped.
pub(super) type PointUpdate = Result<Option<Update>, DropReason>;

fn no_recorded_value(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

impl Update {
    /// A gauge, or a counter point (`counter`) of either temporality. A delta must be
    /// finite and not negative.
    pub(super) fn number(p: &NumberDataPoint, counter: bool, delta: bool) -> PointUpdate {
        if no_recorded_value(p.flags) {
            return Ok(None);
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return Err(DropReason::Invalid),
        };
        if !counter {
            return Ok(Some(Update::Gauge(value)));
        }
        let e = latest_exemplar(&p.exemplars);
        if !delta {
            return Ok(Some(Update::CounterCumulative(value, e)));
        }
        if !(value >= 0.0 && value.is_finite()) {
            return Err(DropReason::Invalid);
        }
        Ok(Some(Update::CounterDelta(value, e)))
    }

    /// A histogram point (see [`Hist::from_point`] for what is invalid).
    pub(super) fn histogram(p: &HistogramDataPoint, delta: bool) -> PointUpdate {
        if no_recorded_value(p.flags) {
            return Ok(None);
        }
        let hist = Hist::from_point(p).ok_or(DropReason::Invalid)?;
        Ok(Some(Update::Hist {
            hist,
            delta,
            exemplars: exemplars_of(&p.exemplars),
        }))
    }

    /// An exponential histogram point: a delta stays exponential until it is added, a
    /// cumulative point becomes classic buckets.
    pub(super) fn exponential(p: &ExponentialHistogramDataPoint, delta: bool) -> PointUpdate {
        if no_recorded_value(p.flags) {
            return Ok(None);
        }
        let state = ExpState::from_point(p).ok_or(DropReason::Invalid)?;
        let exemplars = exemplars_of(&p.exemplars);
        Ok(Some(if delta {
            Update::ExpDelta(Box::new(state), exemplars)
        } else {
            Update::Hist {
                hist: state.to_classic(),
                delta: false,
                exemplars,
            }
        }))
    }

    /// A summary point; its quantiles must lie in `[0, 1]` (checked even without a
    /// recorded value).
    pub(super) fn summary(p: &SummaryDataPoint) -> PointUpdate {
        let mut q: Vec<(f64, f64)> = p
            .quantile_values
            .iter()
            .map(|v| (v.quantile, v.value))
            .collect();
        if q.iter().any(|(q, _)| !(0.0..=1.0).contains(q)) {
            return Err(DropReason::Invalid);
        }
        if no_recorded_value(p.flags) {
            return Ok(None);
        }
        q.sort_by(|a, b| a.0.total_cmp(&b.0));
        q.dedup_by(|a, b| a.0 == b.0);
        Ok(Some(Update::Summary(p.count, p.sum, q)))
    }

    /// Deltas must follow the series' last point without overlap.
    pub(super) fn is_delta(&self) -> bool {
        matches!(
            self,
            Update::CounterDelta(..) | Update::Hist { delta: true, .. } | Update::ExpDelta(..)
        )
    }

    /// The value of a new series.
    pub(super) fn into_new_value(self) -> ValueState {
        match self {
            Update::Gauge(v) => ValueState::Number {
                value: v,
                exemplar: None,
            },
            Update::CounterCumulative(v, e) | Update::CounterDelta(v, e) => ValueState::Number {
                value: v,
                exemplar: e,
            },
            Update::Hist {
                mut hist,
                exemplars,
                ..
            } => {
                hist.set_exemplars(Vec::new(), &exemplars);
                ValueState::Histogram { hist, exp: None }
            }
            Update::ExpDelta(state, exemplars) => {
                let mut hist = state.to_classic();
                hist.set_exemplars(Vec::new(), &exemplars);
                ValueState::Histogram {
                    hist,
                    exp: Some(state),
                }
            }
            Update::Summary(count, sum, quantiles) => ValueState::Summary {
                count,
                sum,
                quantiles,
            },
        }
    }

    /// Apply to an existing value.
    pub(super) fn apply_to(self, value: &mut ValueState) {
        match (self, value) {
            (Update::Gauge(v), ValueState::Number { value, .. }) => *value = v,
            (Update::CounterCumulative(v, e), ValueState::Number { value, exemplar }) => {
                *value = v;
                if e.is_some() {
                    *exemplar = e;
                }
            }
            (Update::CounterDelta(v, e), ValueState::Number { value, exemplar }) => {
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
                ValueState::Histogram { hist: old, exp },
            ) => {
                let same = old.bounds == hist.bounds && exp.is_none();
                let old_ex = if same {
                    std::mem::take(&mut old.exemplars)
                } else {
                    Vec::new()
                };
                if delta && same {
                    old.add(&hist);
                } else {
                    *old = hist;
                    *exp = None;
                }
                old.set_exemplars(old_ex, &exemplars);
            }
            (Update::ExpDelta(state, exemplars), ValueState::Histogram { hist: old, exp }) => {
                let merged = match exp.take() {
                    Some(mut running) => {
                        running.merge(&state);
                        running
                    }
                    None => state,
                };
                let mut hist = merged.to_classic();
                let old_ex = if hist.bounds == old.bounds {
                    std::mem::take(&mut old.exemplars)
                } else {
                    Vec::new()
                };
                hist.set_exemplars(old_ex, &exemplars);
                *old = hist;
                *exp = Some(merged);
            }
            (
                Update::Summary(c, s, q),
                ValueState::Summary {
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

/// An exemplar with a trace id (others are of no use on `/metrics`).
fn exemplar_of(e: &OtlpExemplar) -> Option<Exemplar> {
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

fn exemplars_of(list: &[OtlpExemplar]) -> Vec<Exemplar> {
    list.iter().filter_map(exemplar_of).collect()
}

fn latest_exemplar(list: &[OtlpExemplar]) -> Option<Exemplar> {
    list.iter()
        .filter_map(exemplar_of)
        .max_by_key(|e| e.timestamp_ns.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use lookout_proto::otlp::metrics::v1::metric::Data;
    use lookout_proto::otlp::metrics::v1::summary_data_point::ValueAtQuantile;
    use lookout_proto::otlp::metrics::v1::{
        Histogram, HistogramDataPoint, Summary, SummaryDataPoint,
    };

    use crate::prom::store::testing::*;
    use crate::prom::store::{DropReason, SeriesValue};
    use crate::prom::testing::{promtool_check_metrics, promtool_check_openmetrics};
    use crate::prom::Format;

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
            SeriesValue::Histogram {
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
        let SeriesValue::Histogram { bounds, counts, .. } =
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
        let SeriesValue::Histogram { counts, .. } = &s.series("rpc_duration_milliseconds")[0].value
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
            SeriesValue::Summary {
                count: 10,
                sum: 4.5,
                quantiles: vec![(0.5, 0.4), (0.99, 0.9)]
            }
        );
    }
}
