//! Configuration of `lookout-agent`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cluster::NatsConfig;
use crate::collector::LimitsConfig;
use crate::host::HostMetricsConfig;
use crate::server::{ClientTlsConfig, Headers};
use crate::tail::TailConfig;
use crate::units::{ByteSize, HumanDuration};
use crate::{Validate, Violation};

/// Configuration of `lookout-agent`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// OTLP/gRPC listen address for the local service.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address for the local service.
    pub otlp_http: SocketAddr,
    /// Listen address of `/metrics` and `/healthz`.
    pub api: SocketAddr,
    /// OTLP endpoint of the collector (gRPC by default, see `exporter.protocol`).
    #[serde(serialize_with = "crate::print::masked_url")]
    pub collector: String,
    /// Disk buffer directory (also holds the tail checkpoints).
    pub buffer_dir: PathBuf,
    /// Limits applied to requests from the local service (same keys as the collector's).
    pub limits: LimitsConfig,
    /// Resource attributes added to everything the agent ships.
    pub resource: ResourceConfig,
    /// The disk buffer.
    pub buffer: BufferConfig,
    /// Shipping to the collector.
    pub exporter: ExporterConfig,
    /// Host and process metrics.
    pub host_metrics: HostMetricsConfig,
    /// Log files to tail.
    pub tail: Vec<TailConfig>,
    /// Publish to a Lookout cluster's NATS JetStream stream instead of shipping OTLP to
    /// `collector`.
    pub cluster: Option<NatsConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            otlp_grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            otlp_http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            api: SocketAddr::from(([127, 0, 0, 1], 7071)),
            collector: "http://127.0.0.1:4317".to_string(),
            buffer_dir: PathBuf::from("./lookout-agent-buffer"),
            limits: LimitsConfig::default(),
            resource: ResourceConfig::default(),
            buffer: BufferConfig::default(),
            exporter: ExporterConfig::default(),
            host_metrics: HostMetricsConfig::default(),
            tail: Vec::new(),
            cluster: None,
        }
    }
}

/// Resource enrichment. Attributes are added only where the sender did not set them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceConfig {
    /// `service.name` for data that has none (empty: leave it to the sender).
    pub service_name: String,
    /// `service.instance.id` (empty: `HOST:PID` of the agent).
    pub service_instance_id: String,
    /// `host.name` (empty: the machine's host name).
    pub host_name: String,
    /// Further attributes, e.g. `{ "deployment.environment.name" = "prod" }`.
    pub attributes: BTreeMap<String, String>,
}

/// What a full buffer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse new data with a retry hint (HTTP 429 / gRPC RESOURCE_EXHAUSTED); the sender
    /// keeps it.
    Block,
    /// Delete the oldest segment to make room; its items are counted as dropped.
    DropOldest,
}

/// When the buffer calls `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before every acknowledgement (group commit): survives power loss.
    Always,
    /// Every `fsync_interval`; acknowledgements wait only for the write, which survives
    /// a crash of the agent but not of the machine.
    Interval,
    /// Never; the operating system writes back when it likes.
    Never,
}

/// The disk buffer between receiving and shipping.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Most bytes of buffered data on disk.
    pub max_size: ByteSize,
    /// A new segment file is started when the current one reaches this size.
    pub segment_size: ByteSize,
    /// `block` or `drop_oldest`.
    pub when_full: WhenFull,
    /// `always`, `interval` or `never`.
    pub fsync: FsyncPolicy,
    /// Period of `fsync = "interval"`.
    pub fsync_interval: HumanDuration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_size: ByteSize::mib(1024),
            segment_size: ByteSize::mib(16),
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Always,
            fsync_interval: HumanDuration::from_secs(1),
        }
    }
}

/// Transport to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`collector` is then the base URL, port 4318).
    Http,
}

/// Compression of shipped requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Shipping to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExporterConfig {
    /// `grpc` or `http`.
    pub protocol: ExportProtocol,
    /// `gzip`, `zstd` or `none`.
    pub compression: Compression,
    /// Most items (spans, log records, data points) in one export request.
    pub max_batch_items: u32,
    /// Most bytes (uncompressed) in one export request.
    pub max_batch_size: ByteSize,
    /// How long a batch waits for more data before it is sent.
    pub batch_timeout: HumanDuration,
    /// Export requests in flight at once.
    pub concurrency: u32,
    /// Timeout of one export request.
    pub timeout: HumanDuration,
    /// First retry delay; doubles up to `retry_max_interval`, with jitter.
    pub retry_initial_interval: HumanDuration,
    /// Longest retry delay.
    pub retry_max_interval: HumanDuration,
    /// Extra request headers (gRPC metadata), e.g. `{ authorization = "Bearer ..." }`.
    #[serde(serialize_with = "crate::print::masked_headers")]
    pub headers: Headers,
    /// File holding the bearer token sent to the collector (`otlp.auth` there); read at
    /// start-up, never logged.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS towards an `https://` collector: CA bundle, client certificate for mTLS.
    pub tls: ClientTlsConfig,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            protocol: ExportProtocol::Grpc,
            compression: Compression::Gzip,
            max_batch_items: 8192,
            max_batch_size: ByteSize::mib(2),
            batch_timeout: HumanDuration::from_millis(200),
            concurrency: 4,
            timeout: HumanDuration::from_secs(10),
            retry_initial_interval: HumanDuration::from_millis(500),
            retry_max_interval: HumanDuration::from_secs(30),
            headers: Headers::default(),
            bearer_token_file: None,
            tls: ClientTlsConfig::default(),
        }
    }
}

impl BufferConfig {
    /// Check the values; keys in errors are relative to `[buffer]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.segment_size.get() < 64 << 10 {
            return err(
                "segment_size",
                format!("must be at least 64KiB, got {}", self.segment_size),
            );
        }
        if self.max_size.get() < 2 * self.segment_size.get() {
            return err(
                "max_size",
                format!(
                    "must be at least twice buffer.segment_size ({}), got {}",
                    self.segment_size, self.max_size
                ),
            );
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.get().is_zero() {
            return err("fsync_interval", "must be greater than 0".into());
        }
        Ok(())
    }
}

impl ExporterConfig {
    /// Check the values; keys in errors are relative to `[exporter]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        self.tls.validate_with_prefix("tls")?;
        if self.bearer_token_file.is_some()
            && self
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("authorization"))
        {
            return err(
                "bearer_token_file",
                "conflicts with an `authorization` entry in exporter.headers; keep one".into(),
            );
        }
        if self.max_batch_items == 0 {
            return err("max_batch_items", "must be at least 1".into());
        }
        if self.max_batch_size.get() < 1024 {
            return err(
                "max_batch_size",
                format!("must be at least 1KiB, got {}", self.max_batch_size),
            );
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return err(
                "concurrency",
                format!("must be between 1 and 256, got {}", self.concurrency),
            );
        }
        if self.timeout.get().is_zero() {
            return err("timeout", "must be greater than 0".into());
        }
        if self.retry_initial_interval.get().is_zero() {
            return err("retry_initial_interval", "must be greater than 0".into());
        }
        if self.retry_max_interval.get() < self.retry_initial_interval.get() {
            return err(
                "retry_max_interval",
                "must be at least exporter.retry_initial_interval".into(),
            );
        }
        for (k, v) in &self.headers {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return err(
                    &format!("headers.{k}"),
                    "header names are ASCII letters, digits, '-' and '_'".into(),
                );
            }
            if v.bytes().any(|c| c < 0x20 && c != b'\t' || c == 0x7f) {
                return err(
                    &format!("headers.{k}"),
                    "header values may not contain control characters".into(),
                );
            }
        }
        Ok(())
    }
}

impl Validate for AgentConfig {
    fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            return err(
                "collector",
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    self.collector
                ),
            );
        }
        if self.buffer_dir.as_os_str().is_empty() {
            return err("buffer_dir", "must not be empty".into());
        }
        self.limits.validate_with_prefix("limits")?;
        self.buffer.validate().map_err(|v| v.under("buffer"))?;
        self.exporter.validate().map_err(|v| v.under("exporter"))?;
        for k in self.resource.attributes.keys() {
            if k.is_empty() {
                return err(
                    "resource.attributes",
                    "attribute keys must not be empty".into(),
                );
            }
        }
        self.host_metrics
            .validate()
            .map_err(|v| v.under("host_metrics"))?;
        for (i, t) in self.tail.iter().enumerate() {
            t.validate().map_err(|v| v.under(&format!("tail[{i}]")))?;
        }
        if let Some(c) = &self.cluster {
            c.validate().map_err(|v| v.under("cluster"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_refused_at, parsed};

    #[test]
    fn empty_config_equals_defaults() {
        assert_eq!(parsed::<AgentConfig>("a.toml", ""), AgentConfig::default());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[buffer]\nwhen_full = \"explode\"\n", "buffer.when_full"),
            ("[buffer]\nmax_size = \"1MiB\"\n", "buffer.max_size"),
            ("[exporter]\nconcurrency = 0\n", "exporter.concurrency"),
            (
                "[exporter]\ncompression = \"lz4\"\n",
                "exporter.compression",
            ),
            (
                "[exporter.headers]\n\"bad header\" = \"x\"\n",
                "exporter.headers.bad header",
            ),
            ("[limits]\nmax_attributes = 0\n", "limits.max_attributes"),
            ("[buffer]\nfsync = \"sometimes\"\n", "buffer.fsync"),
        ];
        for e in assert_refused_at::<AgentConfig>("a.toml", &cases) {
            assert!(e.to_string().starts_with("a.toml: key `"), "{e}");
        }
    }
}
