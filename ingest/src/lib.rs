//! What the Lookout collector and agent share: the OTLP receivers and the one ingest path
//! behind them, listener security, signals and decoded batches, file and process helpers,
//! and one wall clock.
//!
//! The path of a request, for both binaries:
//! `listener (net) → transport (grpc | http) → Ingest (decode, check, enrich, admit) →
//! IngestSink (the collector's WAL or the agent's disk buffer) → response`.
//!
//! Both of those sinks are segment logs of checksummed records: [`seglog`] is their
//! format and the code they share.

pub mod batch;
pub mod budget;
pub mod clock;
pub mod enrich;
pub mod error;
pub mod fsutil;
pub mod grpc;
pub mod heap_size;
pub mod http;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod prescan;
pub mod process;
pub mod quota;
pub mod seglog;
pub mod signal;
pub mod validate;
pub mod values;

pub use batch::Batch;
pub use budget::{Budget, Charge};
pub use error::IngestError;
pub use metrics::ReceiverMetrics;
pub use pipeline::{
    encode_response, Accepted, Encoding, Ingest, IngestOptions, IngestSink, SinkRequest,
};
pub use signal::{Signal, Transport};
