//! Writing the fresh series of the store, and `target_info`, to an exposition.

use super::series::{Family, Targets};
use super::value::ValueState;
use crate::prom::convert::PromKind;
use crate::prom::expo::{Exposition, Kind};

impl Targets {
    /// `target_info` of the targets `fresh` keeps.
    pub(super) fn render(&self, w: &mut Exposition, fresh: impl Fn(u64) -> bool) {
        if self.0.values().any(|t| fresh(t.seen_ns))
            && w.family("target", Kind::Info, "Target metadata", "")
        {
            for t in self.0.values().filter(|t| fresh(t.seen_ns)) {
                w.info(&t.rendered);
            }
        }
    }
}

impl Family {
    /// The series `fresh` keeps, as family `name`; `cumulative` is scratch space.
    pub(super) fn render(
        &self,
        name: &str,
        w: &mut Exposition,
        fresh: impl Fn(u64) -> bool,
        cumulative: &mut Vec<u64>,
    ) {
        if !w.family(name, self.kind.into(), &self.help, &self.unit) {
            return;
        }
        for (labels, s) in self.series.iter().filter(|(_, s)| fresh(s.seen_ns)) {
            match &s.value {
                ValueState::Number { value, exemplar } => match self.kind {
                    PromKind::Counter => w.counter(labels, *value, exemplar.as_ref()),
                    _ => w.gauge(labels, *value),
                },
                ValueState::Histogram { hist, .. } => {
                    hist.cumulative_into(cumulative);
                    w.histogram(labels, &hist.bounds, cumulative, hist.sum, &|i| {
                        hist.exemplar(i)
                    });
                }
                ValueState::Summary {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use lookout_proto::attr;
    use lookout_proto::otlp::metrics::v1::metric::Data;
    use lookout_proto::otlp::metrics::v1::{self as m, Gauge, Histogram};

    use crate::prom::store::testing::*;
    use crate::prom::store::{PointType, SeriesValue};
    use crate::prom::testing::{promtool_check_metrics, promtool_check_openmetrics};
    use crate::prom::Format;

    #[test]
    fn converts_names_labels_and_target_info() {
        let mut s = store();
        let rep = s.apply(
            &request(vec![
                metric(
                    "process.memory.usage",
                    "By",
                    Data::Gauge(Gauge {
                        data_points: vec![num(
                            0,
                            T0,
                            1024.0,
                            vec![attr::string("pool.name", "heap")],
                        )],
                    }),
                ),
                sum(
                    "http.requests",
                    CUMULATIVE,
                    true,
                    vec![num(
                        T0 - S,
                        T0,
                        7.0,
                        vec![attr::string("http.route", "/pay\"x\"")],
                    )],
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
        assert_eq!(snap[0].value, SeriesValue::Counter(7.0));
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
