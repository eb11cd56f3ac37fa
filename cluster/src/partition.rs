//! Which partition an item goes to, and a request split into one request per partition.
//!
//! A trace's spans all go to one partition, so one node assembles it whole: the partition
//! of a trace id is its last 8 bytes (the random part of a W3C trace id) as a big-endian
//! integer modulo the partition count. Logs with a trace id follow their trace; other
//! logs go by service name; metrics by service and metric name, so a metric's series of
//! one service stay together. Names hash with 64-bit FNV-1a: stable across processes,
//! releases and platforms, as partition numbers are stored in the stream.

use std::collections::BTreeMap;

use lookout_ingest::values::{resource_attributes, service_name};
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::logs::v1::{ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{ResourceMetrics, ScopeMetrics};
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans};

/// 64-bit FNV-1a of `parts`, each followed by a 0xff separator.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The partition of trace `id` among `partitions` (at least 1); `None` when `id` is not a
/// valid trace id (16 bytes, not all zero).
pub fn of_trace(id: &[u8], partitions: u32) -> Option<u32> {
    let id: &[u8; 16] = id.try_into().ok()?;
    if *id == [0; 16] {
        return None;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&id[8..]);
    Some((u64::from_be_bytes(low) % u64::from(partitions.max(1))) as u32)
}

/// The partition of what is placed by name (`service`, then optional further names).
pub fn of_names(names: &[&str], partitions: u32) -> u32 {
    let parts: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    (fnv1a(&parts) % u64::from(partitions.max(1))) as u32
}

/// Per partition, the index of its resource and scope copies in the output request.
#[derive(Default)]
struct Slot {
    resource: Option<usize>,
    scope: Option<usize>,
}

/// Split spans by trace. Resources and scopes are copied into every partition that has
/// spans of theirs; spans are moved. Spans without a valid trace id go to partition 0
/// (the consumer refuses them as the single node does).
pub fn split_traces(
    req: ExportTraceServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportTraceServiceRequest> {
    let mut out: BTreeMap<u32, ExportTraceServiceRequest> = BTreeMap::new();
    for rs in req.resource_spans {
        let mut slots: BTreeMap<u32, Slot> = BTreeMap::new();
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = rs;
        for ss in scope_spans {
            for s in slots.values_mut() {
                s.scope = None;
            }
            let ScopeSpans {
                scope,
                spans,
                schema_url: scope_schema,
            } = ss;
            for span in spans {
                let p = of_trace(&span.trace_id, partitions).unwrap_or(0);
                let r = out.entry(p).or_default();
                let slot = slots.entry(p).or_default();
                let ri = *slot.resource.get_or_insert_with(|| {
                    r.resource_spans.push(ResourceSpans {
                        resource: resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    r.resource_spans.len() - 1
                });
                let rs = &mut r.resource_spans[ri];
                let si = *slot.scope.get_or_insert_with(|| {
                    rs.scope_spans.push(ScopeSpans {
                        scope: scope.clone(),
                        spans: Vec::new(),
                        schema_url: scope_schema.clone(),
                    });
                    rs.scope_spans.len() - 1
                });
                rs.scope_spans[si].spans.push(span);
            }
        }
    }
    out
}

/// Split log records: a record with a trace id goes with its trace, others by service.
pub fn split_logs(
    req: ExportLogsServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportLogsServiceRequest> {
    let mut out: BTreeMap<u32, ExportLogsServiceRequest> = BTreeMap::new();
    for rl in req.resource_logs {
        let by_service = of_names(
            &[&service_name(resource_attributes(rl.resource.as_ref()))],
            partitions,
        );
        let mut slots: BTreeMap<u32, Slot> = BTreeMap::new();
        let ResourceLogs {
            resource,
            scope_logs,
            schema_url,
        } = rl;
        for sl in scope_logs {
            for s in slots.values_mut() {
                s.scope = None;
            }
            let ScopeLogs {
                scope,
                log_records,
                schema_url: scope_schema,
            } = sl;
            for rec in log_records {
                let p = of_trace(&rec.trace_id, partitions).unwrap_or(by_service);
                let r = out.entry(p).or_default();
                let slot = slots.entry(p).or_default();
                let ri = *slot.resource.get_or_insert_with(|| {
                    r.resource_logs.push(ResourceLogs {
                        resource: resource.clone(),
                        scope_logs: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    r.resource_logs.len() - 1
                });
                let rl = &mut r.resource_logs[ri];
                let si = *slot.scope.get_or_insert_with(|| {
                    rl.scope_logs.push(ScopeLogs {
                        scope: scope.clone(),
                        log_records: Vec::new(),
                        schema_url: scope_schema.clone(),
                    });
                    rl.scope_logs.len() - 1
                });
                rl.scope_logs[si].log_records.push(rec);
            }
        }
    }
    out
}

/// Split metrics by service and metric name.
pub fn split_metrics(
    req: ExportMetricsServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportMetricsServiceRequest> {
    let mut out: BTreeMap<u32, ExportMetricsServiceRequest> = BTreeMap::new();
    for rm in req.resource_metrics {
        let service = service_name(resource_attributes(rm.resource.as_ref()));
        let mut slots: BTreeMap<u32, Slot> = BTreeMap::new();
        let ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        } = rm;
        for sm in scope_metrics {
            for s in slots.values_mut() {
                s.scope = None;
            }
            let ScopeMetrics {
                scope,
                metrics,
                schema_url: scope_schema,
            } = sm;
            for m in metrics {
                let p = of_names(&[&service, &m.name], partitions);
                let r = out.entry(p).or_default();
                let slot = slots.entry(p).or_default();
                let ri = *slot.resource.get_or_insert_with(|| {
                    r.resource_metrics.push(ResourceMetrics {
                        resource: resource.clone(),
                        scope_metrics: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    r.resource_metrics.len() - 1
                });
                let rm = &mut r.resource_metrics[ri];
                let si = *slot.scope.get_or_insert_with(|| {
                    rm.scope_metrics.push(ScopeMetrics {
                        scope: scope.clone(),
                        metrics: Vec::new(),
                        schema_url: scope_schema.clone(),
                    });
                    rm.scope_metrics.len() - 1
                });
                rm.scope_metrics[si].metrics.push(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use lookout_proto::otlp::logs::v1::LogRecord;
    use lookout_proto::otlp::metrics::v1::Metric;
    use lookout_proto::otlp::resource::v1::Resource;
    use lookout_proto::otlp::trace::v1::Span;

    use super::*;

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(V::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn trace_id(i: u8) -> Vec<u8> {
        let mut id = vec![7u8; 16];
        id[15] = i;
        id[9] = i.wrapping_mul(31);
        id
    }

    #[test]
    fn partitions_are_stable_across_releases() {
        // Partition numbers are stored in the stream: these must never change.
        let id = hex::decode("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(of_trace(&id, 16), Some(6));
        assert_eq!(of_trace(&id, 7), Some(0xa3ce929d0e0e4736u64 as u32 % 7));
        assert_eq!(of_trace(&[0; 16], 16), None);
        assert_eq!(of_trace(&[1; 8], 16), None);
        assert_eq!(of_names(&["checkout"], 16), of_names(&["checkout"], 16));
        assert_eq!(fnv1a(&[b"a"]), 620_310_408_636_712_809);
        assert_ne!(
            of_names(&["ab", "c"], 1 << 20),
            of_names(&["a", "bc"], 1 << 20)
        );
    }

    #[test]
    fn every_span_lands_once_and_each_trace_in_its_partition() {
        let mut req = ExportTraceServiceRequest::default();
        for svc in ["web", "db"] {
            let spans = (0..40u8)
                .map(|i| Span {
                    trace_id: trace_id(i % 10),
                    span_id: vec![i + 1; 8],
                    name: format!("{svc} {i}"),
                    ..Default::default()
                })
                .collect();
            req.resource_spans.push(ResourceSpans {
                resource: resource(svc),
                scope_spans: vec![
                    ScopeSpans {
                        spans,
                        ..Default::default()
                    },
                    ScopeSpans::default(),
                ],
                schema_url: "s".into(),
            });
        }
        let parts = split_traces(req, 4);
        assert!(parts.len() > 1);
        let mut seen = 0;
        for (p, r) in &parts {
            for rs in &r.resource_spans {
                assert_eq!(rs.schema_url, "s");
                let svc = service_name(resource_attributes(rs.resource.as_ref()));
                assert_eq!(rs.scope_spans.len(), 1, "empty scopes are not copied");
                for s in &rs.scope_spans[0].spans {
                    assert_eq!(of_trace(&s.trace_id, 4), Some(*p));
                    assert!(s.name.starts_with(&svc));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 80);
    }

    #[test]
    fn logs_follow_their_trace_and_the_rest_go_by_service() {
        let rec = |trace: Option<u8>| LogRecord {
            trace_id: trace.map(trace_id).unwrap_or_default(),
            ..Default::default()
        };
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("jobs"),
                scope_logs: vec![ScopeLogs {
                    log_records: (0..10).map(|i| rec((i % 2 == 0).then_some(i))).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let by_service = of_names(&["jobs"], 8);
        let mut n = 0;
        for (p, r) in split_logs(req, 8) {
            for l in &r.resource_logs[0].scope_logs[0].log_records {
                let want = of_trace(&l.trace_id, 8).unwrap_or(by_service);
                assert_eq!(p, want);
                n += 1;
            }
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn metrics_go_by_service_and_name() {
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("api"),
                scope_metrics: vec![ScopeMetrics {
                    metrics: ["a", "b", "c", "d", "a"]
                        .iter()
                        .map(|n| Metric {
                            name: (*n).into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let parts = split_metrics(req, 1 << 16);
        let n: usize = parts
            .iter()
            .map(|(p, r)| {
                let ms = &r.resource_metrics[0].scope_metrics[0].metrics;
                for m in ms {
                    assert_eq!(*p, of_names(&["api", &m.name], 1 << 16));
                }
                ms.len()
            })
            .sum();
        assert_eq!(n, 5);
    }
}
