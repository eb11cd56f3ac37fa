//! The span schema: spans of many traces in one block, sorted by trace id and start, so
//! the spans of a trace are one run of rows.
//!
//! Block-wide sections hold what rows refer to: one string dictionary (span names, status
//! messages, attribute keys and string values), the resources and scopes deduplicated by
//! their encoded bytes, the trace index (each distinct trace id, sorted, with its row
//! count) and a Bloom filter of those trace ids. Pages cut at trace boundaries hold the
//! rows column by column ([`Col`]): ids and times as varints relative to their neighbours,
//! strings as dictionary ids, attributes as key and value streams, and the span fields
//! that are rarely set (events, links, trace state, flags, dropped counts) as a small
//! protobuf per row, empty for most. Every span reads back exactly as it was received.

mod buffer;
mod decode;
mod encode;

pub use buffer::{BufferStats, SpanBuffer};
pub use decode::{SpanBlock, StoredSpan, TableEntry};

/// Block-wide sections of a span block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Section {
    /// Strings: count, then each length-prefixed.
    Dictionary = 1,
    /// Resources: count, then each as encoded `Resource` and schema URL.
    Resources = 2,
    /// Scopes: count, then each as encoded `InstrumentationScope` and schema URL.
    Scopes = 3,
    /// Trace index: count, the sorted 16-byte ids, then each trace's row count.
    Traces = 4,
    /// Bloom filter of the trace ids ([`crate::bloom`]).
    Filter = 5,
}

/// The columns of a span page, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Col {
    /// Span id, 8 raw bytes per row.
    SpanId,
    /// Parent: 0 none, 1 raw id in [`Col::ParentRaw`], 2 + j the j-th row of the same
    /// trace in this page.
    Parent,
    /// Parent ids not found in the page, 8 bytes each.
    ParentRaw,
    /// Start: the page's earliest start first; then per row, for a trace's first row in
    /// the page zigzag(start - earliest), else start - the previous row's start.
    Start,
    /// zigzag(end - start), wrapping.
    Duration,
    /// Span name, dictionary id.
    Name,
    /// Kind, zigzag of the protobuf enum value.
    Kind,
    /// Status: 0 absent, else 1 + zigzag(code).
    Status,
    /// Status message, dictionary id.
    StatusMessage,
    /// Resource table id.
    Resource,
    /// Scope table id.
    Scope,
    /// Per row the attribute count, then each key's dictionary id.
    AttrKeys,
    /// Per attribute a tag (0 empty, 1 string, 2 false, 3 true, 4 int, 5 double, 6 other,
    /// 7 absent) and its value.
    AttrValues,
    /// Per row the length of an encoded `Span` holding only its rarely set fields, then it.
    Extras,
}

/// Number of columns of a span page.
pub const COLUMNS: usize = Col::Extras as usize + 1;

/// Tags of attribute values in [`Col::AttrValues`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum ValueTag {
    /// An `AnyValue` with no value.
    Empty = 0,
    /// A string, dictionary id follows.
    Str = 1,
    /// `false`.
    False = 2,
    /// `true`.
    True = 3,
    /// An integer, zigzag varint follows.
    Int = 4,
    /// A double, 8 bytes little-endian follow.
    Double = 5,
    /// Anything else (bytes, arrays, maps): a length-prefixed encoded `AnyValue` follows.
    Other = 6,
    /// No `AnyValue` at all (`KeyValue.value` unset).
    Absent = 7,
}

/// Target rows per page: a page is cut at the first trace boundary past it.
pub const PAGE_ROWS: usize = 8192;
/// A page is cut at this many rows even inside a trace.
pub const MAX_PAGE_ROWS: usize = 4 * PAGE_ROWS;

#[cfg(test)]
mod tests;
