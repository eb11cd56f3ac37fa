//! Classic (explicit-bucket) histograms as a series holds them: per-bucket counts and
//! per-bucket exemplars.

use lookout_proto::otlp::metrics::v1::HistogramDataPoint;

use crate::prom::expo::Exemplar;

/// Most explicit bounds accepted in a histogram point (each is a line per scrape).
const MAX_EXPLICIT_BOUNDS: usize = 1024;

/// A classic histogram with per-bucket (not cumulative) counts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hist {
    /// Finite upper bounds, ascending.
    pub(super) bounds: Vec<f64>,
    /// One more than `bounds`; the last is the `+Inf` bucket.
    pub(super) counts: Vec<u64>,
    pub(super) count: u64,
    pub(super) sum: Option<f64>,
    /// Empty, or one per bucket.
    pub(super) exemplars: Vec<Option<Exemplar>>,
}

/// The sum of two sums, unknown when either is.
pub(super) fn add_sums(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    }
}

impl Hist {
    /// The buckets of `p`, or `None` when its layout is invalid: bounds not finite, not
    /// increasing or too many, or counts not one more than the bounds.
    pub(super) fn from_point(p: &HistogramDataPoint) -> Option<Hist> {
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
        })
    }

    /// Add a delta with the same bounds, bucket by bucket.
    pub(super) fn add(&mut self, delta: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&delta.counts) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(delta.count);
        self.sum = add_sums(self.sum, delta.sum);
    }

    /// Cumulative counts per bucket into `out`; the last (`+Inf`) is at least `count`.
    pub(super) fn cumulative_into(&self, out: &mut Vec<u64>) {
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
    pub(super) fn exemplar(&self, i: usize) -> Option<Exemplar> {
        let upto = i.min(self.exemplars.len().checked_sub(1)?);
        self.exemplars[..=upto].iter().rev().find_map(|e| *e)
    }

    /// Keep `new` exemplars (largest per bucket) over the old ones.
    pub(super) fn set_exemplars(&mut self, old: Vec<Option<Exemplar>>, new: &[Exemplar]) {
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
