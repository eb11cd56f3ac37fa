//! `lookout-agent`: the per-service sidecar, and the `lookout-loadgen` load generator.
pub mod buffer;
pub mod cluster;
pub mod host;
pub mod loadgen;
pub mod server;
pub mod ship;
pub mod sink;
pub mod sources;
pub mod tail;
