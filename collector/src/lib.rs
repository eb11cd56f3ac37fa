//! Lookout collector: a write-ahead log behind the shared OTLP receivers (`lookout-ingest`),
//! tantivy indexes of logs and spans, trace assembly, RED metrics, alerts and the query API.

pub mod alerts;
pub mod api;
pub mod cluster;
pub mod demo;
pub mod metrics;
pub mod prom;
pub mod server;
pub mod services;
pub mod store;
pub mod traces;
pub mod wal;

#[cfg(test)]
mod testing;
