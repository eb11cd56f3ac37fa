//! Lookout collector: OTLP ingest of traces, logs and metrics; a write-ahead log; tantivy
//! indexes of logs and spans; and the query API.

pub mod alerts;
pub mod api;
pub mod batch;
pub mod demo;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod heap_size;
pub mod ingest;
pub mod jaeger;
pub mod metrics;
pub mod net;
pub mod process;
pub mod prom;
pub mod server;
pub mod signal;
pub mod store;
pub mod traces;
pub mod wal;
