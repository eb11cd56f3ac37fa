//! The trace-summary schema: one row per stored *version* of a trace's summary (a trace is
//! summarised when it completes and again each time late spans update it), sorted by
//! trace id then version, so the versions of a trace are one run of rows and the newest is
//! its last.
//!
//! Block-wide sections hold what rows refer to and what searches prune with: one string
//! dictionary (services and operations), the services and the `(service, operation)`
//! pairs that occur, the attribute hashes that occur (most frequent first, so rows refer
//! to common ones in one byte), a Bloom filter of those hashes, the trace index and a
//! Bloom filter of the trace ids. Pages hold the rows column by column ([`Col`]).

mod buffer;
mod decode;
mod encode;
mod search;

use std::path::Path;

pub use buffer::SummaryBuffer;
pub use decode::{Hit, SummaryBlock};
pub use search::{SummaryLookup, SummarySearch};

use crate::block::{BlockError, Footer, Source};
use crate::store::{BlockStore, HeadStats, Schema};

/// Block-wide sections of a summary block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Section {
    /// Strings: count, then each length-prefixed.
    Dictionary = 1,
    /// Services that occur: count, then dictionary ids.
    Services = 2,
    /// `(service, operation)` pairs that occur: count, then two dictionary ids each.
    Pairs = 3,
    /// Trace index: count, the sorted 16-byte ids, then each trace's row count.
    Traces = 4,
    /// Bloom filter of the trace ids ([`crate::bloom`]).
    Filter = 5,
    /// Attribute hashes that occur: count, then 8 bytes little-endian each, most frequent
    /// first.
    Attributes = 6,
    /// Bloom filter of the attribute hashes.
    AttributeFilter = 7,
}

/// The columns of a summary page, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Col {
    /// The page's lowest version, then per row the difference to it.
    Version,
    /// Completeness ([`TraceState`]), plus [`SUPERSEDED`] when a later version of the
    /// trace follows in the block.
    State,
    /// The page's earliest start, then per row the difference to it.
    Start,
    /// zigzag(end - start), wrapping.
    Duration,
    /// Spans.
    SpanCount,
    /// Spans with status error.
    ErrorCount,
    /// Spans that arrived after the first completion.
    LateSpans,
    /// Root service, dictionary id.
    RootService,
    /// Root operation, dictionary id.
    RootOperation,
    /// Count, then services as dictionary ids.
    Services,
    /// Count, then operations as indexes into [`Section::Pairs`].
    Ops,
    /// Count, then attribute hashes as indexes into [`Section::Attributes`].
    Attrs,
    /// The page's lowest WAL position, then per row the difference to it.
    MaxLsn,
}

/// Flag of [`Col::State`]: a later version of the row's trace follows in the block, so a
/// search passes the row by.
pub const SUPERSEDED: u64 = 0x80;

/// Number of columns of a summary page.
pub const COLUMNS: usize = Col::MaxLsn as usize + 1;

/// Target rows per page: a page is cut at the first trace boundary past it.
pub const PAGE_ROWS: usize = 8192;

/// Completeness of a stored trace version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceState {
    /// Idle for the completion window.
    Complete = 1,
    /// Spans arrived after completion; this version includes them.
    UpdatedLate = 2,
}

impl TraceState {
    /// API name.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceState::Complete => "complete",
            TraceState::UpdatedLate => "updated_late",
        }
    }

    /// The state stored as `v` (anything unknown reads as complete).
    pub fn from_u64(v: u64) -> Self {
        if v == 2 {
            TraceState::UpdatedLate
        } else {
            TraceState::Complete
        }
    }
}

/// Summary of a whole trace, as stored (and as accumulated by the collector's tracker).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Increases with each stored version (Unix ns when written).
    pub version: u64,
    /// Completeness.
    pub state: TraceState,
    /// Earliest span start, Unix ns.
    pub start: u64,
    /// Latest span end, Unix ns.
    pub end: u64,
    /// Spans counted.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Spans that arrived after the first completion.
    pub late_spans: u64,
    /// Service of the root span (or of the earliest span without a root).
    pub root_service: String,
    /// Operation of the root span.
    pub root_operation: String,
    /// Every service.
    pub services: Vec<String>,
    /// `(service, operation)` pairs, capped.
    pub ops: Vec<(String, String)>,
    /// Hashes of `KEY=VALUE` of span and resource attributes, capped.
    pub attrs: Vec<u64>,
    /// Highest WAL sequence number of a span included.
    pub max_lsn: u64,
}

impl Summary {
    /// From the earliest start to the latest end.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether this version matches every filter of `q`.
    pub fn matches(&self, q: &SummaryQuery) -> bool {
        let d = self.duration();
        self.start >= q.from_ns
            && self.start <= q.to_ns
            && q.min_duration_ns.is_none_or(|m| d >= m)
            && q.max_duration_ns.is_none_or(|m| d <= m)
            && (!q.errors_only || self.error_count > 0)
            && match (&q.service, &q.operation) {
                (Some(s), Some(o)) => self.ops.iter().any(|(a, b)| a == s && b == o),
                (Some(s), None) => self.services.iter().any(|a| a == s),
                (None, Some(o)) => self.ops.iter().any(|(_, b)| b == o),
                (None, None) => true,
            }
            && q.attrs.iter().all(|h| self.attrs.contains(h))
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.root_service.len()
            + self.root_operation.len()
            + self.services.iter().map(|s| s.len() + 24).sum::<usize>()
            + self
                .ops
                .iter()
                .map(|(s, o)| s.len() + o.len() + 48)
                .sum::<usize>()
            + self.attrs.len() * 8
    }
}

/// A search of summaries; every filter holds on one version of a whole trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryQuery {
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
    /// Attribute hashes, each of which the trace must hold.
    pub attrs: Vec<u64>,
    /// Trace start range, Unix ns, inclusive.
    pub from_ns: u64,
    /// End of the start range.
    pub to_ns: u64,
}

/// The trace-summary schema.
#[derive(Debug)]
pub struct Summaries;

impl Schema for Summaries {
    const NAME: &'static str = "summary";
    type Buffer = SummaryBuffer;
    type Block = SummaryBlock;
    fn buffer_size(buf: &SummaryBuffer) -> HeadStats {
        HeadStats {
            rows: buf.len(),
            bytes: buf.memory_bytes(),
        }
    }
    fn encode(buf: &SummaryBuffer, lsn: u64, replaces: &[u64]) -> std::io::Result<Option<Vec<u8>>> {
        buf.finish_replacing(lsn, replaces)
    }
    fn merge_into<S: Source + ?Sized>(
        buf: &mut SummaryBuffer,
        src: &S,
        block: &SummaryBlock,
    ) -> Result<(), BlockError> {
        for s in block.all(src)? {
            buf.push(std::sync::Arc::new(s));
        }
        Ok(())
    }
    fn read<S: Source + ?Sized>(src: &S, path: &Path) -> Result<SummaryBlock, BlockError> {
        SummaryBlock::read(src, path)
    }
    fn footer(block: &SummaryBlock) -> &Footer {
        block.footer()
    }
}

/// The trace-summary store.
pub type SummaryStore = BlockStore<Summaries>;

#[cfg(test)]
mod tests;
