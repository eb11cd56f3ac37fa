//! Trace summaries as releases before the span store kept them, read until retention
//! removes them: a tantivy index (`<data>/traces/`) of one document per trace *version*;
//! searches keep only the newest version of each trace.
//!
//! Nothing writes this format any more but [`LegacyTraceStore::add`], kept so that upgrade
//! tests can write a data directory as those releases did.

use std::collections::{BTreeSet, HashMap};

use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value as _, FAST, INDEXED, STORED, STRING,
};
use tantivy::{DocAddress, IndexWriter, Order, Searcher, TantivyDocument, Term};

use super::super::error::SearchError;
use super::super::handle::{IndexSchema, StoreHandle};
use super::super::partition::{Lookup, PartitionMeta, PartitionedIndex, TantivyWriter};
use super::super::traces::{halves, Summary, TraceQuery, TraceState};
use lookout_ingest::Signal;

/// Hash of an attribute `KEY=VALUE` as the trace index of earlier releases stored it
/// (FNV-1a of `KEY\0VALUE`).
pub fn attr_hash(key: &str, value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(std::iter::once(0)).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Separates service and operation in the combined term.
const SEP: char = '\u{1f}';

/// Fields of the trace schema.
#[derive(Clone)]
pub struct TraceFields {
    /// The schema.
    pub schema: Schema,
    trace_id: Field,
    trace_hi: Field,
    trace_lo: Field,
    version: Field,
    state: Field,
    start: Field,
    end: Field,
    duration: Field,
    span_count: Field,
    error_count: Field,
    late_spans: Field,
    root_service: Field,
    root_operation: Field,
    service: Field,
    operation: Field,
    service_operation: Field,
    attr: Field,
    max_lsn: Field,
}

impl Default for TraceFields {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceFields {
    /// Build the schema.
    pub fn new() -> Self {
        let mut b = Schema::builder();
        let trace_id = b.add_bytes_field("trace_id", INDEXED | STORED);
        let trace_hi = b.add_u64_field("trace_hi", FAST);
        let trace_lo = b.add_u64_field("trace_lo", FAST);
        let version = b.add_u64_field("version", FAST | STORED);
        let state = b.add_u64_field("state", STORED);
        // Ranges on start and duration run on the fast fields; no terms needed.
        let start = b.add_u64_field("start", FAST | STORED);
        let end = b.add_u64_field("end", STORED);
        let duration = b.add_u64_field("duration", FAST);
        let span_count = b.add_u64_field("span_count", STORED);
        let error_count = b.add_u64_field("error_count", INDEXED | STORED);
        let late_spans = b.add_u64_field("late_spans", STORED);
        let root_service = b.add_text_field("root_service", STORED);
        let root_operation = b.add_text_field("root_operation", STORED);
        let service = b.add_text_field("service", STRING | STORED);
        let operation = b.add_text_field("operation", STRING);
        let service_operation = b.add_text_field("service_operation", STRING | STORED);
        let attr = b.add_u64_field("attr", INDEXED | STORED);
        let max_lsn = b.add_u64_field("max_lsn", STORED);
        Self {
            schema: b.build(),
            trace_id,
            trace_hi,
            trace_lo,
            version,
            state,
            start,
            end,
            duration,
            span_count,
            error_count,
            late_spans,
            root_service,
            root_operation,
            service,
            operation,
            service_operation,
            attr,
            max_lsn,
        }
    }

    /// Add `doc` to `writer`, widening `meta`'s time range.
    fn add(
        &self,
        writer: &IndexWriter<TantivyDocument>,
        doc: &Summary,
        meta: &mut PartitionMeta,
    ) -> tantivy::Result<()> {
        let mut d = TantivyDocument::default();
        d.add_bytes(self.trace_id, &doc.trace_id[..]);
        let (hi, lo) = halves(&doc.trace_id);
        d.add_u64(self.trace_hi, hi);
        d.add_u64(self.trace_lo, lo);
        d.add_u64(self.version, doc.version);
        d.add_u64(self.state, doc.state as u64);
        d.add_u64(self.start, doc.start);
        d.add_u64(self.end, doc.end);
        d.add_u64(self.duration, doc.duration());
        d.add_u64(self.span_count, doc.span_count);
        d.add_u64(self.error_count, doc.error_count);
        d.add_u64(self.late_spans, doc.late_spans);
        d.add_text(self.root_service, &doc.root_service);
        d.add_text(self.root_operation, &doc.root_operation);
        for s in &doc.services {
            d.add_text(self.service, s);
        }
        let mut ops_only = BTreeSet::new();
        for (s, o) in &doc.ops {
            d.add_text(self.service_operation, format!("{s}{SEP}{o}"));
            ops_only.insert(o.as_str());
        }
        for o in ops_only {
            d.add_text(self.operation, o);
        }
        for a in &doc.attrs {
            d.add_u64(self.attr, *a);
        }
        d.add_u64(self.max_lsn, doc.max_lsn);
        meta.min_ts = meta.min_ts.min(doc.start);
        meta.max_ts = meta.max_ts.max(doc.start);
        writer.add_document(d)?;
        Ok(())
    }

    fn read(&self, doc: &TantivyDocument) -> Option<Summary> {
        let u = |f: Field| doc.get_first(f).and_then(|v| v.as_u64()).unwrap_or(0);
        let s = |f: Field| {
            doc.get_first(f)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let id: [u8; 16] = doc
            .get_first(self.trace_id)
            .and_then(|v| v.as_bytes())
            .and_then(|b| b.try_into().ok())?;
        Some(Summary {
            trace_id: id,
            version: u(self.version),
            state: TraceState::from_u64(u(self.state)),
            start: u(self.start),
            end: u(self.end),
            span_count: u(self.span_count),
            error_count: u(self.error_count),
            late_spans: u(self.late_spans),
            root_service: s(self.root_service),
            root_operation: s(self.root_operation),
            services: doc
                .get_all(self.service)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            ops: doc
                .get_all(self.service_operation)
                .filter_map(|v| v.as_str())
                .filter_map(|v| v.split_once(SEP))
                .map(|(s, o)| (s.to_string(), o.to_string()))
                .collect(),
            attrs: doc.get_all(self.attr).filter_map(|v| v.as_u64()).collect(),
            max_lsn: u(self.max_lsn),
        })
    }
}

/// The trace index of earlier releases: its partitions and schema.
pub type LegacyTraceStore = StoreHandle<TraceFields>;

impl IndexSchema for TraceFields {
    const SIGNAL: Signal = Signal::Traces;

    fn schema(&self) -> &Schema {
        &self.schema
    }
}

impl LegacyTraceStore {
    /// Add `doc` to an open writer of this index (as earlier releases did).
    pub fn add(&self, w: &mut TantivyWriter, doc: &Summary) -> tantivy::Result<()> {
        self.fields.add(&w.writer, doc, &mut w.meta)
    }

    /// The newest version of a trace stored in the partitions that can be read.
    pub fn latest(&self, trace_id: &[u8; 16]) -> Result<Lookup<Option<Summary>>, SearchError> {
        latest(&self.index, &self.fields, trace_id)
    }

    /// Newest traces matching `q`; see [`TraceQuery`].
    pub fn search(&self, q: &TraceQuery) -> Result<Vec<Summary>, SearchError> {
        search(&self.index, &self.fields, q)
    }

    /// Every service that took part in a trace stored in the partitions that can be read.
    pub fn services(&self) -> Result<Lookup<Vec<String>>, SearchError> {
        services(&self.index, &self.fields)
    }

    /// Every operation of `service` in traces stored in the partitions that can be read.
    pub fn operations(&self, service: &str) -> Result<Lookup<Vec<String>>, SearchError> {
        operations(&self.index, &self.fields, service)
    }
}

fn id_of(hi: u64, lo: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hi.to_be_bytes());
    id[8..].copy_from_slice(&lo.to_be_bytes());
    id
}

/// The newest version of a trace stored in the partitions that can be read.
fn latest(
    index: &PartitionedIndex,
    f: &TraceFields,
    trace_id: &[u8; 16],
) -> Result<Lookup<Option<Summary>>, SearchError> {
    let query = TermQuery::new(
        Term::from_field_bytes(f.trace_id, &trace_id[..]),
        IndexRecordOption::Basic,
    );
    let readable = index.readable();
    let mut best: Option<(u64, &Searcher, DocAddress)> = None;
    for searcher in &readable.found {
        for addr in searcher.search(&query, &DocSetCollector)? {
            let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
            let v = ff.u64("version")?.first(addr.doc_id).unwrap_or(0);
            if best.as_ref().is_none_or(|(b, _, _)| v > *b) {
                best = Some((v, searcher, addr));
            }
        }
    }
    let doc = match best {
        Some((_, searcher, addr)) => f.read(&searcher.doc::<TantivyDocument>(addr)?),
        None => None,
    };
    Ok(readable.map(|_| doc))
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

/// Newest traces matching `q` (by trace start, newest first); only the newest version of
/// each trace counts.
fn search(
    index: &PartitionedIndex,
    f: &TraceFields,
    q: &TraceQuery,
) -> Result<Vec<Summary>, SearchError> {
    let term = |field, v: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, v),
            IndexRecordOption::Basic,
        ))
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    match (&q.service, &q.operation) {
        (Some(s), Some(o)) => clauses.push((
            Occur::Must,
            term(f.service_operation, &format!("{s}{SEP}{o}")),
        )),
        (Some(s), None) => clauses.push((Occur::Must, term(f.service, s))),
        (None, Some(o)) => clauses.push((Occur::Must, term(f.operation, o))),
        (None, None) => {}
    }
    if q.min_duration_ns.is_some() || q.max_duration_ns.is_some() {
        clauses.push((
            Occur::Must,
            u64_range(f.duration, q.min_duration_ns, q.max_duration_ns),
        ));
    }
    if q.errors_only {
        clauses.push((Occur::Must, u64_range(f.error_count, Some(1), None)));
    }
    for (k, v) in &q.attributes {
        clauses.push((
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_u64(f.attr, attr_hash(k, v)),
                IndexRecordOption::Basic,
            )),
        ));
    }
    clauses.push((
        Occur::Must,
        u64_range(f.start, Some(q.from_ns), Some(q.to_ns)),
    ));
    let query = BooleanQuery::new(clauses);
    let limit = q.limit.max(1);
    // Matching versions, newest trace start first; a trace's older versions may match
    // where its newest does not, so each candidate is checked against its newest version.
    let mut matched: HashMap<[u8; 16], (u64, u64)> = HashMap::new();
    for part in index.snapshot(q.from_ns, q.to_ns) {
        let searcher = part.searcher()?;
        let top = TopDocs::with_limit(limit.saturating_mul(4).saturating_add(16))
            .order_by_fast_field::<u64>("start", Order::Desc);
        for (start, addr) in searcher.search(&query, &top)? {
            let ff = searcher.segment_reader(addr.segment_ord).fast_fields();
            let (Some(hi), Some(lo), Some(v)) = (
                ff.u64("trace_hi")?.first(addr.doc_id),
                ff.u64("trace_lo")?.first(addr.doc_id),
                ff.u64("version")?.first(addr.doc_id),
            ) else {
                continue;
            };
            let e = matched.entry(id_of(hi, lo)).or_insert((0, 0));
            if v > e.0 {
                *e = (v, start.unwrap_or(0));
            }
        }
    }
    let mut ids: Vec<([u8; 16], u64, u64)> =
        matched.into_iter().map(|(id, (v, s))| (id, v, s)).collect();
    ids.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::with_capacity(limit.min(ids.len()));
    for (id, version, _) in ids {
        if out.len() >= limit {
            break;
        }
        if let Some(doc) = latest(index, f, &id)?.found {
            if doc.version == version {
                out.push(doc);
            }
        }
    }
    Ok(out)
}

/// Every service that took part in a trace stored in the partitions that can be read.
fn services(index: &PartitionedIndex, f: &TraceFields) -> Result<Lookup<Vec<String>>, SearchError> {
    let readable = index.readable();
    let mut all = BTreeSet::new();
    for searcher in &readable.found {
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(f.service)?;
            let mut terms = inv.terms().stream().map_err(tantivy::TantivyError::from)?;
            while terms.advance() {
                if let Ok(s) = std::str::from_utf8(terms.key()) {
                    all.insert(s.to_string());
                }
            }
        }
    }
    Ok(readable.map(|_| all.into_iter().collect()))
}

/// Every operation of `service` in traces stored in the partitions that can be read.
fn operations(
    index: &PartitionedIndex,
    f: &TraceFields,
    service: &str,
) -> Result<Lookup<Vec<String>>, SearchError> {
    let prefix = format!("{service}{SEP}");
    let readable = index.readable();
    let mut all = BTreeSet::new();
    for searcher in &readable.found {
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(f.service_operation)?;
            let mut terms = inv
                .terms()
                .range()
                .ge(prefix.as_bytes())
                .into_stream()
                .map_err(tantivy::TantivyError::from)?;
            while terms.advance() {
                let Some(op) = terms.key().strip_prefix(prefix.as_bytes()) else {
                    break;
                };
                if let Ok(s) = std::str::from_utf8(op) {
                    all.insert(s.to_string());
                }
            }
        }
    }
    Ok(readable.map(|_| all.into_iter().collect()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lookout_ingest::signal::Signal;

    fn doc(id: u8, version: u64, dur_ms: u64, errors: u64) -> Summary {
        Summary {
            trace_id: [id; 16],
            version,
            state: TraceState::Complete,
            start: 1_700_000_000_000_000_000 + u64::from(id) * 1_000_000,
            end: 1_700_000_000_000_000_000 + u64::from(id) * 1_000_000 + dur_ms * 1_000_000,
            span_count: 3,
            error_count: errors,
            late_spans: 0,
            root_service: "frontend".into(),
            root_operation: "GET /".into(),
            services: vec!["frontend".into(), "checkout".into()],
            ops: vec![
                ("frontend".into(), "GET /".into()),
                ("checkout".into(), "pay".into()),
            ],
            attrs: vec![attr_hash("user", "42")],
            max_lsn: 7,
        }
    }

    #[test]
    fn newest_version_wins_and_filters_apply_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = TraceFields::new();
        let idx =
            PartitionedIndex::open(dir.path(), Signal::Traces, f.schema.clone(), 3600).unwrap();
        let (part, mut w) = idx.writer(0, 15_000_000, 1).unwrap();
        let mut meta = PartitionMeta::default();
        f.add(&w, &doc(1, 1, 50, 0), &mut meta).unwrap();
        // Version 2 of trace 1 grew past 100 ms and got an error.
        let mut v2 = doc(1, 2, 150, 1);
        v2.state = TraceState::UpdatedLate;
        f.add(&w, &v2, &mut meta).unwrap();
        f.add(&w, &doc(2, 1, 20, 0), &mut meta).unwrap();
        idx.commit(&part, &mut w, meta).unwrap();

        let all = TraceQuery {
            to_ns: u64::MAX,
            limit: 10,
            ..Default::default()
        };
        let got = search(&idx, &f, &all).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].trace_id, [2; 16]);
        assert_eq!(got[1].version, 2);
        // Only version 1 of trace 1 is under 100 ms: trace 1 must not match.
        let short = TraceQuery {
            max_duration_ns: Some(100_000_000),
            ..all.clone()
        };
        let got = search(&idx, &f, &short).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].trace_id, [2; 16]);
        let errs = TraceQuery {
            errors_only: true,
            ..all.clone()
        };
        assert_eq!(search(&idx, &f, &errs).unwrap()[0].trace_id, [1; 16]);
        let attr = TraceQuery {
            attributes: vec![("user".into(), "42".into())],
            service: Some("checkout".into()),
            operation: Some("pay".into()),
            ..all.clone()
        };
        assert_eq!(search(&idx, &f, &attr).unwrap().len(), 2);
        let none = TraceQuery {
            attributes: vec![("user".into(), "43".into())],
            ..all
        };
        assert!(search(&idx, &f, &none).unwrap().is_empty());

        let l = latest(&idx, &f, &[1; 16]).unwrap().found.unwrap();
        assert_eq!(l, v2);
        assert_eq!(
            services(&idx, &f).unwrap().found,
            vec!["checkout", "frontend"]
        );
        assert_eq!(operations(&idx, &f, "checkout").unwrap().found, vec!["pay"]);
    }
}
