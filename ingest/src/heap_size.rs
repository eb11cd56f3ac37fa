//! Heap bytes held by a decoded OTLP request: what the ingest budget charges for a batch
//! waiting in the pipeline. prost's in-memory form is several times the protobuf size
//! (each attribute is a struct with two heap strings), and the ratio depends on the shape
//! of the data, so it is counted rather than guessed from the wire size.

use std::mem::size_of;

use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    metric::Data, Exemplar, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

use crate::batch::Batch;

/// An allocation of `cap` bytes, rounded up to the allocator's smallest size class.
fn alloc(cap: usize) -> usize {
    if cap == 0 {
        0
    } else {
        cap.next_multiple_of(16)
    }
}

fn vec<T>(v: &Vec<T>) -> usize {
    alloc(v.capacity() * size_of::<T>())
}

fn string(s: &String) -> usize {
    alloc(s.capacity())
}

fn any_value(v: &AnyValue) -> usize {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => string(s),
        Some(any_value::Value::BytesValue(b)) => vec(b),
        Some(any_value::Value::ArrayValue(a)) => {
            vec(&a.values) + a.values.iter().map(any_value).sum::<usize>()
        }
        Some(any_value::Value::KvlistValue(l)) => attributes(&l.values),
        _ => 0,
    }
}

fn attributes(kvs: &Vec<KeyValue>) -> usize {
    vec(kvs)
        + kvs
            .iter()
            .map(|kv| string(&kv.key) + kv.value.as_ref().map_or(0, any_value))
            .sum::<usize>()
}

fn resource(r: &Option<Resource>) -> usize {
    r.as_ref()
        .map_or(0, |r| attributes(&r.attributes) + vec(&r.entity_refs))
}

fn scope(s: &Option<InstrumentationScope>) -> usize {
    s.as_ref().map_or(0, |s| {
        string(&s.name) + string(&s.version) + attributes(&s.attributes)
    })
}

fn span(s: &Span) -> usize {
    vec(&s.trace_id)
        + vec(&s.span_id)
        + vec(&s.parent_span_id)
        + string(&s.trace_state)
        + string(&s.name)
        + attributes(&s.attributes)
        + vec(&s.events)
        + s.events.iter().map(event).sum::<usize>()
        + vec(&s.links)
        + s.links.iter().map(link).sum::<usize>()
        + s.status.as_ref().map_or(0, |st| string(&st.message))
}

fn event(e: &span::Event) -> usize {
    string(&e.name) + attributes(&e.attributes)
}

fn link(l: &span::Link) -> usize {
    vec(&l.trace_id) + vec(&l.span_id) + string(&l.trace_state) + attributes(&l.attributes)
}

fn log_record(r: &LogRecord) -> usize {
    string(&r.severity_text)
        + r.body.as_ref().map_or(0, any_value)
        + attributes(&r.attributes)
        + vec(&r.trace_id)
        + vec(&r.span_id)
        + string(&r.event_name)
}

fn exemplars(es: &Vec<Exemplar>) -> usize {
    vec(es)
        + es.iter()
            .map(|e| attributes(&e.filtered_attributes) + vec(&e.span_id) + vec(&e.trace_id))
            .sum::<usize>()
}

fn number_points(points: &Vec<NumberDataPoint>) -> usize {
    vec(points)
        + points
            .iter()
            .map(|p| attributes(&p.attributes) + exemplars(&p.exemplars))
            .sum::<usize>()
}

fn metric(m: &Metric) -> usize {
    let data = match &m.data {
        Some(Data::Gauge(g)) => number_points(&g.data_points),
        Some(Data::Sum(s)) => number_points(&s.data_points),
        Some(Data::Histogram(h)) => {
            vec(&h.data_points)
                + h.data_points
                    .iter()
                    .map(|p| {
                        attributes(&p.attributes)
                            + exemplars(&p.exemplars)
                            + vec(&p.bucket_counts)
                            + vec(&p.explicit_bounds)
                    })
                    .sum::<usize>()
        }
        Some(Data::ExponentialHistogram(h)) => {
            vec(&h.data_points)
                + h.data_points
                    .iter()
                    .map(|p| {
                        attributes(&p.attributes)
                            + exemplars(&p.exemplars)
                            + p.positive.as_ref().map_or(0, |b| vec(&b.bucket_counts))
                            + p.negative.as_ref().map_or(0, |b| vec(&b.bucket_counts))
                    })
                    .sum::<usize>()
        }
        Some(Data::Summary(s)) => {
            vec(&s.data_points)
                + s.data_points
                    .iter()
                    .map(|p| attributes(&p.attributes) + vec(&p.quantile_values))
                    .sum::<usize>()
        }
        None => 0,
    };
    string(&m.name) + string(&m.description) + string(&m.unit) + attributes(&m.metadata) + data
}

/// A request's resource → scope → item tree: the three signals share the shape.
fn tree<R, S, I>(
    resources: &Vec<R>,
    resource_parts: impl Fn(&R) -> (&Option<Resource>, &String, &Vec<S>),
    scope_parts: impl Fn(&S) -> (&Option<InstrumentationScope>, &String, &Vec<I>),
    item: impl Fn(&I) -> usize,
) -> usize {
    vec(resources)
        + resources
            .iter()
            .map(|r| {
                let (res, url, scopes) = resource_parts(r);
                resource(res)
                    + string(url)
                    + vec(scopes)
                    + scopes
                        .iter()
                        .map(|s| {
                            let (sc, url, items) = scope_parts(s);
                            scope(sc)
                                + string(url)
                                + vec(items)
                                + items.iter().map(&item).sum::<usize>()
                        })
                        .sum::<usize>()
            })
            .sum::<usize>()
}

impl Batch {
    /// Bytes this decoded request holds: its structs and every heap allocation under them
    /// (capacities, rounded up to 16-byte size classes).
    pub fn heap_size(&self) -> u64 {
        let n = match self {
            Batch::Traces(r) => tree(
                &r.resource_spans,
                |rs: &ResourceSpans| (&rs.resource, &rs.schema_url, &rs.scope_spans),
                |ss: &ScopeSpans| (&ss.scope, &ss.schema_url, &ss.spans),
                span,
            ),
            Batch::Logs(r) => tree(
                &r.resource_logs,
                |rl: &ResourceLogs| (&rl.resource, &rl.schema_url, &rl.scope_logs),
                |sl: &ScopeLogs| (&sl.scope, &sl.schema_url, &sl.log_records),
                log_record,
            ),
            Batch::Metrics(r) => tree(
                &r.resource_metrics,
                |rm: &ResourceMetrics| (&rm.resource, &rm.schema_url, &rm.scope_metrics),
                |sm: &ScopeMetrics| (&sm.scope, &sm.schema_url, &sm.metrics),
                metric,
            ),
        };
        (size_of::<Batch>() + n) as u64
    }
}
