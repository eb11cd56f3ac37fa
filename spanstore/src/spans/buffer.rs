//! The in-memory side of a span block: rows appended as they arrive, column by column, with
//! strings, resources and scopes interned. [`SpanBuffer::finish`] sorts and encodes them.

use std::collections::HashMap;

use lookout_proto::otlp::common::v1::any_value::Value as V;
use lookout_proto::otlp::common::v1::AnyValue;
use lookout_proto::otlp::trace::v1::{ResourceSpans, Span};
use prost::Message;
use rustc_hash::FxBuildHasher;

use crate::codec::{put_varint, zigzag};

use super::ValueTag;

/// Strings interned by the buffer, with id 0 the empty string: their bytes one after the
/// other in one arena, and a table of ids found by hash (each string is held once).
#[derive(Debug)]
pub(super) struct Dict {
    ids: hashbrown::HashTable<u32>,
    arena: String,
    /// Per string the end of its bytes in `arena`.
    ends: Vec<u32>,
    pub(super) bytes: usize,
}

impl Default for Dict {
    fn default() -> Self {
        let mut d = Self {
            ids: hashbrown::HashTable::new(),
            arena: String::new(),
            ends: Vec::new(),
            bytes: 0,
        };
        d.id("");
        d
    }
}

impl Dict {
    pub(super) fn id(&mut self, s: &str) -> u32 {
        use std::hash::BuildHasher;
        let hash = FxBuildHasher.hash_one(s);
        let (arena, ends) = (&self.arena, &self.ends);
        let get = |id: u32| {
            let end = ends[id as usize] as usize;
            let start = if id == 0 {
                0
            } else {
                ends[id as usize - 1] as usize
            };
            &arena[start..end]
        };
        if let Some(&id) = self.ids.find(hash, |&id| get(id) == s) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.arena.push_str(s);
        self.ends.push(self.arena.len() as u32);
        let (arena, ends) = (&self.arena, &self.ends);
        self.ids.insert_unique(hash, id, |&id| {
            let end = ends[id as usize] as usize;
            let start = if id == 0 {
                0
            } else {
                ends[id as usize - 1] as usize
            };
            FxBuildHasher.hash_one(&arena[start..end])
        });
        self.bytes += s.len() + 16;
        id
    }

    /// String `id`.
    pub(super) fn get(&self, id: usize) -> Option<&str> {
        let end = *self.ends.get(id)? as usize;
        let start = if id == 0 {
            0
        } else {
            self.ends[id - 1] as usize
        };
        self.arena.get(start..end)
    }

    /// Strings held.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Every string, by id.
    pub(super) fn strings(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

/// Resources or scopes, each kept once as its encoded bytes and schema URL.
#[derive(Debug, Default)]
pub(super) struct Table {
    ids: HashMap<(Vec<u8>, String), u32, FxBuildHasher>,
    pub(super) entries: Vec<(Vec<u8>, String)>,
    pub(super) bytes: usize,
}

impl Table {
    fn id(&mut self, encoded: Vec<u8>, schema_url: &str) -> u32 {
        let key = (encoded, schema_url.to_string());
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.entries.len() as u32;
        self.bytes += 2 * (key.0.len() + key.1.len()) + 96;
        self.entries.push(key.clone());
        self.ids.insert(key, id);
        id
    }
}

/// A resource or scope as stored: empty when absent, else 1 and its encoding (so that an
/// empty one and a missing one stay apart).
fn present<M: Message>(m: Option<&M>) -> Vec<u8> {
    m.map_or_else(Vec::new, |m| {
        let mut v = Vec::with_capacity(1 + m.encoded_len());
        v.push(1);
        m.encode_raw(&mut v);
        v
    })
}

/// What a buffer holds, for cutting blocks and accounting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Rows.
    pub rows: usize,
    /// Approximate heap bytes.
    pub bytes: usize,
    /// Earliest span start, Unix ns (`u64::MAX` when empty).
    pub min_start: u64,
    /// Latest span start, Unix ns.
    pub max_start: u64,
    /// Spans refused for ids of the wrong length (the receivers' validation refuses them
    /// first; counted here so that none is dropped unseen).
    pub refused: u64,
    /// Spans not kept because their trace already held `max_trace_bytes` in this buffer.
    pub too_large: u64,
}

/// Spans collected for one block, column by column.
#[derive(Debug)]
pub struct SpanBuffer {
    pub(super) dict: Dict,
    pub(super) resources: Table,
    pub(super) scopes: Table,
    pub(super) trace_ids: Vec<[u8; 16]>,
    pub(super) span_ids: Vec<[u8; 8]>,
    /// All zero: no parent.
    pub(super) parents: Vec<[u8; 8]>,
    pub(super) starts: Vec<u64>,
    pub(super) ends: Vec<u64>,
    pub(super) names: Vec<u32>,
    pub(super) kinds: Vec<i32>,
    /// 0 absent, else 1 + zigzag(code).
    pub(super) statuses: Vec<u64>,
    pub(super) status_messages: Vec<u32>,
    pub(super) resource_ids: Vec<u32>,
    pub(super) scope_ids: Vec<u32>,
    /// Per row the end of its attributes in `attr_keys` (and values in `attr_value_ends`).
    pub(super) attr_ends: Vec<u32>,
    pub(super) attr_keys: Vec<u32>,
    /// Encoded values of all attributes, one after the other.
    pub(super) attr_values: Vec<u8>,
    /// Per attribute the end of its value in `attr_values`.
    pub(super) attr_value_ends: Vec<u32>,
    /// Per row the end of its extras in `extras`.
    pub(super) extra_ends: Vec<u32>,
    pub(super) extras: Vec<u8>,
    stats: BufferStats,
    /// Bytes each trace holds here, when a cap is set.
    trace_bytes: HashMap<[u8; 16], u64, FxBuildHasher>,
    max_trace_bytes: u64,
}

impl Default for SpanBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes a row takes in the fixed-size columns.
const ROW_BYTES: usize = 16 + 8 + 8 + 8 + 8 + 4 + 4 + 8 + 4 + 4 + 4 + 4 + 4;

impl SpanBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self {
            dict: Dict::default(),
            resources: Table::default(),
            scopes: Table::default(),
            trace_ids: Vec::new(),
            span_ids: Vec::new(),
            parents: Vec::new(),
            starts: Vec::new(),
            ends: Vec::new(),
            names: Vec::new(),
            kinds: Vec::new(),
            statuses: Vec::new(),
            status_messages: Vec::new(),
            resource_ids: Vec::new(),
            scope_ids: Vec::new(),
            attr_ends: Vec::new(),
            attr_keys: Vec::new(),
            attr_values: Vec::new(),
            attr_value_ends: Vec::new(),
            extra_ends: Vec::new(),
            extras: Vec::new(),
            trace_bytes: HashMap::default(),
            max_trace_bytes: u64::MAX,
            stats: BufferStats {
                min_start: u64::MAX,
                ..BufferStats::default()
            },
        }
    }

    /// Rows, memory and time range of what the buffer holds.
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            bytes: self.dict.bytes
                + self.resources.bytes
                + self.scopes.bytes
                + self.trace_ids.len() * ROW_BYTES
                + self.attr_keys.len() * 8
                + self.attr_values.len()
                + self.extras.len()
                + self.trace_bytes.len() * 32,
            ..self.stats
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.trace_ids.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.trace_ids.is_empty()
    }

    /// Keep at most about `bytes` of any one trace (its spans past it are counted in
    /// [`BufferStats::too_large`] and not kept); `u64::MAX` for no cap.
    pub fn set_max_trace_bytes(&mut self, bytes: u64) {
        self.max_trace_bytes = bytes;
    }

    /// Add every span of `rs`.
    pub fn push_resource_spans(&mut self, rs: &ResourceSpans) {
        let res_id = self
            .resources
            .id(present(rs.resource.as_ref()), &rs.schema_url);
        for ss in &rs.scope_spans {
            let scope_id = self.scopes.id(present(ss.scope.as_ref()), &ss.schema_url);
            for span in &ss.spans {
                self.push_span(res_id, scope_id, span);
            }
        }
    }

    /// Add spans read back from blocks (compaction), each shared resource and scope
    /// interned once.
    pub fn push_stored(&mut self, spans: &[super::StoredSpan]) {
        let mut resources: HashMap<usize, u32, FxBuildHasher> = HashMap::default();
        let mut scopes: HashMap<usize, u32, FxBuildHasher> = HashMap::default();
        for s in spans {
            let key = std::sync::Arc::as_ptr(&s.resource) as usize;
            let res_id = match resources.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self
                        .resources
                        .id(present(s.resource.value.as_ref()), &s.resource.schema_url);
                    resources.insert(key, id);
                    id
                }
            };
            let key = std::sync::Arc::as_ptr(&s.scope) as usize;
            let scope_id = match scopes.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self
                        .scopes
                        .id(present(s.scope.value.as_ref()), &s.scope.schema_url);
                    scopes.insert(key, id);
                    id
                }
            };
            self.push_span(res_id, scope_id, &s.span);
        }
    }

    /// Add one span of resource `res_id` and scope `scope_id` (table ids of this buffer).
    fn push_span(&mut self, res_id: u32, scope_id: u32, span: &Span) {
        let (Ok(trace_id), Ok(span_id)) = (
            <[u8; 16]>::try_from(span.trace_id.as_slice()),
            <[u8; 8]>::try_from(span.span_id.as_slice()),
        ) else {
            self.stats.refused += 1;
            return;
        };
        let parent = match span.parent_span_id.len() {
            0 => [0; 8],
            8 => <[u8; 8]>::try_from(span.parent_span_id.as_slice()).unwrap_or([0; 8]),
            _ => {
                self.stats.refused += 1;
                return;
            }
        };
        let capped = self.max_trace_bytes != u64::MAX;
        if capped
            && self
                .trace_bytes
                .get(&trace_id)
                .is_some_and(|&b| b >= self.max_trace_bytes)
        {
            self.stats.too_large += 1;
            return;
        }
        // What the span adds to the block, about: its columns and the strings it adds
        // to the dictionary (a string the buffer holds already costs its id only).
        let before =
            self.attr_values.len() + self.extras.len() + self.attr_keys.len() * 4 + self.dict.bytes;
        self.trace_ids.push(trace_id);
        self.span_ids.push(span_id);
        self.parents.push(parent);
        self.starts.push(span.start_time_unix_nano);
        self.ends.push(span.end_time_unix_nano);
        let name = self.dict.id(&span.name);
        self.names.push(name);
        self.kinds.push(span.kind);
        let (status, message) = match &span.status {
            None => (0, 0),
            Some(s) => (1 + zigzag(i64::from(s.code)), self.dict.id(&s.message)),
        };
        self.statuses.push(status);
        self.status_messages.push(message);
        self.resource_ids.push(res_id);
        self.scope_ids.push(scope_id);
        // Keys given as profile dictionary indices (not meant for spans) keep the whole
        // list in the extras, as received.
        let strindex = span.attributes.iter().any(|kv| kv.key_strindex != 0);
        for kv in span.attributes.iter().filter(|_| !strindex) {
            let key = self.dict.id(&kv.key);
            self.attr_keys.push(key);
            self.push_value(kv.value.as_ref());
            self.attr_value_ends.push(self.attr_values.len() as u32);
        }
        self.attr_ends.push(self.attr_keys.len() as u32);
        self.push_extras(span, strindex);
        self.extra_ends.push(self.extras.len() as u32);
        if capped {
            let after = self.attr_values.len()
                + self.extras.len()
                + self.attr_keys.len() * 4
                + self.dict.bytes;
            let grown = (after - before + ROW_BYTES) as u64;
            *self.trace_bytes.entry(trace_id).or_default() += grown;
        }
        self.stats.rows += 1;
        self.stats.min_start = self.stats.min_start.min(span.start_time_unix_nano);
        self.stats.max_start = self.stats.max_start.max(span.start_time_unix_nano);
    }

    fn push_value(&mut self, v: Option<&AnyValue>) {
        let out = &mut self.attr_values;
        let Some(v) = v else {
            out.push(ValueTag::Absent as u8);
            return;
        };
        match &v.value {
            None => out.push(ValueTag::Empty as u8),
            Some(V::StringValue(s)) => {
                let id = self.dict.id(s);
                let out = &mut self.attr_values;
                out.push(ValueTag::Str as u8);
                put_varint(out, u64::from(id));
            }
            Some(V::BoolValue(b)) => out.push(if *b {
                ValueTag::True as u8
            } else {
                ValueTag::False as u8
            }),
            Some(V::IntValue(i)) => {
                out.push(ValueTag::Int as u8);
                put_varint(out, zigzag(*i));
            }
            Some(V::DoubleValue(d)) => {
                out.push(ValueTag::Double as u8);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
            Some(_) => {
                out.push(ValueTag::Other as u8);
                put_varint(out, v.encoded_len() as u64);
                v.encode_raw(out);
            }
        }
    }

    /// The fields that are rarely set, as an encoded `Span` holding only them.
    fn push_extras(&mut self, span: &Span, with_attributes: bool) {
        let rare = with_attributes
            || !span.trace_state.is_empty()
            || span.flags != 0
            || span.dropped_attributes_count != 0
            || !span.events.is_empty()
            || span.dropped_events_count != 0
            || !span.links.is_empty()
            || span.dropped_links_count != 0;
        if !rare {
            return;
        }
        let extras = Span {
            trace_state: span.trace_state.clone(),
            flags: span.flags,
            dropped_attributes_count: span.dropped_attributes_count,
            events: span.events.clone(),
            dropped_events_count: span.dropped_events_count,
            links: span.links.clone(),
            dropped_links_count: span.dropped_links_count,
            attributes: if with_attributes {
                span.attributes.clone()
            } else {
                Vec::new()
            },
            ..Span::default()
        };
        extras.encode_raw(&mut self.extras);
    }

    /// The range of row `row`'s attributes in the attribute columns.
    pub(super) fn attr_range(&self, row: usize) -> std::ops::Range<usize> {
        let start = if row == 0 {
            0
        } else {
            self.attr_ends[row - 1] as usize
        };
        start..self.attr_ends[row] as usize
    }

    /// The encoded value of attribute `i`.
    pub(super) fn attr_value(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.attr_value_ends[i - 1] as usize
        };
        &self.attr_values[start..self.attr_value_ends[i] as usize]
    }

    /// Row `row`'s encoded extras (empty for most).
    pub(super) fn extras_of(&self, row: usize) -> &[u8] {
        let start = if row == 0 {
            0
        } else {
            self.extra_ends[row - 1] as usize
        };
        &self.extras[start..self.extra_ends[row] as usize]
    }
}
