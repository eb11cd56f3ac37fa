//! Storage of logs, spans and trace summaries. Logs and trace summaries are
//! time-partitioned tantivy indexes, each behind a store handle ([`LogStore`],
//! [`TraceStore`]) that owns its schema and answers its searches; spans are in the span
//! store ([`SpanStore`], over `lookout-spanstore`'s blocks), which also reads the tantivy
//! span partitions of earlier releases ([`legacy`]). The WAL feeds the log index and the
//! span store through one thread each ([`indexer`]); the trace tracker writes trace
//! summaries. Every store is written through the one [`writer::PartitionWriter`] (commit
//! policy, failure backoff, retention, gauges), and publishes its durable
//! [`progress::Progress`] as the WAL checkpoint.

pub mod backlog;
pub mod blocks;
pub mod error;
pub mod handle;
pub mod indexer;
pub mod legacy;
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
