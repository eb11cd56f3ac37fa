//! Trace summaries: one row per stored *version* of a trace's summary, written by the
//! trace tracker when a trace completes and again (a newer version) each time late spans
//! update it, in `lookout-spanstore`'s summary blocks under `<data>/spanstore/summaries/`.
//! Searches answer with the newest version of each trace; filters hold on the whole trace
//! (duration from the earliest start to the latest end, every service and operation,
//! attribute hashes of every span). Summaries written by earlier releases (tantivy,
//! `<data>/traces/`, [`super::legacy::LegacyTraceStore`]) are read as well until retention
//! removes them.

use std::path::Path;
use std::sync::Arc;

use lookout_ingest::values::{rfc3339, to_text};
use lookout_proto::api::TraceSummary;
use lookout_proto::otlp::common::v1::AnyValue;
use lookout_spanstore::summaries::{Summaries, SummaryQuery};
pub use lookout_spanstore::summaries::{Summary, TraceState};

use super::blocks::{open_with_legacy, BlockPartitions, HeadWriter};
use super::error::SearchError;
use super::legacy::LegacyTraceStore;
use super::partition::{Lookup, PartitionError};
use super::writer::{Partitions, WriteError, Written};

/// The search-result summary of `s`.
pub fn api_summary(s: &Summary) -> TraceSummary {
    let mut services = s.services.clone();
    services.sort();
    services.dedup();
    TraceSummary {
        trace_id: hex::encode(s.trace_id),
        root_service: s.root_service.clone(),
        root_operation: s.root_operation.clone(),
        start: rfc3339(s.start),
        start_unix_nano: s.start,
        duration_ns: s.duration(),
        span_count: s.span_count,
        error_count: s.error_count,
        services,
        state: s.state.as_str().to_string(),
    }
}

/// Hash of an attribute `KEY=VALUE` as stored in summary blocks and searched: XXH3-64 of
/// the value seeded with XXH3-64 of the key (stable across releases and platforms; part
/// of the block format).
pub fn attr_hash(key: &str, value: &str) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(value.as_bytes(), xxh3_64(key.as_bytes()))
}

/// [`attr_hash`] of `key` and the value's text ([`to_text`]), without building the text
/// for strings, integers and booleans (the common attribute values).
pub fn attr_value_hash(key: &str, value: Option<&AnyValue>) -> u64 {
    use lookout_proto::otlp::common::v1::any_value::Value as V;
    match value.and_then(|v| v.value.as_ref().map(|inner| (v, inner))) {
        None => attr_hash(key, ""),
        Some((_, V::StringValue(s))) => attr_hash(key, s),
        Some((_, V::IntValue(i))) => attr_hash(key, itoa::Buffer::new().format(*i)),
        Some((_, V::BoolValue(b))) => attr_hash(key, if *b { "true" } else { "false" }),
        Some((v, _)) => attr_hash(key, &to_text(v)),
    }
}

/// A 16-byte id as two big-endian halves.
pub fn halves(id: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&id[..8]);
    lo.copy_from_slice(&id[8..]);
    (u64::from_be_bytes(hi), u64::from_be_bytes(lo))
}

/// A trace search; every filter holds on the whole trace.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// A service taking part.
    pub service: Option<String>,
    /// An operation (of `service` when given).
    pub operation: Option<String>,
    /// Minimum trace duration, ns.
    pub min_duration_ns: Option<u64>,
    /// Maximum trace duration, ns.
    pub max_duration_ns: Option<u64>,
    /// Only traces with an error span.
    pub errors_only: bool,
    /// `(key, value)` attribute equalities, each on any span (or resource) of the trace.
    pub attributes: Vec<(String, String)>,
    /// Trace start range, Unix ns, inclusive.
    pub from_ns: u64,
    /// End of the start range.
    pub to_ns: u64,
    /// Most traces returned.
    pub limit: usize,
}

impl TraceQuery {
    fn summary_query(&self) -> SummaryQuery {
        SummaryQuery {
            service: self.service.clone(),
            operation: self.operation.clone(),
            min_duration_ns: self.min_duration_ns,
            max_duration_ns: self.max_duration_ns,
            errors_only: self.errors_only,
            attrs: self
                .attributes
                .iter()
                .map(|(k, v)| attr_hash(k, v))
                .collect(),
            from_ns: self.from_ns,
            to_ns: self.to_ns,
        }
    }
}

/// The trace summaries: blocks, and the index of earlier releases. Cheap to clone.
#[derive(Clone)]
pub struct TraceStore {
    parts: Arc<BlockPartitions<Summaries>>,
    legacy: Option<LegacyTraceStore>,
}

impl TraceStore {
    /// Open the summaries of data directory `data`, partitions `width_secs` wide: blocks
    /// under `spanstore/summaries/`, and the tantivy partitions of earlier releases under
    /// `traces/` when there are any.
    pub fn open(data: &Path, width_secs: i64) -> Result<Self, PartitionError> {
        let (parts, legacy) = open_with_legacy(data, "summaries", "traces", width_secs)?;
        Ok(Self { parts, legacy })
    }

    /// The blocks as the partition writer writes them.
    pub fn partitions(&self) -> &Arc<BlockPartitions<Summaries>> {
        &self.parts
    }

    /// Highest WAL sequence number held durably.
    pub fn checkpoint(&self) -> u64 {
        self.parts.checkpoint()
    }

    /// Add `doc` to the head `w` writes.
    pub fn add(
        &self,
        w: &mut HeadWriter<Summaries>,
        doc: Arc<Summary>,
    ) -> Result<Written, WriteError> {
        if w.store.with_head(|b| b.push(doc)).is_none() {
            return Err(WriteError::Writer(
                "the summary store has no head open".into(),
            ));
        }
        Ok(Written {
            docs: 1,
            bytes: w.grown(),
        })
    }

    /// The newest stored version of a trace, and the blocks and partitions that could not
    /// be read.
    pub fn latest(&self, trace_id: &[u8; 16]) -> Result<Lookup<Option<Summary>>, SearchError> {
        let found = self.parts.store().latest(trace_id);
        let mut unreadable: Vec<PartitionError> = found
            .unreadable
            .into_iter()
            .map(PartitionError::Block)
            .collect();
        let mut doc = found.found;
        if let Some(legacy) = &self.legacy {
            if doc.is_none() {
                let old = legacy.latest(trace_id)?;
                doc = old.found;
                unreadable.extend(old.unreadable);
            }
        }
        Ok(Lookup {
            found: doc,
            unreadable,
        })
    }

    /// Newest traces matching `q` (by trace start, newest first); only the newest version
    /// of each trace counts.
    pub fn search(&self, q: &TraceQuery) -> Result<Vec<Summary>, SearchError> {
        let limit = q.limit.max(1);
        let found = self.parts.store().search(&q.summary_query(), limit);
        for e in &found.unreadable {
            tracing::warn!(error = %e, "a summary block cannot be read; the search is answered without it");
        }
        let mut docs = found.found;
        if let Some(legacy) = &self.legacy {
            for old in legacy.search(q)? {
                // A trace updated since the upgrade has its newest version in the blocks.
                if self.parts.store().latest(&old.trace_id).found.is_none() {
                    docs.push(old);
                }
            }
            docs.sort_by(|a, b| b.start.cmp(&a.start).then(a.trace_id.cmp(&b.trace_id)));
            docs.truncate(limit);
        }
        Ok(docs)
    }

    /// Every service that took part in a stored trace.
    pub fn services(&self) -> Result<Lookup<Vec<String>>, SearchError> {
        let (mut all, damaged) = self.parts.store().services();
        let mut unreadable: Vec<PartitionError> =
            damaged.into_iter().map(PartitionError::Block).collect();
        if let Some(legacy) = &self.legacy {
            let old = legacy.services()?;
            all.extend(old.found);
            unreadable.extend(old.unreadable);
        }
        Ok(Lookup {
            found: all.into_iter().collect(),
            unreadable,
        })
    }

    /// Every operation of `service` in stored traces.
    pub fn operations(&self, service: &str) -> Result<Lookup<Vec<String>>, SearchError> {
        let (mut all, damaged) = self.parts.store().operations(service);
        let mut unreadable: Vec<PartitionError> =
            damaged.into_iter().map(PartitionError::Block).collect();
        if let Some(legacy) = &self.legacy {
            let old = legacy.operations(service)?;
            all.extend(old.found);
            unreadable.extend(old.unreadable);
        }
        Ok(Lookup {
            found: all.into_iter().collect(),
            unreadable,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn attribute_hashes_without_text_match_the_text_form() {
        use lookout_proto::otlp::common::v1::any_value::Value as V;
        use lookout_proto::otlp::common::v1::ArrayValue;
        let values = [
            None,
            Some(V::StringValue("GET /x".into())),
            Some(V::StringValue(String::new())),
            Some(V::IntValue(0)),
            Some(V::IntValue(-9_223_372_036_854_775_808)),
            Some(V::IntValue(500)),
            Some(V::BoolValue(true)),
            Some(V::BoolValue(false)),
            Some(V::DoubleValue(1.5)),
            Some(V::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(V::IntValue(1)),
                }],
            })),
        ];
        for v in values {
            let any = AnyValue { value: v };
            assert_eq!(
                attr_value_hash("k", Some(&any)),
                attr_hash("k", &to_text(&any)),
                "{any:?}"
            );
        }
        assert_eq!(attr_value_hash("k", None), attr_hash("k", ""));
        assert_eq!(
            attr_value_hash(
                "http.status_code",
                Some(&AnyValue {
                    value: Some(V::IntValue(500))
                })
            ),
            attr_hash("http.status_code", "500")
        );
    }
}
