//! The log index: one document per log record; full-text body, attributes queryable as
//! `attributes.KEY`, resource attributes as `resource.KEY`.

use std::collections::BTreeMap;
use std::sync::Arc;

use lookout_proto::api::{LogEntry, LogsResponse};
use lookout_proto::otlp::logs::v1::LogRecord;
use serde_json::{Map, Value};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    BooleanQuery, EnableScoring, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, JsonObjectOptions, OwnedValue, Schema, TextFieldIndexing,
    TextOptions, Value as _, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{Order, TantivyDocument, Term};

use super::error::SearchError;
use super::handle::{IndexSchema, StoreHandle};
use super::indexer::DocMapper;
use super::partition::{PartitionedIndex, TantivyWriter};
use super::writer::{WriteError, Written};
use crate::services::Directory;
use lookout_ingest::clock::now_unix_nano;
use lookout_ingest::values::{
    attrs_to_map, hex_id, resource_attributes, rfc3339, service_name, to_text,
};
use lookout_ingest::{Batch, Signal};

/// Fields of the log schema.
#[derive(Clone)]
pub struct LogFields {
    /// The schema.
    pub schema: Schema,
    timestamp: Field,
    service: Field,
    severity: Field,
    severity_number: Field,
    severity_text: Field,
    body: Field,
    attributes: Field,
    resource: Field,
    trace_id: Field,
    span_id: Field,
}

impl LogFields {
    /// Build the schema.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let raw_json = JsonObjectOptions::default()
            .set_stored()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_index_option(IndexRecordOption::Basic),
            )
            .set_expand_dots_enabled();
        let body_opts = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let timestamp = b.add_u64_field("timestamp", INDEXED | FAST | STORED);
        let service = b.add_text_field("service", STRING | STORED | FAST);
        let severity = b.add_text_field("severity", STRING | STORED);
        let severity_number = b.add_u64_field("severity_number", INDEXED | FAST | STORED);
        let severity_text = b.add_text_field("severity_text", STORED);
        let body = b.add_text_field("body", body_opts);
        let attributes = b.add_json_field("attributes", raw_json.clone());
        let resource = b.add_json_field("resource", raw_json);
        let trace_id = b.add_text_field("trace_id", STRING | STORED);
        let span_id = b.add_text_field("span_id", STRING | STORED);
        Self {
            schema: b.build(),
            timestamp,
            service,
            severity,
            severity_number,
            severity_text,
            body,
            attributes,
            resource,
            trace_id,
            span_id,
        }
    }
}

impl Default for LogFields {
    fn default() -> Self {
        Self::new()
    }
}

/// Normalised severity name of an OTLP severity number.
pub fn severity_name(n: u32) -> &'static str {
    match n {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unspecified",
    }
}

/// Lowest severity number of a level name (`info` → 9); accepts common aliases.
pub fn severity_floor(name: &str) -> Option<u32> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "information" | "notice" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" | "emergency" | "alert" => 21,
        _ => return None,
    })
}

/// Adds log records to the index.
pub struct LogMapper {
    f: LogFields,
    services: Option<Arc<Directory>>,
}

impl LogMapper {
    /// A mapper for `fields`.
    pub fn new(f: LogFields) -> Self {
        Self { f, services: None }
    }

    /// Also tell `services` which services sent logs.
    pub fn telling(mut self, services: Arc<Directory>) -> Self {
        self.services = Some(services);
        self
    }
}

fn json_object(map: Map<String, Value>) -> OwnedValue {
    let obj: BTreeMap<String, OwnedValue> = map
        .into_iter()
        .map(|(k, v)| (k, OwnedValue::from(v)))
        .collect();
    OwnedValue::Object(obj.into_iter().collect())
}

impl DocMapper<PartitionedIndex> for LogMapper {
    fn add(&mut self, batch: &Batch, w: &mut TantivyWriter) -> Result<Written, WriteError> {
        let Batch::Logs(req) = batch else {
            return Ok(Written::default());
        };
        let (writer, meta) = (&w.writer, &mut w.meta);
        let f = &self.f;
        let (mut docs, mut bytes) = (0u64, 0u64);
        if let Some(dir) = &self.services {
            let names: Vec<String> = req
                .resource_logs
                .iter()
                .map(|rl| service_name(resource_attributes(rl.resource.as_ref())))
                .collect();
            dir.saw_all(
                Signal::Logs,
                names.iter().map(String::as_str),
                now_unix_nano() / 1_000_000_000,
            );
        }
        for rl in &req.resource_logs {
            let res_attrs = resource_attributes(rl.resource.as_ref());
            let service = service_name(res_attrs);
            let resource = attrs_to_map(res_attrs);
            for sl in &rl.scope_logs {
                for log in &sl.log_records {
                    let mut doc = TantivyDocument::default();
                    let ts = log.time_unix_nano;
                    meta.min_ts = meta.min_ts.min(ts);
                    meta.max_ts = meta.max_ts.max(ts);
                    let number = effective_severity(log);
                    let body = log.body.as_ref().map(to_text).unwrap_or_default();
                    bytes += body.len() as u64 + 64;
                    doc.add_u64(f.timestamp, ts);
                    doc.add_text(f.service, &service);
                    doc.add_text(f.severity, severity_name(number));
                    doc.add_u64(f.severity_number, u64::from(number));
                    if !log.severity_text.is_empty() {
                        doc.add_text(f.severity_text, &log.severity_text);
                    }
                    doc.add_text(f.body, &body);
                    if !log.attributes.is_empty() {
                        bytes += log.attributes.len() as u64 * 24;
                        doc.add_field_value(
                            f.attributes,
                            &json_object(attrs_to_map(&log.attributes)),
                        );
                    }
                    if !resource.is_empty() {
                        doc.add_field_value(f.resource, &json_object(resource.clone()));
                    }
                    if let Some(t) = hex_id(&log.trace_id) {
                        doc.add_text(f.trace_id, &t);
                    }
                    if let Some(s) = hex_id(&log.span_id) {
                        doc.add_text(f.span_id, &s);
                    }
                    writer.add_document(doc)?;
                    docs += 1;
                }
            }
        }
        Ok(Written { docs, bytes })
    }
}

fn effective_severity(log: &LogRecord) -> u32 {
    match u32::try_from(log.severity_number) {
        Ok(n @ 1..=24) => n,
        _ => severity_floor(&log.severity_text).unwrap_or(0),
    }
}

/// A log search.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// tantivy query syntax over `body` and the named fields.
    pub q: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this severity number and above.
    pub min_severity: Option<u32>,
    /// Event time range, Unix nanoseconds, inclusive.
    pub from_ns: u64,
    /// Event time range end.
    pub to_ns: u64,
    /// Most records returned.
    pub limit: usize,
}

/// The log index: its partitions and schema.
pub type LogStore = StoreHandle<LogFields>;

impl IndexSchema for LogFields {
    const SIGNAL: Signal = Signal::Logs;

    fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl LogStore {
    /// What turns log batches into documents of this index.
    pub fn mapper(&self) -> LogMapper {
        LogMapper::new(self.fields.clone())
    }

    /// Search the logs.
    pub fn search(&self, q: &LogQuery) -> Result<LogsResponse, SearchError> {
        search(&self.index, &self.fields, q)
    }
}

/// Search the log index.
fn search(
    index: &PartitionedIndex,
    f: &LogFields,
    q: &LogQuery,
) -> Result<LogsResponse, SearchError> {
    let started = std::time::Instant::now();
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if let Some(text) =
        q.q.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "*")
    {
        // tantivy ends a JSON path in a term with a NUL byte: its query parser panics on
        // a NUL inside `attributes.KEY` instead of refusing it.
        if text.contains('\0') {
            return Err(SearchError::BadQuery(format!("NUL character in {text:?}")));
        }
        let mut parser =
            QueryParser::new(f.schema.clone(), vec![f.body], TokenizerManager::default());
        parser.set_conjunction_by_default();
        let parsed = parser
            .parse_query(text)
            .map_err(|e| SearchError::BadQuery(format!("{e} in {text:?}")))?;
        // Some queries parse but cannot run on this schema (a range over an attribute, a
        // `field:*` on a field that is not fast): building their weight fails, and that is
        // the query's fault (400), not the index's (500).
        parsed
            .weight(EnableScoring::disabled_from_schema(&f.schema))
            .map_err(|e| SearchError::BadQuery(format!("{e} in {text:?}")))?;
        clauses.push((Occur::Must, parsed));
    }
    if let Some(s) = &q.service {
        clauses.push((
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(f.service, s),
                IndexRecordOption::Basic,
            )),
        ));
    }
    if let Some(min) = q.min_severity {
        clauses.push((
            Occur::Must,
            Box::new(RangeQuery::new(
                std::ops::Bound::Included(Term::from_field_u64(f.severity_number, u64::from(min))),
                std::ops::Bound::Unbounded,
            )),
        ));
    }
    clauses.push((
        Occur::Must,
        Box::new(RangeQuery::new(
            std::ops::Bound::Included(Term::from_field_u64(f.timestamp, q.from_ns)),
            std::ops::Bound::Included(Term::from_field_u64(f.timestamp, q.to_ns)),
        )),
    ));
    let query = BooleanQuery::new(clauses);
    let limit = q.limit.max(1);
    let mut total = 0u64;
    let mut hits: Vec<(u64, usize, tantivy::DocAddress)> = Vec::new();
    let parts = index.snapshot(q.from_ns, q.to_ns);
    let searchers = parts
        .iter()
        .map(|p| p.searcher())
        .collect::<Result<Vec<_>, _>>()?;
    for (i, searcher) in searchers.iter().enumerate() {
        let top = TopDocs::with_limit(limit).order_by_fast_field::<u64>("timestamp", Order::Desc);
        let (count, docs) = searcher.search(&query, &(Count, top))?;
        total += count as u64;
        hits.extend(
            docs.into_iter()
                .map(|(ts, addr)| (ts.unwrap_or(0), i, addr)),
        );
    }
    // Newest first; within one timestamp, the later document (read later) first.
    hits.sort_by(|a, b| {
        (b.0, b.1, b.2.segment_ord, b.2.doc_id).cmp(&(a.0, a.1, a.2.segment_ord, a.2.doc_id))
    });
    hits.truncate(limit);
    let mut logs = Vec::with_capacity(hits.len());
    for (_, i, addr) in hits {
        let doc: TantivyDocument = searchers[i].doc(addr)?;
        logs.push(to_entry(f, &doc));
    }
    Ok(LogsResponse {
        total,
        logs,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        warnings: Vec::new(),
    })
}

fn to_entry(f: &LogFields, doc: &TantivyDocument) -> LogEntry {
    let text = |field| {
        doc.get_first(field)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let object = |field| -> Map<String, Value> {
        doc.get_first(field)
            .map(OwnedValue::from)
            .and_then(|v| serde_json::to_value(&v).ok())
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()
    };
    let ts = doc
        .get_first(f.timestamp)
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let n = doc
        .get_first(f.severity_number)
        .and_then(|v| v.as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let opt = |s: String| (!s.is_empty()).then_some(s);
    LogEntry {
        timestamp: rfc3339(ts),
        timestamp_unix_nano: ts,
        service: text(f.service),
        severity: text(f.severity),
        severity_number: n,
        severity_text: text(f.severity_text),
        body: text(f.body),
        attributes: object(f.attributes),
        resource: object(f.resource),
        trace_id: opt(text(f.trace_id)),
        span_id: opt(text(f.span_id)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use lookout_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
    use lookout_proto::otlp::logs::v1::{ResourceLogs, ScopeLogs};

    use super::*;
    use crate::store::partition::meta_for_writing;
    use lookout_ingest::signal::Signal;

    /// A log index with one record whose attribute `http.status_code` is 402.
    fn index(dir: &std::path::Path) -> (PartitionedIndex, LogFields) {
        let record = LogRecord {
            time_unix_nano: 1_000,
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("payment declined".into())),
            }),
            attributes: vec![KeyValue {
                key: "http.status_code".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(402)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        index_of(dir, vec![record])
    }

    /// A log index holding `records`, in one batch.
    fn index_of(dir: &std::path::Path, records: Vec<LogRecord>) -> (PartitionedIndex, LogFields) {
        let f = LogFields::new();
        let index = PartitionedIndex::open(dir, Signal::Logs, f.schema.clone(), 3600).unwrap();
        let batch = Batch::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let (part, writer) = index.writer(0, 15 << 20, 1).unwrap();
        let meta = meta_for_writing(&part);
        let mut w = TantivyWriter { part, writer, meta };
        LogMapper::new(f.clone()).add(&batch, &mut w).unwrap();
        index.commit(&w.part, &mut w.writer, w.meta).unwrap();
        (index, f)
    }

    fn query(q: &str) -> LogQuery {
        LogQuery {
            q: Some(q.into()),
            from_ns: 0,
            to_ns: u64::MAX,
            limit: 10,
            ..Default::default()
        }
    }

    /// Lines read in one poll of a tailed file may share a timestamp: newest first then
    /// means the line stored last first (before: `300, 298, 299, 296, 297`).
    #[test]
    fn equal_timestamps_come_back_in_reverse_order_of_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |i: u32| LogRecord {
            time_unix_nano: 5_000 + u64::from(i / 3),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("line {i}"))),
            }),
            ..Default::default()
        };
        let (index, f) = index_of(dir.path(), (0..9).map(rec).collect());
        let found = search(&index, &f, &query("line")).unwrap();
        let bodies: Vec<&str> = found.logs.iter().map(|l| l.body.as_str()).collect();
        let want: Vec<String> = (0..9).rev().map(|i| format!("line {i}")).collect();
        assert_eq!(bodies, want);
    }

    /// Found by the `log_query` fuzz target: queries that parse but whose weight cannot be
    /// built on the log schema failed the search with an index error (HTTP 500).
    #[test]
    fn unrunnable_query_is_a_bad_query_not_an_index_error() {
        let dir = tempfile::tempdir().unwrap();
        let (index, f) = index(dir.path());
        for q in ["attributes.http.status_code:[400 TO 499]", "trace_id:*"] {
            match search(&index, &f, &query(q)) {
                Err(SearchError::BadQuery(m)) => assert!(m.contains(q), "{m}"),
                other => panic!("{q}: expected a bad query, got {other:?}"),
            }
        }
        let ok = search(&index, &f, &query("payment")).unwrap();
        assert_eq!(ok.total, 1);
    }

    /// Found by the `log_query` fuzz target (`fuzz/regressions/log_query/nul-in-json-path`):
    /// a NUL byte in an attribute path made tantivy's query parser panic (HTTP 500 from a
    /// panicked query task).
    #[test]
    fn nul_in_attribute_path_is_a_bad_query_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (index, f) = index(dir.path());
        for q in ["attributes.\0:\0", "attributes.a\0b:x", "payment \0"] {
            assert!(
                matches!(search(&index, &f, &query(q)), Err(SearchError::BadQuery(_))),
                "{q:?}"
            );
        }
    }
}
