//! Spans as releases before the span store kept them, read until retention removes them:
//! a tantivy index (`<data>/spans/`) of one document per trace fragment (the spans of one
//! trace that arrived in one batch under one resource and scope), held as protobuf
//! (`ResourceSpans` with just those spans) and found by trace id.
//!
//! Nothing writes this format any more but [`LegacySpanMapper`], kept so that upgrade
//! tests can write a data directory as those releases did.

use lookout_proto::api::SpanView;
use lookout_proto::otlp::trace::v1::{ResourceSpans, Span};
use prost::Message;
use tantivy::collector::DocSetCollector;
use tantivy::query::TermQuery;
use tantivy::schema::{Field, IndexRecordOption, Schema, Value as _, INDEXED, STORED};
use tantivy::{TantivyDocument, Term};

use super::super::error::SearchError;
use super::super::handle::{IndexSchema, StoreHandle};
use super::super::indexer::DocMapper;
use super::super::partition::{Lookup, PartitionedIndex, TantivyWriter};
use super::super::spans::{span_view, MAX_TRACE_SPANS};
use super::super::writer::{WriteError, Written};
use lookout_ingest::{Batch, Signal};

/// Fields of the span schema.
#[derive(Clone)]
pub struct SpanFields {
    /// The schema.
    pub schema: Schema,
    trace_id: Field,
    payload: Field,
}

impl SpanFields {
    /// Build the schema.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let trace_id = b.add_bytes_field("trace_id", INDEXED);
        let payload = b.add_bytes_field("payload", STORED);
        Self {
            schema: b.build(),
            trace_id,
            payload,
        }
    }
}

impl Default for SpanFields {
    fn default() -> Self {
        Self::new()
    }
}

/// The span index of earlier releases: its partitions and schema.
pub type LegacySpanStore = StoreHandle<SpanFields>;

impl IndexSchema for SpanFields {
    const SIGNAL: Signal = Signal::Traces;

    fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl LegacySpanStore {
    /// What turns span batches into documents of this index as earlier releases did.
    pub fn mapper(&self) -> LegacySpanMapper {
        LegacySpanMapper::new(self.fields.clone())
    }

    /// Every stored span of `trace_id` in the partitions that can be read, as stored
    /// (unordered); empty when there is none.
    pub fn trace(&self, trace_id: &[u8; 16]) -> Result<Lookup<Vec<SpanView>>, SearchError> {
        get_spans(&self.index, &self.fields, trace_id)
    }
}

/// Adds spans to the index as earlier releases did (for upgrade tests).
pub struct LegacySpanMapper {
    f: SpanFields,
    buf: Vec<u8>,
    order: Vec<usize>,
}

impl LegacySpanMapper {
    /// A mapper for `fields`.
    pub fn new(f: SpanFields) -> Self {
        Self {
            f,
            buf: Vec::new(),
            order: Vec::new(),
        }
    }
}

impl DocMapper<PartitionedIndex> for LegacySpanMapper {
    fn add(&mut self, batch: &Batch, w: &mut TantivyWriter) -> Result<Written, WriteError> {
        let Batch::Traces(req) = batch else {
            return Ok(Written::default());
        };
        let (writer, meta) = (&w.writer, &mut w.meta);
        let f = &self.f;
        let (mut docs, mut bytes) = (0u64, 0u64);
        for rs in &req.resource_spans {
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
                // Spans of one trace become one document; sorting indices keeps it
                // allocation-light and leaves span order within a trace as sent.
                self.order.clear();
                self.order.extend(0..ss.spans.len());
                self.order
                    .sort_by(|&a, &b| ss.spans[a].trace_id.cmp(&ss.spans[b].trace_id));
                for run in self
                    .order
                    .chunk_by(|&a, &b| ss.spans[a].trace_id == ss.spans[b].trace_id)
                {
                    let mut doc = TantivyDocument::default();
                    for &i in run {
                        let start = ss.spans[i].start_time_unix_nano;
                        meta.min_ts = meta.min_ts.min(start);
                        meta.max_ts = meta.max_ts.max(start);
                    }
                    doc.add_bytes(f.trace_id, ss.spans[run[0]].trace_id.as_slice());
                    encode_fragment(
                        &mut self.buf,
                        &res_head,
                        &scope_head,
                        run.iter().map(|&i| &ss.spans[i]),
                    );
                    bytes += self.buf.len() as u64;
                    doc.add_bytes(f.payload, self.buf.as_slice());
                    writer.add_document(doc)?;
                    docs += 1;
                }
            }
        }
        Ok(Written { docs, bytes })
    }
}

/// Encode `ResourceSpans { resource, scope_spans: [ScopeSpans { scope, spans }] }` from the
/// pre-encoded resource and scope fields, without cloning anything.
fn encode_fragment<'a>(
    buf: &mut Vec<u8>,
    res_head: &[u8],
    scope_head: &[u8],
    spans: impl Iterator<Item = &'a Span> + Clone,
) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    buf.clear();
    buf.extend_from_slice(res_head);
    let spans_len: usize = spans
        .clone()
        .map(|s| {
            let l = s.encoded_len();
            key_len(2) + encoded_len_varint(l as u64) + l
        })
        .sum();
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint((scope_head.len() + spans_len) as u64, buf);
    buf.extend_from_slice(scope_head);
    for span in spans {
        prost::encoding::message::encode(2, span, buf);
    }
}

fn get_spans(
    index: &PartitionedIndex,
    f: &SpanFields,
    trace_id: &[u8; 16],
) -> Result<Lookup<Vec<SpanView>>, SearchError> {
    let query = TermQuery::new(
        Term::from_field_bytes(f.trace_id, &trace_id[..]),
        IndexRecordOption::Basic,
    );
    let readable = index.readable();
    let mut spans = Vec::new();
    for searcher in &readable.found {
        let addrs = searcher.search(&query, &DocSetCollector)?;
        for addr in addrs {
            if spans.len() >= MAX_TRACE_SPANS {
                break;
            }
            let doc: TantivyDocument = searcher.doc(addr)?;
            let Some(rs) = doc
                .get_first(f.payload)
                .and_then(|v| v.as_bytes())
                .and_then(|b| ResourceSpans::decode(b).ok())
            else {
                continue;
            };
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if spans.len() < MAX_TRACE_SPANS {
                        spans.push(span_view(rs.resource.as_ref(), span));
                    }
                }
            }
        }
    }
    Ok(readable.map(|_| spans))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use lookout_proto::otlp::resource::v1::Resource;
    use lookout_proto::otlp::trace::v1::ScopeSpans;

    use super::*;

    #[test]
    fn fragment_encoding_equals_prost() {
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
                spans: vec![
                    Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "x".repeat(300),
                        ..Default::default()
                    },
                    Span {
                        trace_id: vec![1; 16],
                        span_id: vec![3; 8],
                        name: "y".into(),
                        ..Default::default()
                    },
                ],
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
        encode_fragment(&mut buf, &res_head, &scope_head, ss.spans.iter());
        assert_eq!(ResourceSpans::decode(buf.as_slice()).unwrap(), rs);
    }
}
