//! Lookout's span store: spans and trace summaries in immutable, compressed, checksummed
//! columnar blocks, cut per time partition from an in-memory buffer, and found by trace id
//! through a Bloom filter per block and a sorted trace index inside it.
//!
//! - [`codec`]: varints and the bounds-checked cursor every reader uses.
//! - [`block`]: the container (chunks, footer, checksums, durable writes).
//! - [`bloom`]: the per-block trace-id filter.
//! - [`spans`]: the span schema: the buffer that collects spans, its encoding into pages,
//!   and the reader that gives them back exactly as received.
//!
//! The format is described in `docs/SPANSTORE.md`.

pub mod block;
pub mod bloom;
pub mod codec;
pub mod spans;
pub mod store;
pub mod summaries;
pub mod traceindex;

pub use block::{BlockError, BlockErrorKind};
pub use spans::{SpanBlock, SpanBuffer, StoredSpan};
pub use store::{BlockStore, Schema, SpanStore, StoreStats, TraceLookup};
