//! Exponential histograms: kept in exponential form while deltas are added (at the
//! coarser of two scales), exposed as classic buckets (see [`MAX_CLASSIC_BUCKETS`]).

use lookout_proto::otlp::metrics::v1::exponential_histogram_data_point::Buckets;
use lookout_proto::otlp::metrics::v1::ExponentialHistogramDataPoint;

use super::histogram::{add_sums, Hist};

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
pub(super) struct ExpState {
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    pos: ExpBuckets,
    neg: ExpBuckets,
    count: u64,
    sum: Option<f64>,
}

impl ExpState {
    /// The state of one point, or `None` when its scale or zero threshold is invalid.
    pub(super) fn from_point(p: &ExponentialHistogramDataPoint) -> Option<Self> {
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

    /// Add a delta point.
    pub(super) fn merge(&mut self, other: &ExpState) {
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
        self.sum = add_sums(self.sum, other.sum);
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
    pub(super) fn to_classic(&self) -> Hist {
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
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
    use lookout_proto::otlp::metrics::v1::metric::Data;
    use lookout_proto::otlp::metrics::v1::ExponentialHistogram;

    use super::*;
    use crate::prom::store::testing::*;
    use crate::prom::store::{MetricStore, SeriesValue};
    use crate::prom::testing::promtool_check_metrics;
    use crate::prom::Format;

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
            SeriesValue::Histogram {
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
}
