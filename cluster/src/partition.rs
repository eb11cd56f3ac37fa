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
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

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

/// One OTLP request shape: requests of resources of scopes of items, the same for every
/// signal but for the names, so one splitting function serves all three.
trait Shape: Default {
    type Resource;
    type Scope;
    type Item;
    fn into_resources(self) -> Vec<Self::Resource>;
    fn resources(&mut self) -> &mut Vec<Self::Resource>;
    /// The resource without its scopes (resource and schema URL kept), and its scopes.
    fn open_resource(r: Self::Resource) -> (Self::Resource, Vec<Self::Scope>);
    fn scopes(r: &mut Self::Resource) -> &mut Vec<Self::Scope>;
    fn resource_attributes(r: &Self::Resource) -> &[lookout_proto::otlp::common::v1::KeyValue];
    /// The scope without its items, and its items.
    fn open_scope(s: Self::Scope) -> (Self::Scope, Vec<Self::Item>);
    fn items(s: &mut Self::Scope) -> &mut Vec<Self::Item>;
}

macro_rules! shape {
    ($req:ty, $resources:ident, $Res:ident, $scopes:ident, $Scope:ident, $items:ident, $Item:ty) => {
        impl Shape for $req {
            type Resource = $Res;
            type Scope = $Scope;
            type Item = $Item;
            fn into_resources(self) -> Vec<$Res> {
                self.$resources
            }
            fn resources(&mut self) -> &mut Vec<$Res> {
                &mut self.$resources
            }
            fn open_resource(mut r: $Res) -> ($Res, Vec<$Scope>) {
                let scopes = std::mem::take(&mut r.$scopes);
                (r, scopes)
            }
            fn scopes(r: &mut $Res) -> &mut Vec<$Scope> {
                &mut r.$scopes
            }
            fn resource_attributes(r: &$Res) -> &[lookout_proto::otlp::common::v1::KeyValue] {
                resource_attributes(r.resource.as_ref())
            }
            fn open_scope(mut s: $Scope) -> ($Scope, Vec<$Item>) {
                let items = std::mem::take(&mut s.$items);
                (s, items)
            }
            fn items(s: &mut $Scope) -> &mut Vec<$Item> {
                &mut s.$items
            }
        }
    };
}

shape!(
    ExportTraceServiceRequest,
    resource_spans,
    ResourceSpans,
    scope_spans,
    ScopeSpans,
    spans,
    Span
);
shape!(
    ExportLogsServiceRequest,
    resource_logs,
    ResourceLogs,
    scope_logs,
    ScopeLogs,
    log_records,
    LogRecord
);
shape!(
    ExportMetricsServiceRequest,
    resource_metrics,
    ResourceMetrics,
    scope_metrics,
    ScopeMetrics,
    metrics,
    Metric
);

/// Split `req` by `partition_of(key, item)`, where `key` is `key_of` the item's resource
/// attributes, computed once per resource. Resources and scopes are copied into every
/// part that has items of theirs (empty ones into none); items are moved.
fn split<R, K>(
    req: R,
    key_of: impl Fn(&[lookout_proto::otlp::common::v1::KeyValue]) -> K,
    partition_of: impl Fn(&K, &R::Item) -> u32,
) -> BTreeMap<u32, R>
where
    R: Shape,
    R::Resource: Clone,
    R::Scope: Clone,
{
    let mut out: BTreeMap<u32, R> = BTreeMap::new();
    for resource in req.into_resources() {
        let key = key_of(R::resource_attributes(&resource));
        let (resource, scopes) = R::open_resource(resource);
        // Per partition: where this resource's copy is in the part, and which scope (its
        // number + 1) has its copy open in it.
        let mut at: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        for (si, scope) in scopes.into_iter().enumerate() {
            let (scope, items) = R::open_scope(scope);
            for item in items {
                let p = partition_of(&key, &item);
                let part = out.entry(p).or_default();
                let slot = at.entry(p).or_insert_with(|| {
                    part.resources().push(resource.clone());
                    (part.resources().len() - 1, 0)
                });
                let r = &mut part.resources()[slot.0];
                if slot.1 != si + 1 {
                    R::scopes(r).push(scope.clone());
                    slot.1 = si + 1;
                }
                if let Some(s) = R::scopes(r).last_mut() {
                    R::items(s).push(item);
                }
            }
        }
    }
    out
}

/// Split spans by trace. Spans without a valid trace id go to partition 0 (the consumer
/// refuses them as the single node does).
pub fn split_traces(
    req: ExportTraceServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportTraceServiceRequest> {
    split(
        req,
        |_| (),
        |_, s: &Span| of_trace(&s.trace_id, partitions).unwrap_or(0),
    )
}

/// Split log records: a record with a trace id goes with its trace, others by service.
pub fn split_logs(
    req: ExportLogsServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportLogsServiceRequest> {
    split(req, service_name, |service, l: &LogRecord| {
        of_trace(&l.trace_id, partitions).unwrap_or_else(|| of_names(&[service], partitions))
    })
}

/// Split metrics by service and metric name.
pub fn split_metrics(
    req: ExportMetricsServiceRequest,
    partitions: u32,
) -> BTreeMap<u32, ExportMetricsServiceRequest> {
    split(req, service_name, |service, m: &Metric| {
        of_names(&[service, &m.name], partitions)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use lookout_proto::otlp::resource::v1::Resource;

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
