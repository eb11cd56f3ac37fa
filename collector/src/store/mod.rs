//! Storage of logs, spans and trace summaries: time-partitioned tantivy indexes, each behind
//! a store handle ([`LogStore`], [`SpanStore`], [`TraceStore`]) that owns its schema and
//! answers its searches. The WAL feeds the log and span indexes through one indexing
//! thread each ([`indexer`]); the trace tracker writes trace summaries. Every index is
//! written through the one [`writer::PartitionWriter`] (commit policy, failure backoff,
//! retention, gauges), and publishes its durable [`progress::Progress`] as the WAL
//! checkpoint.

pub mod error;
pub mod handle;
pub mod indexer;
pub mod logs;
pub mod metrics;
pub mod partition;
pub mod progress;
pub mod spans;
pub mod traces;
pub mod writer;

pub use error::SearchError;
pub use indexer::{spawn_indexer, DocMapper, IndexerContext, IndexerSetup};
pub use logs::LogStore;
pub use metrics::IndexMetrics;
pub use progress::Progress;
pub use spans::SpanStore;
pub use traces::TraceStore;
