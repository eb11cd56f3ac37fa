//! The span index: one document per span, searchable by service, operation, kind, status,
//! start, duration and attributes (`KEY=VALUE` terms), retrievable whole by trace id. The
//! span itself is stored as protobuf (`ResourceSpans` holding just that span).

use std::collections::{BTreeSet, HashMap};

use lookout_proto::api::{
    SpanEvent, SpanLink, SpanView, TraceResponse, TraceSummary, TracesResponse,
};
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::{ResourceSpans, Span};
use prost::Message;
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value as _, FAST, INDEXED, STORED, STRING,
};
use tantivy::{IndexWriter, Order, TantivyDocument, Term};

use super::logs::SearchError;
use super::partition::{PartitionMeta, PartitionedIndex};
use super::values::{attrs_to_map, hex_id, rfc3339, service_name, to_text};
use super::DocMapper;
use crate::batch::Batch;

/// Most spans returned for one trace.
pub const MAX_TRACE_SPANS: usize = 100_000;

/// Fields of the span schema.
#[derive(Clone)]
pub struct SpanFields {
    /// The schema.
    pub schema: Schema,
    trace_id: Field,
    trace_hi: Field,
    trace_lo: Field,
    service: Field,
    operation: Field,
    kind: Field,
    status: Field,
    start: Field,
    duration: Field,
    attr: Field,
    payload: Field,
}

impl SpanFields {
    /// Build the schema.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let trace_id = b.add_text_field("trace_id", STRING);
        // The id again as two integers: a cheap column to group search hits by trace.
        let trace_hi = b.add_u64_field("trace_hi", FAST);
        let trace_lo = b.add_u64_field("trace_lo", FAST);
        let service = b.add_text_field("service", STRING);
        let operation = b.add_text_field("operation", STRING);
        let kind = b.add_u64_field("kind", INDEXED | FAST);
        let status = b.add_u64_field("status", INDEXED | FAST);
        let start = b.add_u64_field("start", INDEXED | FAST);
        let duration = b.add_u64_field("duration", INDEXED | FAST);
        let attr = b.add_text_field("attr", STRING);
        let payload = b.add_bytes_field("payload", STORED);
        Self {
            schema: b.build(),
            trace_id,
            trace_hi,
            trace_lo,
            service,
            operation,
            kind,
            status,
            start,
            duration,
            attr,
            payload,
        }
    }
}

impl Default for SpanFields {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds spans to the index.
pub struct SpanMapper {
    f: SpanFields,
    buf: Vec<u8>,
}

impl SpanMapper {
    /// A mapper for `fields`.
    pub fn new(f: SpanFields) -> Self {
        Self { f, buf: Vec::new() }
    }
}

/// The `KEY=VALUE` term of an attribute, as indexed and as searched.
pub fn attr_term(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

impl DocMapper for SpanMapper {
    fn add(
        &mut self,
        batch: &Batch,
        writer: &IndexWriter<TantivyDocument>,
        meta: &mut PartitionMeta,
    ) -> tantivy::Result<(u64, u64)> {
        let Batch::Traces(req) = batch else {
            return Ok((0, 0));
        };
        let f = &self.f;
        let (mut docs, mut bytes) = (0u64, 0u64);
        for rs in &req.resource_spans {
            let res_attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = service_name(res_attrs);
            let res_terms: Vec<String> = res_attrs
                .iter()
                .map(|kv| attr_term(&kv.key, &kv.value.as_ref().map(to_text).unwrap_or_default()))
                .collect();
            // The resource (and below, the scope) is encoded once and reused for each span.
            let mut res_head = Vec::new();
            if let Some(r) = &rs.resource {
                prost::encoding::message::encode(1, r, &mut res_head);
            }
            if !rs.schema_url.is_empty() {
                prost::encoding::string::encode(3, &rs.schema_url, &mut res_head);
            }
            for ss in &rs.scope_spans {
                let mut scope_head = Vec::new();
                if let Some(sc) = &ss.scope {
                    prost::encoding::message::encode(1, sc, &mut scope_head);
                }
                if !ss.schema_url.is_empty() {
                    prost::encoding::string::encode(3, &ss.schema_url, &mut scope_head);
                }
                for span in &ss.spans {
                    let mut doc = TantivyDocument::default();
                    let start = span.start_time_unix_nano;
                    let duration = span.end_time_unix_nano.saturating_sub(start);
                    meta.min_ts = meta.min_ts.min(start);
                    meta.max_ts = meta.max_ts.max(start);
                    doc.add_text(f.trace_id, hex::encode(&span.trace_id));
                    let (hi, lo) = id_halves(&span.trace_id);
                    doc.add_u64(f.trace_hi, hi);
                    doc.add_u64(f.trace_lo, lo);
                    doc.add_text(f.service, &service);
                    doc.add_text(f.operation, &span.name);
                    doc.add_u64(f.kind, u64::try_from(span.kind).unwrap_or(0));
                    doc.add_u64(
                        f.status,
                        span.status
                            .as_ref()
                            .map_or(0, |s| u64::try_from(s.code).unwrap_or(0)),
                    );
                    doc.add_u64(f.start, start);
                    doc.add_u64(f.duration, duration);
                    for kv in &span.attributes {
                        let v = kv.value.as_ref().map(to_text).unwrap_or_default();
                        doc.add_text(f.attr, attr_term(&kv.key, &v));
                    }
                    for t in &res_terms {
                        doc.add_text(f.attr, t);
                    }
                    encode_single_span(&mut self.buf, &res_head, &scope_head, span);
                    bytes += self.buf.len() as u64;
                    doc.add_bytes(f.payload, self.buf.as_slice());
                    writer.add_document(doc)?;
                    docs += 1;
                }
            }
        }
        Ok((docs, bytes))
    }
}

/// A 16-byte trace id as two big-endian halves (hex of `hi` then `lo` is the id's hex).
fn id_halves(id: &[u8]) -> (u64, u64) {
    let half = |b: &[u8]| {
        let mut w = [0u8; 8];
        let n = b.len().min(8);
        w[..n].copy_from_slice(&b[..n]);
        u64::from_be_bytes(w)
    };
    (
        half(id.get(..8).unwrap_or(&[])),
        half(id.get(8..).unwrap_or(&[])),
    )
}

/// Encode `ResourceSpans { resource, scope_spans: [ScopeSpans { scope, spans: [span] }] }`
/// from the pre-encoded resource and scope fields, without cloning anything.
fn encode_single_span(buf: &mut Vec<u8>, res_head: &[u8], scope_head: &[u8], span: &Span) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    buf.clear();
    buf.extend_from_slice(res_head);
    let span_len = span.encoded_len();
    let inner = scope_head.len() + key_len(2) + encoded_len_varint(span_len as u64) + span_len;
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(inner as u64, buf);
    buf.extend_from_slice(scope_head);
    prost::encoding::message::encode(2, span, buf);
}

/// Every stored span of `trace_id` (hex), by start time; `None` when there is none.
pub fn get_trace(
    index: &PartitionedIndex,
    f: &SpanFields,
    trace_id: &str,
) -> Result<Option<TraceResponse>, SearchError> {
    let query = TermQuery::new(
        Term::from_field_text(f.trace_id, trace_id),
        IndexRecordOption::Basic,
    );
    let mut spans = Vec::new();
    for part in index.all() {
        let searcher = part.reader.searcher();
        let addrs = searcher.search(&query, &DocSetCollector)?;
        for addr in addrs {
            if spans.len() >= MAX_TRACE_SPANS {
                break;
            }
            let doc: TantivyDocument = searcher.doc(addr)?;
            if let Some(view) = doc
                .get_first(f.payload)
                .and_then(|v| v.as_bytes())
                .and_then(|b| ResourceSpans::decode(b).ok())
                .and_then(|rs| span_view(&rs))
            {
                spans.push(view);
            }
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    spans.sort_by(|a, b| {
        a.start_unix_nano
            .cmp(&b.start_unix_nano)
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
    let services: BTreeSet<String> = spans.iter().map(|s| s.service.clone()).collect();
    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    Ok(Some(TraceResponse {
        trace_id: trace_id.to_string(),
        state: "open".into(),
        root_span_id: None,
        start: rfc3339(start),
        start_unix_nano: start,
        duration_ns: 0,
        span_count: spans.len() as u64,
        error_count: 0,
        orphan_count: 0,
        spans,
        services: services.into_iter().collect(),
        critical_path: Vec::new(),
        warnings: Vec::new(),
    }))
}

fn kind_name(k: i32) -> &'static str {
    match SpanKind::try_from(k) {
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        Ok(SpanKind::Internal) => "internal",
        _ => "unspecified",
    }
}

fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "ok",
        Ok(StatusCode::Error) => "error",
        _ => "unset",
    }
}

fn span_view(rs: &ResourceSpans) -> Option<SpanView> {
    let ss = rs.scope_spans.first()?;
    let span = ss.spans.first()?;
    let res_attrs = rs
        .resource
        .as_ref()
        .map(|r| r.attributes.as_slice())
        .unwrap_or(&[]);
    Some(SpanView {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id: hex_id(&span.parent_span_id),
        depth: 0,
        offset_ns: 0,
        skew_adjustment_ns: 0,
        critical: false,
        service: service_name(res_attrs),
        operation: span.name.clone(),
        kind: kind_name(span.kind).to_string(),
        start: rfc3339(span.start_time_unix_nano),
        start_unix_nano: span.start_time_unix_nano,
        duration_ns: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano),
        status: span
            .status
            .as_ref()
            .map_or("unset", |s| status_name(s.code))
            .to_string(),
        status_message: span
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default(),
        attributes: attrs_to_map(&span.attributes),
        resource: attrs_to_map(res_attrs),
        events: span
            .events
            .iter()
            .map(|e| SpanEvent {
                timestamp: rfc3339(e.time_unix_nano),
                name: e.name.clone(),
                attributes: attrs_to_map(&e.attributes),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| SpanLink {
                trace_id: hex::encode(&l.trace_id),
                span_id: hex::encode(&l.span_id),
                attributes: attrs_to_map(&l.attributes),
            })
            .collect(),
    })
}

/// A span search; every set filter must hold on the same span.
#[derive(Debug, Clone, Default)]
pub struct SpanQuery {
    /// Service name.
    pub service: Option<String>,
    /// Span name.
    pub operation: Option<String>,
    /// Minimum span duration, ns.
    pub min_duration_ns: Option<u64>,
    /// Maximum span duration, ns.
    pub max_duration_ns: Option<u64>,
    /// Only spans with status error.
    pub errors_only: bool,
    /// `(key, value)` attribute equalities (span or resource attributes).
    pub attributes: Vec<(String, String)>,
    /// Start time range, Unix ns, inclusive.
    pub from_ns: u64,
    /// End of the start time range.
    pub to_ns: u64,
    /// Most traces returned.
    pub limit: usize,
}

fn u64_range(field: Field, lo: Option<u64>, hi: Option<u64>) -> Box<dyn Query> {
    use std::ops::Bound;
    let b = |v: Option<u64>| {
        v.map_or(Bound::Unbounded, |v| {
            Bound::Included(Term::from_field_u64(field, v))
        })
    };
    Box::new(RangeQuery::new(b(lo), b(hi)))
}

/// Find traces having a span that matches `q`, newest first, summarised.
pub fn search_traces(
    index: &PartitionedIndex,
    f: &SpanFields,
    q: &SpanQuery,
) -> Result<TracesResponse, SearchError> {
    let started = std::time::Instant::now();
    let term = |field, v: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, v),
            IndexRecordOption::Basic,
        ))
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if let Some(s) = &q.service {
        clauses.push((Occur::Must, term(f.service, s)));
    }
    if let Some(o) = &q.operation {
        clauses.push((Occur::Must, term(f.operation, o)));
    }
    if q.min_duration_ns.is_some() || q.max_duration_ns.is_some() {
        clauses.push((
            Occur::Must,
            u64_range(f.duration, q.min_duration_ns, q.max_duration_ns),
        ));
    }
    if q.errors_only {
        clauses.push((
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_u64(f.status, StatusCode::Error as u64),
                IndexRecordOption::Basic,
            )),
        ));
    }
    for (k, v) in &q.attributes {
        clauses.push((Occur::Must, term(f.attr, &attr_term(k, v))));
    }
    clauses.push((
        Occur::Must,
        u64_range(f.start, Some(q.from_ns), Some(q.to_ns)),
    ));
    let query = BooleanQuery::new(clauses);
    let limit = q.limit.max(1);
    // Newest matching spans first; keep the first `limit` distinct traces.
    let mut newest: HashMap<(u64, u64), u64> = HashMap::new();
    for part in index.snapshot(q.from_ns, q.to_ns) {
        let searcher = part.reader.searcher();
        let top = TopDocs::with_limit(limit * 20).order_by_fast_field::<u64>("start", Order::Desc);
        for (start, addr) in searcher.search(&query, &top)? {
            let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
            let (Some(hi), Some(lo)) = (
                ff.u64("trace_hi")?.first(addr.doc_id),
                ff.u64("trace_lo")?.first(addr.doc_id),
            ) else {
                continue;
            };
            let e = newest.entry((hi, lo)).or_insert(0);
            *e = (*e).max(start.unwrap_or(0));
        }
    }
    let mut ids: Vec<(String, u64)> = newest
        .into_iter()
        .map(|((hi, lo), start)| (format!("{hi:016x}{lo:016x}"), start))
        .collect();
    ids.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ids.truncate(limit);
    let mut traces = Vec::with_capacity(ids.len());
    for (id, _) in ids {
        if let Some(t) = get_trace(index, f, &id)? {
            traces.push(summarise(&t));
        }
    }
    Ok(TracesResponse {
        traces,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// Summary of an assembled trace.
pub fn summarise(t: &TraceResponse) -> TraceSummary {
    let ids: BTreeSet<&str> = t.spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = t
        .spans
        .iter()
        .find(|s| s.parent_span_id.is_none())
        .or_else(|| {
            t.spans.iter().find(|s| {
                s.parent_span_id
                    .as_deref()
                    .is_some_and(|p| !ids.contains(p))
            })
        })
        .or_else(|| t.spans.first());
    let start = t.spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let end = t
        .spans
        .iter()
        .map(|s| s.start_unix_nano.saturating_add(s.duration_ns))
        .max()
        .unwrap_or(start);
    TraceSummary {
        trace_id: t.trace_id.clone(),
        root_service: root.map(|r| r.service.clone()).unwrap_or_default(),
        root_operation: root.map(|r| r.operation.clone()).unwrap_or_default(),
        start: rfc3339(start),
        start_unix_nano: start,
        duration_ns: end.saturating_sub(start),
        span_count: t.spans.len() as u64,
        error_count: t.spans.iter().filter(|s| s.status == "error").count() as u64,
        services: t.services.clone(),
        state: t.state.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use lookout_proto::otlp::resource::v1::Resource;
    use lookout_proto::otlp::trace::v1::ScopeSpans;

    use super::*;

    #[test]
    fn single_span_encoding_equals_prost() {
        let rs = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("svc".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "x".repeat(300),
                    ..Default::default()
                }],
                schema_url: "https://scope".into(),
            }],
            schema_url: "https://res".into(),
        };
        let mut res_head = Vec::new();
        prost::encoding::message::encode(1, rs.resource.as_ref().unwrap(), &mut res_head);
        prost::encoding::string::encode(3, &rs.schema_url, &mut res_head);
        let ss = &rs.scope_spans[0];
        let mut scope_head = Vec::new();
        prost::encoding::message::encode(1, ss.scope.as_ref().unwrap(), &mut scope_head);
        prost::encoding::string::encode(3, &ss.schema_url, &mut scope_head);
        let mut buf = Vec::new();
        encode_single_span(&mut buf, &res_head, &scope_head, &ss.spans[0]);
        assert_eq!(ResourceSpans::decode(buf.as_slice()).unwrap(), rs);
    }
}
