//! Configuration of `lookout-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::units::ByteSize;
use crate::Validate;

/// Configuration of `lookout-agent`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// OTLP/gRPC listen address for the local service.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address for the local service.
    pub otlp_http: SocketAddr,
    /// Listen address of `/metrics` and `/healthz`.
    pub api: SocketAddr,
    /// OTLP/gRPC endpoint of the collector.
    pub collector: String,
    /// Disk buffer directory.
    pub buffer_dir: PathBuf,
    /// Largest request accepted from the local service.
    pub max_request_size: ByteSize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            otlp_grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            api: SocketAddr::from(([127, 0, 0, 1], 7071)),
            collector: "http://127.0.0.1:4317".to_string(),
            buffer_dir: PathBuf::from("./lookout-agent-buffer"),
            max_request_size: ByteSize::mib(4),
        }
    }
}

impl Validate for AgentConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            return Err((
                "collector".into(),
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    self.collector
                ),
            ));
        }
        if self.buffer_dir.as_os_str().is_empty() {
            return Err(("buffer_dir".into(), "must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::parse;

    #[test]
    fn empty_config_equals_defaults() {
        let c: AgentConfig = parse("", Path::new("a.toml")).expect("parse");
        assert_eq!(c, AgentConfig::default());
    }
}
