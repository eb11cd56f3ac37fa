//! Reading span blocks: the footer and filter once, then only the sections and pages a
//! request needs. Every read is checked (see [`crate::block`]); a damaged block is an error
//! that names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lookout_proto::otlp::common::v1::any_value::Value as V;
use lookout_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{Span, Status};
use prost::Message;

use crate::block::{read_chunk, read_footer, BlockError, ChunkRef, Footer, Kind, Source};
use crate::bloom::{trace_hash, Bloom};
use crate::codec::{unzigzag, Cursor, Malformed};

use super::buffer::SpanBuffer;

use super::{Col, Section, ValueTag, COLUMNS};

/// A resource or scope as stored, with the schema URL it came with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableEntry<T> {
    /// The resource or scope.
    pub value: T,
    /// Its schema URL.
    pub schema_url: String,
}

/// A span read back, with its resource and scope (shared between the spans that have them).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// The resource; `value` is `None` when the span came without one.
    pub resource: Arc<TableEntry<Option<Resource>>>,
    /// The instrumentation scope; `value` is `None` when absent.
    pub scope: Arc<TableEntry<Option<InstrumentationScope>>>,
    /// The span, exactly as received.
    pub span: Span,
}

/// An open span block: its footer and trace filter, in memory.
#[derive(Debug, Clone)]
pub struct SpanBlock {
    path: PathBuf,
    footer: Footer,
    page_starts: Vec<u64>,
    filter: Bloom,
}

/// A section's bytes split into length-prefixed entries, kept raw until used.
struct Entries {
    raw: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Entries {
    /// `per_entry` length-prefixed fields per entry.
    fn parse(raw: Vec<u8>, per_entry: usize) -> Result<Self, Malformed> {
        let mut spans = Vec::new();
        {
            let mut c = Cursor::new(&raw);
            let n = c.count(per_entry)?;
            spans.reserve(n * per_entry);
            for _ in 0..n * per_entry {
                let len = c.count(1)?;
                let start = raw.len() - c.remaining();
                c.take(len)?;
                spans.push((start, len));
            }
            if !c.is_empty() {
                return Err(Malformed {
                    what: "bytes after the last entry",
                    at: raw.len() - c.remaining(),
                });
            }
        }
        Ok(Self { raw, spans })
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let (s, l) = self.spans[i];
        &self.raw[s..s + l]
    }
}

/// What rows refer to, decoded on first use.
struct Context<'a, S: ?Sized> {
    block: &'a SpanBlock,
    src: &'a S,
    dict: Entries,
    resources: Entries,
    scopes: Entries,
    resource_cache: TableCache<Resource>,
    scope_cache: TableCache<InstrumentationScope>,
}

impl SpanBlock {
    /// Open the block at `path`: read and check its footer and filter.
    pub fn open(path: &Path) -> Result<Self, BlockError> {
        let f = std::fs::File::open(path).map_err(|e| BlockError::new(path, e))?;
        Self::read(&f, path)
    }

    /// Read the block in `src`, named `path` in errors.
    pub fn read<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Self, BlockError> {
        let footer = read_footer(src, path)?;
        if footer.kind != Kind::Spans {
            return Err(BlockError::new(
                path,
                crate::block::BlockErrorKind::Malformed("not a span block".into()),
            ));
        }
        let mut block = Self {
            path: path.to_path_buf(),
            page_starts: footer.page_starts(),
            footer,
            filter: Bloom::with_capacity(0),
        };
        for p in &block.footer.pages {
            if p.columns.len() != COLUMNS {
                return Err(block.malformed(
                    "footer",
                    Malformed {
                        what: "page with a wrong number of columns",
                        at: 0,
                    },
                ));
            }
        }
        let raw = block.section(src, Section::Filter)?;
        block.filter = Bloom::decode(&raw).map_err(|m| block.malformed("filter", m))?;
        Ok(block)
    }

    /// The block's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The footer (row count, statistics, layout).
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// Bytes held in memory for this open block.
    pub fn memory_bytes(&self) -> usize {
        self.filter.encoded_len() + self.footer.pages.len() * (COLUMNS * 32 + 48) + 256
    }

    fn malformed(&self, what: &str, m: Malformed) -> BlockError {
        BlockError::malformed(&self.path, what, m)
    }

    fn section_ref(&self, s: Section) -> Result<ChunkRef, BlockError> {
        self.footer
            .sections
            .iter()
            .find(|(id, _)| *id == s as u32)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                self.malformed(
                    "footer",
                    Malformed {
                        what: "a section is missing",
                        at: s as usize,
                    },
                )
            })
    }

    fn section<S: Source + ?Sized>(&self, src: &S, s: Section) -> Result<Vec<u8>, BlockError> {
        let r = self.section_ref(s)?;
        read_chunk(src, &self.path, &r, &|| format!("section {s:?}"))
    }

    /// Whether the block may hold spans of `trace_id` (no false negatives).
    pub fn may_contain(&self, trace_id: &[u8; 16]) -> bool {
        self.filter.may_contain(trace_hash(trace_id))
    }

    /// The trace index: sorted trace ids and each one's first row (plus the total).
    fn trace_index<S: Source + ?Sized>(
        &self,
        src: &S,
    ) -> Result<(Vec<[u8; 16]>, Vec<u64>), BlockError> {
        let raw = self.section(src, Section::Traces)?;
        crate::traceindex::decode(&raw, self.footer.rows)
            .map_err(|m| self.malformed("trace index", m))
    }

    /// Every span of `trace_id` in this block (none when it holds none), by start.
    pub fn trace<S: Source + ?Sized>(
        &self,
        src: &S,
        trace_id: &[u8; 16],
    ) -> Result<Vec<StoredSpan>, BlockError> {
        if !self.may_contain(trace_id) {
            return Ok(Vec::new());
        }
        let (ids, starts) = self.trace_index(src)?;
        let Ok(i) = ids.binary_search(trace_id) else {
            return Ok(Vec::new());
        };
        self.rows(src, &ids, &starts, starts[i]..starts[i + 1])
    }

    /// Every span in the block, sorted by trace id then start.
    pub fn all<S: Source + ?Sized>(&self, src: &S) -> Result<Vec<StoredSpan>, BlockError> {
        let (ids, starts) = self.trace_index(src)?;
        self.rows(src, &ids, &starts, 0..self.footer.rows)
    }

    fn rows<S: Source + ?Sized>(
        &self,
        src: &S,
        ids: &[[u8; 16]],
        trace_starts: &[u64],
        rows: std::ops::Range<u64>,
    ) -> Result<Vec<StoredSpan>, BlockError> {
        let entries = |s: Section, per: usize, what: &str| -> Result<Entries, BlockError> {
            Entries::parse(self.section(src, s)?, per).map_err(|m| self.malformed(what, m))
        };
        let dict = entries(Section::Dictionary, 1, "dictionary")?;
        let resources = entries(Section::Resources, 2, "resources")?;
        let scopes = entries(Section::Scopes, 2, "scopes")?;
        let mut cx = Context {
            block: self,
            src,
            resource_cache: TableCache::new(resources.len() / 2),
            scope_cache: TableCache::new(scopes.len() / 2),
            dict,
            resources,
            scopes,
        };
        let mut out = Vec::with_capacity(usize::try_from(rows.end - rows.start).unwrap_or(0));
        for p in 0..self.footer.pages.len() {
            let (lo, hi) = (self.page_starts[p], self.page_starts[p + 1]);
            if hi <= rows.start || lo >= rows.end {
                continue;
            }
            cx.page(p, ids, trace_starts, &rows, &mut out)?;
        }
        Ok(out)
    }
}

impl<S: Source + ?Sized> Context<'_, S> {
    /// Decode page `p`, keeping the rows in `want`.
    fn page(
        &mut self,
        p: usize,
        ids: &[[u8; 16]],
        trace_starts: &[u64],
        want: &std::ops::Range<u64>,
        out: &mut Vec<StoredSpan>,
    ) -> Result<(), BlockError> {
        let block = self.block;
        let page = &block.footer.pages[p];
        let mut cols = Vec::with_capacity(COLUMNS);
        for (c, r) in page.columns.iter().enumerate() {
            cols.push(read_chunk(self.src, &block.path, r, &|| {
                format!("page {p} column {c}")
            })?);
        }
        self.decode_page(p, &cols, ids, trace_starts, want, out)
            .map_err(|m| block.malformed(&format!("page {p}"), m))
    }

    fn decode_page(
        &mut self,
        p: usize,
        cols: &[Vec<u8>],
        ids: &[[u8; 16]],
        trace_starts: &[u64],
        want: &std::ops::Range<u64>,
        out: &mut Vec<StoredSpan>,
    ) -> Result<(), Malformed> {
        let first_row = self.block.page_starts[p];
        let rows = self.block.footer.pages[p].rows as usize;
        let span_ids = &cols[Col::SpanId as usize];
        if span_ids.len() != rows * 8 {
            return Err(Malformed {
                what: "span id column length",
                at: span_ids.len(),
            });
        }
        let mut c: Vec<Cursor<'_>> = cols.iter().map(|b| Cursor::new(b)).collect();
        let earliest = c[Col::Start as usize].varint()?;
        // The trace of the page's first row.
        let mut t = trace_starts.partition_point(|&s| s <= first_row) - 1;
        let (mut trace_first, mut prev_start) = (0usize, 0u64);
        for i in 0..rows {
            let row = first_row + i as u64;
            let new_trace = i == 0 || row >= trace_starts[t + 1];
            if new_trace {
                while row >= trace_starts[t + 1] {
                    t += 1;
                }
                trace_first = i;
            }
            let trace_id = ids.get(t).ok_or(Malformed {
                what: "row past the trace index",
                at: i,
            })?;
            let span_id = &span_ids[i * 8..i * 8 + 8];
            let parent = match c[Col::Parent as usize].varint()? {
                0 => Vec::new(),
                1 => c[Col::ParentRaw as usize].take(8)?.to_vec(),
                j => {
                    let at = trace_first + usize::try_from(j - 2).unwrap_or(usize::MAX);
                    span_ids
                        .get(at.saturating_mul(8)..at.saturating_mul(8).saturating_add(8))
                        .ok_or(Malformed {
                            what: "parent reference out of the page",
                            at: i,
                        })?
                        .to_vec()
                }
            };
            let delta = c[Col::Start as usize].varint()?;
            let start = if new_trace {
                earliest.wrapping_add(unzigzag(delta) as u64)
            } else {
                prev_start.wrapping_add(delta)
            };
            prev_start = start;
            let end = start.wrapping_add(unzigzag(c[Col::Duration as usize].varint()?) as u64);
            let name_id = c[Col::Name as usize].varint()?;
            let kind = unzigzag(c[Col::Kind as usize].varint()?);
            let status = c[Col::Status as usize].varint()?;
            let message_id = c[Col::StatusMessage as usize].varint()?;
            let res = c[Col::Resource as usize].varint()?;
            let scope = c[Col::Scope as usize].varint()?;
            let nattrs = c[Col::AttrKeys as usize].count(1)?;
            let keep = want.contains(&row);
            let mut attributes = Vec::with_capacity(if keep { nattrs } else { 0 });
            for _ in 0..nattrs {
                let key = c[Col::AttrKeys as usize].varint()?;
                let value = value(&mut c[Col::AttrValues as usize], keep, &self.dict)?;
                if keep {
                    attributes.push(KeyValue {
                        key: self.dict.string(key, "attribute key id out of range")?,
                        value,
                        key_strindex: 0,
                    });
                }
            }
            let extras = c[Col::Extras as usize].bytes()?;
            if !keep {
                continue;
            }
            let mut span = from_extras(extras, i)?;
            span.trace_id = trace_id.to_vec();
            span.span_id = span_id.to_vec();
            span.parent_span_id = parent;
            span.name = self.dict.string(name_id, "name id out of range")?;
            span.kind = i32::try_from(kind).map_err(|_| Malformed {
                what: "kind out of range",
                at: i,
            })?;
            span.start_time_unix_nano = start;
            span.end_time_unix_nano = end;
            if !attributes.is_empty() {
                span.attributes = attributes;
            }
            span.status = status_of(status, message_id, &self.dict, i)?;
            let res = usize::try_from(res).unwrap_or(usize::MAX);
            let scope = usize::try_from(scope).unwrap_or(usize::MAX);
            out.push(StoredSpan {
                resource: self.resource_cache.get(&self.resources, res, "resource")?,
                scope: self.scope_cache.get(&self.scopes, scope, "scope")?,
                span,
            });
        }
        // Span ids were read by position.
        c[Col::SpanId as usize].take(rows * 8)?;
        if c.iter().any(|c| !c.is_empty()) {
            return Err(Malformed {
                what: "bytes after the page's last row",
                at: rows,
            });
        }
        Ok(())
    }
}

/// Resources or scopes by id: the encoded value (see `buffer::present`) and schema URL.
pub(super) trait Table {
    /// Entry `id`, if there is one.
    fn entry(&self, id: usize) -> Option<(&[u8], &[u8])>;
}

impl Table for Entries {
    fn entry(&self, id: usize) -> Option<(&[u8], &[u8])> {
        (2 * id + 1 < self.len()).then(|| (self.get(2 * id), self.get(2 * id + 1)))
    }
}

/// Strings by dictionary id.
pub(super) trait Strings {
    /// String `id`, or `what` when there is none.
    fn string(&self, id: u64, what: &'static str) -> Result<String, Malformed>;
}

impl Strings for Entries {
    fn string(&self, id: u64, what: &'static str) -> Result<String, Malformed> {
        let i = usize::try_from(id)
            .ok()
            .filter(|&i| i < self.len())
            .ok_or(Malformed { what, at: 0 })?;
        std::str::from_utf8(self.get(i))
            .map(str::to_string)
            .map_err(|_| Malformed {
                what: "dictionary string not UTF-8",
                at: i,
            })
    }
}

/// One attribute value; built only when `keep`.
pub(super) fn value(
    c: &mut Cursor<'_>,
    keep: bool,
    strings: &impl Strings,
) -> Result<Option<AnyValue>, Malformed> {
    let tag = c.u8()?;
    let v = |v| Ok(Some(AnyValue { value: v }));
    match tag {
        t if t == ValueTag::Absent as u8 => Ok(None),
        t if t == ValueTag::Empty as u8 => v(None),
        t if t == ValueTag::Str as u8 => {
            let id = c.varint()?;
            if !keep {
                return Ok(None);
            }
            v(Some(V::StringValue(
                strings.string(id, "string value id out of range")?,
            )))
        }
        t if t == ValueTag::False as u8 => v(Some(V::BoolValue(false))),
        t if t == ValueTag::True as u8 => v(Some(V::BoolValue(true))),
        t if t == ValueTag::Int as u8 => v(Some(V::IntValue(unzigzag(c.varint()?)))),
        t if t == ValueTag::Double as u8 => v(Some(V::DoubleValue(f64::from_bits(c.u64_le()?)))),
        t if t == ValueTag::Other as u8 => {
            let b = c.bytes()?;
            if !keep {
                return Ok(None);
            }
            AnyValue::decode(b).map(Some).map_err(|_| Malformed {
                what: "attribute value not an AnyValue",
                at: 0,
            })
        }
        _ => Err(Malformed {
            what: "unknown value tag",
            at: usize::from(tag),
        }),
    }
}

/// A span holding row `row`'s rarely set fields (`extras`, empty for most rows).
fn from_extras(extras: &[u8], row: usize) -> Result<Span, Malformed> {
    if extras.is_empty() {
        return Ok(Span::default());
    }
    Span::decode(extras).map_err(|_| Malformed {
        what: "extras not a span",
        at: row,
    })
}

/// Row `row`'s status from its stored value (0 absent, else 1 + zigzag(code)) and the
/// dictionary id of its message.
fn status_of(
    stored: u64,
    message_id: u64,
    strings: &impl Strings,
    row: usize,
) -> Result<Option<Status>, Malformed> {
    if stored == 0 {
        return Ok(None);
    }
    Ok(Some(Status {
        code: i32::try_from(unzigzag(stored - 1)).map_err(|_| Malformed {
            what: "status out of range",
            at: row,
        })?,
        message: strings.string(message_id, "status message id out of range")?,
    }))
}

/// Resources or scopes decoded on first use, by table id.
struct TableCache<T> {
    slots: Vec<Option<Arc<TableEntry<Option<T>>>>>,
}

impl<T: Message + Default> TableCache<T> {
    fn new(len: usize) -> Self {
        Self {
            slots: vec![None; len],
        }
    }

    /// Entry `id` of `table`, decoded once; `what` names the table in errors.
    fn get(
        &mut self,
        table: &impl Table,
        id: usize,
        what: &'static str,
    ) -> Result<Arc<TableEntry<Option<T>>>, Malformed> {
        let slot = self.slots.get_mut(id).ok_or(Malformed { what, at: id })?;
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let e = Arc::new(table_entry(table, id, what)?);
        *slot = Some(e.clone());
        Ok(e)
    }
}

/// Entry `id` of a resource or scope table.
pub(super) fn table_entry<T: Message + Default>(
    table: &impl Table,
    id: usize,
    what: &'static str,
) -> Result<TableEntry<Option<T>>, Malformed> {
    let (encoded, schema_url) = table.entry(id).ok_or(Malformed { what, at: id })?;
    let value = match encoded.split_first() {
        None => None,
        Some((1, m)) => Some(T::decode(m).map_err(|_| Malformed { what, at: id })?),
        Some(_) => return Err(Malformed { what, at: id }),
    };
    let schema_url = std::str::from_utf8(schema_url)
        .map_err(|_| Malformed {
            what: "schema URL not UTF-8",
            at: id,
        })?
        .to_string();
    Ok(TableEntry { value, schema_url })
}

impl Strings for super::buffer::Dict {
    fn string(&self, id: u64, what: &'static str) -> Result<String, Malformed> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.get(i))
            .map(str::to_string)
            .ok_or(Malformed { what, at: 0 })
    }
}

impl Table for super::buffer::Table {
    fn entry(&self, id: usize) -> Option<(&[u8], &[u8])> {
        self.entries
            .get(id)
            .map(|(encoded, url)| (encoded.as_slice(), url.as_bytes()))
    }
}

impl SpanBuffer {
    /// Every span of `trace_id` the buffer holds, by start (spans with equal starts in the
    /// order they came), as a block would give them back.
    pub fn trace(&self, trace_id: &[u8; 16]) -> Result<Vec<StoredSpan>, Malformed> {
        let mut rows: Vec<usize> = (0..self.len())
            .filter(|&r| self.trace_ids[r] == *trace_id)
            .collect();
        rows.sort_by_key(|&r| (self.starts[r], r));
        let mut resources = TableCache::new(self.resources.entries.len());
        let mut scopes = TableCache::new(self.scopes.entries.len());
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut span = from_extras(self.extras_of(r), r)?;
            span.trace_id = trace_id.to_vec();
            span.span_id = self.span_ids[r].to_vec();
            span.parent_span_id = if self.parents[r] == [0; 8] {
                Vec::new()
            } else {
                self.parents[r].to_vec()
            };
            span.name = self.dict.string(u64::from(self.names[r]), "name id")?;
            span.kind = self.kinds[r];
            span.start_time_unix_nano = self.starts[r];
            span.end_time_unix_nano = self.ends[r];
            span.status = status_of(
                self.statuses[r],
                u64::from(self.status_messages[r]),
                &self.dict,
                r,
            )?;
            let attrs = self.attr_range(r);
            if !attrs.is_empty() {
                let mut list = Vec::with_capacity(attrs.len());
                for a in attrs {
                    list.push(KeyValue {
                        key: self.dict.string(u64::from(self.attr_keys[a]), "key id")?,
                        value: value(&mut Cursor::new(self.attr_value(a)), true, &self.dict)?,
                        key_strindex: 0,
                    });
                }
                span.attributes = list;
            }
            let resource =
                resources.get(&self.resources, self.resource_ids[r] as usize, "resource")?;
            let scope = scopes.get(&self.scopes, self.scope_ids[r] as usize, "scope")?;
            out.push(StoredSpan {
                resource,
                scope,
                span,
            });
        }
        Ok(out)
    }
}
