//! The span store: spans in `lookout-spanstore`'s columnar blocks under
//! `<data>/spanstore/spans/`, written from the WAL through the one partition writer
//! ([`super::blocks`]), and found by trace id in the blocks and the head. Spans written by earlier releases (tantivy, `<data>/spans/`,
//! [`super::legacy`]) are read as well until retention removes them.

use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use lookout_ingest::values::{attrs_to_map, hex_id, resource_attributes, rfc3339, service_name};
use lookout_ingest::Batch;
use lookout_proto::api::{SpanEvent, SpanLink, SpanView};
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::Span;
use lookout_spanstore::store::Spans;

use super::blocks::{open_with_legacy, BlockPartitions, HeadWriter};
use super::error::SearchError;
use super::indexer::DocMapper;
use super::legacy::LegacySpanStore;
use super::partition::{Lookup, PartitionError};
use super::writer::{Partitions, WriteError, Written};

/// Most spans returned for one trace.
pub const MAX_TRACE_SPANS: usize = 100_000;

/// The spans of one WAL record, handed on by the span store once applied (to the trace
/// tracker).
pub struct SpanBatch {
    /// WAL sequence number of the record.
    pub lsn: u64,
    /// Whether the record comes from WAL replay at start-up.
    pub replay: bool,
    /// The spans.
    pub req: ExportTraceServiceRequest,
}

/// Adds spans to the head and hands each record on to the trace tracker.
pub struct SpanMapper {
    tracker: Option<SyncSender<SpanBatch>>,
    parts: Arc<BlockPartitions<Spans>>,
    max_trace_bytes: u64,
    /// When a dropped span was last logged.
    warned: Option<std::time::Instant>,
}

impl SpanMapper {
    fn dropped_too_large(&mut self, n: u64) {
        if let Some(m) = self.parts.metrics() {
            m.too_large.inc_by(n);
        }
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10))
        {
            self.warned = Some(std::time::Instant::now());
            tracing::warn!(
                spans = n,
                max_trace_bytes = self.max_trace_bytes,
                "spans of a trace past [spans] max_trace_bytes in one block were not stored"
            );
        }
    }
}

impl DocMapper<BlockPartitions<Spans>> for SpanMapper {
    fn add(&mut self, batch: &Batch, w: &mut HeadWriter<Spans>) -> Result<Written, WriteError> {
        let Batch::Traces(req) = batch else {
            return Ok(Written::default());
        };
        let mut spans = 0u64;
        let mut too_large = 0;
        for rs in &req.resource_spans {
            match w.store.append(rs, self.max_trace_bytes) {
                Some(n) => too_large += n,
                None => return Err(WriteError::Writer("the span store has no head open".into())),
            }
            spans += rs
                .scope_spans
                .iter()
                .map(|ss| ss.spans.len() as u64)
                .sum::<u64>();
        }
        if too_large > 0 {
            self.dropped_too_large(too_large);
        }
        Ok(Written {
            docs: spans,
            bytes: w.grown(),
        })
    }

    fn forward(&mut self, lsn: u64, replay: bool, batch: Batch) {
        let (Some(tx), Batch::Traces(req)) = (&self.tracker, batch) else {
            return;
        };
        if tx.send(SpanBatch { lsn, replay, req }).is_err() {
            tracing::error!("the trace tracker is gone; trace summaries stop updating");
            self.tracker = None;
        }
    }
}

/// The span store: blocks, and the partitions of earlier releases. Cheap to clone.
#[derive(Clone)]
pub struct SpanStore {
    parts: Arc<BlockPartitions<Spans>>,
    legacy: Option<LegacySpanStore>,
}

impl SpanStore {
    /// Open the span store of data directory `data`, partitions `width_secs` wide: blocks
    /// under `spanstore/spans/`, and the tantivy partitions of earlier releases under
    /// `spans/` when there are any.
    pub fn open(data: &Path, width_secs: i64) -> Result<Self, PartitionError> {
        let (parts, legacy) = open_with_legacy(data, "spans", "spans", width_secs)?;
        Ok(Self { parts, legacy })
    }

    /// The blocks as the partition writer writes them.
    pub fn partitions(&self) -> &Arc<BlockPartitions<Spans>> {
        &self.parts
    }

    /// The block store.
    pub fn blocks(&self) -> &Arc<lookout_spanstore::SpanStore> {
        self.parts.store()
    }

    /// Highest WAL sequence number held durably.
    pub fn checkpoint(&self) -> u64 {
        self.parts.checkpoint()
    }

    /// What adds span batches to the store, handing each record on to `tracker` when given.
    pub fn mapper(
        &self,
        tracker: Option<SyncSender<SpanBatch>>,
        max_trace_bytes: u64,
    ) -> SpanMapper {
        SpanMapper {
            tracker,
            parts: self.parts.clone(),
            max_trace_bytes,
            warned: None,
        }
    }

    /// Every stored span of `trace_id` that can be read (unordered), and the blocks and
    /// partitions that could not be; empty when there is none.
    pub fn trace(&self, trace_id: &[u8; 16]) -> Result<Lookup<Vec<SpanView>>, SearchError> {
        let found = self.parts.store().trace(trace_id);
        let mut spans: Vec<SpanView> = found
            .spans
            .iter()
            .take(MAX_TRACE_SPANS)
            .map(|s| span_view(s.resource.value.as_ref(), &s.span))
            .collect();
        let mut unreadable: Vec<PartitionError> = found
            .unreadable
            .into_iter()
            .map(PartitionError::Block)
            .collect();
        if let Some(legacy) = &self.legacy {
            let old = legacy.trace(trace_id)?;
            let room = MAX_TRACE_SPANS.saturating_sub(spans.len());
            spans.extend(old.found.into_iter().take(room));
            unreadable.extend(old.unreadable);
        }
        Ok(Lookup {
            found: spans,
            unreadable,
        })
    }
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

/// The API's view of `span` of `resource`.
pub fn span_view(resource: Option<&Resource>, span: &Span) -> SpanView {
    let res_attrs = resource_attributes(resource);
    SpanView {
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
    }
}
