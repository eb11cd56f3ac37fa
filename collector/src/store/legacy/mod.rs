//! The tantivy partitions of releases before the span store, read until retention removes
//! them: spans ([`spans`], `<data>/spans/`) and trace summaries ([`traces`],
//! `<data>/traces/`).

pub mod spans;
pub mod traces;

pub use spans::{LegacySpanMapper, LegacySpanStore, SpanFields};
pub use traces::{LegacyTraceStore, TraceFields};
