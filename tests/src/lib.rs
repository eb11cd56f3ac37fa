//! Shared fixtures for Lookout's tests. The end-to-end tests (`tests/e2e`) start the real
//! binaries on loopback port 0 with temporary data directories, read their bound addresses
//! from the start-up line, and poll the query API with deadlines (never fixed sleeps); the
//! crates' own integration tests use the OTLP builders, the file and command-line helpers.

#![allow(clippy::unwrap_used, clippy::panic)]

pub mod cli;
pub mod files;
mod http;
pub mod nats;
pub mod otlp;
mod server;

pub use http::{
    get_json, metric_value, poll, post_acknowledged, post_protobuf, promtool_check_metrics,
    ProtobufBody,
};
pub use server::{
    bin, free_addr, write_agent_config, write_config, Agent, AgentBinary, Binary, Collector,
    CollectorBinary, Server, Stopped, FAST_TRACES,
};
