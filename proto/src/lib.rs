//! Lookout's wire types.
//!
//! - [`otlp`]: the OTLP protobuf types, re-exported from `opentelemetry-proto`.
//! - [`json`]: a strict OTLP/JSON codec (the protobuf JSON mapping as the OTLP spec
//!   restricts it), with errors that name the offending field.
//! - [`attr`]: constructors of OTLP attributes.
//! - [`api`]: request and response types of the collector's query API, shared by the
//!   collector and the dashboard.

pub mod api;
pub mod attr;
pub mod json;

/// OTLP protobuf types and gRPC service stubs, with the same module paths as
/// `opentelemetry_proto::tonic` (`otlp::trace::v1::Span`, `otlp::collector::logs::v1::...`).
pub mod otlp {
    pub use opentelemetry_proto::tonic::{collector, common, logs, metrics, resource, trace};
}
