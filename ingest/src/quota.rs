//! Per-service ingest rate limits: one token bucket per `service.name`, so one noisy
//! service slows down alone instead of filling the collector for everyone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::batch::{metric_points, Batch};
use crate::values::service_name;

/// Buckets kept before idle (full) ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets of items per second, by service.
#[derive(Debug)]
pub struct ServiceRates {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A service over its rate: how many of its items a request carried and when enough
/// tokens will be there.
#[derive(Debug, Clone, PartialEq)]
pub struct OverLimit {
    /// `service.name`.
    pub service: String,
    /// Its items in the request.
    pub items: u64,
    /// Wait until the request would fit.
    pub wait: Duration,
}

impl ServiceRates {
    /// `rate` items per second per service with bursts of `2 × rate`; `None` when `rate`
    /// is 0 (no limit).
    pub fn new(rate: u64) -> Option<Self> {
        (rate > 0).then(|| Self {
            rate: rate as f64,
            burst: 2.0 * rate as f64,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Take tokens for each `(service, items)`; the services that do not fit are
    /// returned and charged nothing.
    pub fn take(&self, counts: &[(String, u64)], now: Instant) -> Vec<OverLimit> {
        let mut buckets = self.buckets.lock();
        if buckets.len() > MAX_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let mut over = Vec::new();
        for (service, items) in counts {
            let b = buckets.entry(service.clone()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            });
            b.tokens = b.refilled(now, self.rate, self.burst);
            b.at = now;
            // A request larger than the burst passes on a full bucket rather than never.
            let need = (*items as f64).min(self.burst);
            if need <= b.tokens {
                b.tokens -= need;
            } else {
                let deficit = need - b.tokens;
                over.push(OverLimit {
                    service: service.clone(),
                    items: *items,
                    wait: Duration::from_secs_f64((deficit / self.rate).max(0.0)),
                });
            }
        }
        over
    }

    /// The limit, items per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }
}

impl Bucket {
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * rate).min(burst)
    }
}

/// Items of `batch` by `service.name`, in first-seen order.
pub fn items_by_service(batch: &Batch) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut add = |service: String, n: u64| match out.iter_mut().find(|(s, _)| *s == service) {
        Some((_, c)) => *c += n,
        None => out.push((service, n)),
    };
    match batch {
        Batch::Traces(r) => {
            for rs in &r.resource_spans {
                let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                let n = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
                add(service_name(attrs), n);
            }
        }
        Batch::Logs(r) => {
            for rl in &r.resource_logs {
                let attrs = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                let n = rl
                    .scope_logs
                    .iter()
                    .map(|s| s.log_records.len() as u64)
                    .sum();
                add(service_name(attrs), n);
            }
        }
        Batch::Metrics(r) => {
            for rm in &r.resource_metrics {
                let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
                let n = rm
                    .scope_metrics
                    .iter()
                    .flat_map(|s| &s.metrics)
                    .map(|m| metric_points(m.data.as_ref()))
                    .sum();
                add(service_name(attrs), n);
            }
        }
    }
    out
}

/// Remove every resource of the services in `refused`.
pub fn drop_services(batch: &mut Batch, refused: &[OverLimit]) {
    let keep = |attrs: Option<&lookout_proto::otlp::resource::v1::Resource>| {
        let name = service_name(attrs.map_or(&[][..], |r| &r.attributes[..]));
        !refused.iter().any(|o| o.service == name)
    };
    match batch {
        Batch::Traces(r) => r.resource_spans.retain(|rs| keep(rs.resource.as_ref())),
        Batch::Logs(r) => r.resource_logs.retain(|rl| keep(rl.resource.as_ref())),
        Batch::Metrics(r) => r.resource_metrics.retain(|rm| keep(rm.resource.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_own_bucket() {
        let r = ServiceRates::new(100).expect("limited");
        let t0 = Instant::now();
        // A burst of 2 × rate fits, then the bucket is empty.
        assert!(r.take(&[("a".into(), 200)], t0).is_empty());
        let over = r.take(&[("a".into(), 10), ("b".into(), 150)], t0);
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].service, "a");
        assert!((over[0].wait.as_secs_f64() - 0.1).abs() < 1e-6);
        // Refills at the rate.
        let t1 = t0 + Duration::from_millis(500);
        assert!(r.take(&[("a".into(), 50)], t1).is_empty());
        assert_eq!(r.take(&[("a".into(), 1)], t1).len(), 1);
        // A request larger than the burst passes on a full bucket, not never.
        assert!(r.take(&[("c".into(), 1000)], t1).is_empty());
        let over = r.take(&[("c".into(), 1000)], t1);
        assert!((over[0].wait.as_secs_f64() - 2.0).abs() < 1e-6);
        assert!(ServiceRates::new(0).is_none());
    }
}
