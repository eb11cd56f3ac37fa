//! Configuration of `lookout-collector`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::alerts::{AlertRule, AlertingConfig, ReceiverConfig};
use crate::cluster::ClusterConfig;
use crate::server::{AuthConfig, ConnectionLimits, TlsConfig};
use crate::units::{ByteSize, HumanDuration};
use crate::{Validate, Violation};

/// Configuration of `lookout-collector`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Directory owned by the collector: WAL, log and span indexes.
    pub data_dir: PathBuf,
    /// How long logs and spans are kept; whole time partitions older than this are removed.
    pub retention: HumanDuration,
    /// OTLP receivers.
    pub otlp: OtlpConfig,
    /// Query API, `/metrics`, `/healthz`, `/readyz`.
    pub api: ApiConfig,
    /// Limits of query API requests.
    pub query: QueryConfig,
    /// Limits on what one request may contain.
    pub limits: LimitsConfig,
    /// Write-ahead log.
    pub wal: WalConfig,
    /// Log index and partition width.
    pub index: IndexConfig,
    /// The span store's blocks.
    pub spans: SpanStoreConfig,
    /// Back-pressure between the WAL and the indexes.
    pub ingest: IngestConfig,
    /// Trace assembly, RED metrics and the service graph.
    pub traces: TracesConfig,
    /// OTLP metrics exposed on `/metrics`.
    pub metrics: MetricsConfig,
    /// Evaluation of alert rules.
    pub alerting: AlertingConfig,
    /// Alert rules.
    pub alerts: Vec<AlertRule>,
    /// Where alert notifications go, by name.
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Scale-out on NATS JetStream; absent, the collector runs alone.
    pub cluster: Option<ClusterConfig>,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./lookout-data"),
            retention: HumanDuration::from_secs(7 * 86_400),
            otlp: OtlpConfig::default(),
            api: ApiConfig::default(),
            query: QueryConfig::default(),
            limits: LimitsConfig::default(),
            wal: WalConfig::default(),
            index: IndexConfig::default(),
            spans: SpanStoreConfig::default(),
            ingest: IngestConfig::default(),
            traces: TracesConfig::default(),
            metrics: MetricsConfig::default(),
            alerting: AlertingConfig::default(),
            alerts: Vec::new(),
            receivers: BTreeMap::new(),
            cluster: None,
        }
    }
}

/// OTLP listeners.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC listen address.
    pub grpc: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/traces`, `/v1/logs`, `/v1/metrics`).
    pub http: SocketAddr,
    /// TLS on both OTLP listeners; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens required on both OTLP listeners.
    pub auth: AuthConfig,
    /// Connection limits of each OTLP listener.
    pub connections: ConnectionLimits,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            grpc: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http: SocketAddr::from(([127, 0, 0, 1], 4318)),
            tls: None,
            auth: AuthConfig::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Query API listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address of the query API, `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// TLS of the API listener; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Bearer tokens required on the query API and `/metrics` (not `/healthz`, `/readyz`).
    pub auth: AuthConfig,
    /// Connection limits of the API listener.
    pub connections: ConnectionLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            tls: None,
            auth: AuthConfig::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Limits applied to every OTLP request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted on the wire (compressed size), like gRPC's 4 MiB.
    pub max_request_size: ByteSize,
    /// Largest body after gzip inflation; protects against gzip bombs.
    pub max_decompressed_size: ByteSize,
    /// Most attributes kept per resource, scope, span, event, link or log record; the
    /// rest are dropped and counted in `dropped_attributes_count`.
    pub max_attributes: u32,
    /// Longest string attribute value or log body kept, in bytes; longer ones are
    /// truncated on a UTF-8 boundary.
    pub max_attribute_length: ByteSize,
    /// Timestamps further than this in the future are refused.
    pub max_future_skew: HumanDuration,
    /// Longest span accepted (end time minus start time); a longer one is refused and
    /// reported in `partial_success`, so that one bad clock cannot make a latency
    /// percentile or an alert.
    pub max_span_duration: HumanDuration,
    /// Most items (spans, log records, data points) in one request; larger requests are
    /// refused whole (HTTP 413 / RESOURCE_EXHAUSTED without a retry hint).
    pub max_items_per_request: u64,
    /// Items per second accepted from one `service.name` (bursts of twice that); 0 = no
    /// limit. A request from services over it gets 429 / RESOURCE_EXHAUSTED with a retry
    /// hint; in a request mixing services, only the items of those over it are rejected
    /// and named in `partial_success`.
    pub max_items_per_second_per_service: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_size: ByteSize::mib(4),
            max_decompressed_size: ByteSize::mib(32),
            max_attributes: 128,
            max_attribute_length: ByteSize::kib(16),
            max_future_skew: HumanDuration::from_secs(3600),
            max_span_duration: HumanDuration::from_secs(7 * 86_400),
            max_items_per_request: 100_000,
            max_items_per_second_per_service: 1_000_000,
        }
    }
}

impl LimitsConfig {
    /// Check the limits; keys in errors are `PREFIX.key`.
    pub fn validate_with_prefix(&self, prefix: &str) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(format!("{prefix}.{k}"), r));
        if self.max_request_size.get() < 1024 {
            return err(
                "max_request_size",
                format!("must be at least 1KiB, got {}", self.max_request_size),
            );
        }
        if self.max_decompressed_size < self.max_request_size {
            return err(
                "max_decompressed_size",
                format!(
                    "must be at least {prefix}.max_request_size ({}), got {}",
                    self.max_request_size, self.max_decompressed_size
                ),
            );
        }
        if self.max_attributes == 0 {
            return err("max_attributes", "must be at least 1".into());
        }
        if self.max_items_per_request == 0 {
            return err("max_items_per_request", "must be at least 1".into());
        }
        if self.max_span_duration.get() < std::time::Duration::from_secs(1) {
            return err(
                "max_span_duration",
                format!("must be at least 1s, got {}", self.max_span_duration),
            );
        }
        if self.max_attribute_length.get() < 16 {
            return err(
                "max_attribute_length",
                format!("must be at least 16B, got {}", self.max_attribute_length),
            );
        }
        Ok(())
    }
}

/// Write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// A new segment file is started when the current one reaches this size.
    pub segment_size: ByteSize,
    /// `fsync` before acknowledging. Turning this off trades durability for speed.
    pub fsync: bool,
    /// Free space on the data directory's file system kept for the stores: while
    /// writing a batch would leave less than this free, the WAL refuses it (503 /
    /// UNAVAILABLE with a retry hint). Index commits and span blocks are written into
    /// this room; they let the WAL delete its segments, so the collector recovers by
    /// itself once the load drops. At least `segment_size`, as the WAL frees space a
    /// whole segment at a time; unset, two segments and at least 128 MiB
    /// ([`WalConfig::reserve`]).
    pub reserve: Option<ByteSize>,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size: ByteSize::mib(64),
            fsync: true,
            reserve: None,
        }
    }
}

impl WalConfig {
    /// The free space kept: `reserve` when set, else two segments and at least 128 MiB, so
    /// that a larger `segment_size` raises the default with it.
    pub fn reserve(&self) -> ByteSize {
        self.reserve
            .unwrap_or_else(|| ByteSize(self.segment_size.get().saturating_mul(2).max(128 << 20)))
    }

    /// Check the values; keys in errors are relative to `[wal]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.segment_size.get() < (1 << 20) {
            return err(
                "segment_size",
                format!("must be at least 1MiB, got {}", self.segment_size),
            );
        }
        if self.reserve() < self.segment_size {
            return err(
                "reserve",
                format!(
                    "must be at least wal.segment_size ({}), got {}: the write-ahead log frees \
                     space a whole segment at a time, once the stores have committed its \
                     records into the reserved room",
                    self.segment_size,
                    self.reserve()
                ),
            );
        }
        Ok(())
    }
}

/// Log and span indexes (tantivy).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Width of a time partition; retention removes whole partitions.
    pub partition: HumanDuration,
    /// Commit at least this often, so new data is searchable within about this delay.
    pub commit_interval: HumanDuration,
    /// Commit after this many new documents.
    pub commit_docs: u64,
    /// Commit after this many bytes of new documents.
    pub commit_bytes: ByteSize,
    /// Memory budget of each index writer (tantivy's heap), split across its threads.
    pub writer_memory: ByteSize,
    /// Indexing threads per writer.
    pub writer_threads: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            partition: HumanDuration::from_secs(3600),
            commit_interval: HumanDuration::from_secs(1),
            commit_docs: 200_000,
            commit_bytes: ByteSize::mib(64),
            writer_memory: ByteSize::mib(64),
            writer_threads: 1,
        }
    }
}

/// The span store: spans are held in memory (and answer lookups at once) until a block
/// is cut from them, compressed and written durably; until then they are in the WAL only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanStoreConfig {
    /// Cut a block at this many spans.
    pub block_spans: u64,
    /// Cut a block when the spans held take this much memory.
    pub block_bytes: ByteSize,
    /// Cut a block at least this often.
    pub block_interval: HumanDuration,
    /// Merge runs of small blocks of a partition (under half of `block_spans` rows each,
    /// together at most `block_spans`) this often; `0s` never.
    pub compact_interval: HumanDuration,
    /// Most bytes of one trace a block takes: spans of a trace past it are not stored
    /// (counted in `lookout_spanstore_trace_too_large_spans_total`).
    pub max_trace_bytes: ByteSize,
}

impl Default for SpanStoreConfig {
    fn default() -> Self {
        Self {
            block_spans: 131_072,
            block_bytes: ByteSize::mib(32),
            block_interval: HumanDuration::from_secs(30),
            compact_interval: HumanDuration::from_secs(60),
            max_trace_bytes: ByteSize::mib(5),
        }
    }
}

impl SpanStoreConfig {
    /// Check the values; keys in errors are relative to `[spans]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if !(1..=4_194_304).contains(&self.block_spans) {
            return err(
                "block_spans",
                format!("must be between 1 and 4194304, got {}", self.block_spans),
            );
        }
        if !((1 << 20)..=(1 << 30)).contains(&self.block_bytes.get()) {
            return err(
                "block_bytes",
                format!("must be between 1MiB and 1GiB, got {}", self.block_bytes),
            );
        }
        if self.block_interval.get().is_zero() {
            return err("block_interval", "must be greater than 0".into());
        }
        if !((64 << 10)..=(1 << 30)).contains(&self.max_trace_bytes.get()) {
            return err(
                "max_trace_bytes",
                format!(
                    "must be between 64KiB and 1GiB, got {}",
                    self.max_trace_bytes
                ),
            );
        }
        Ok(())
    }
}

/// Back-pressure between the write-ahead log and the indexes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most memory held by requests in flight (being written or waiting to be indexed):
    /// their decoded form and protobuf bytes. Past it the collector answers
    /// 503 / UNAVAILABLE with a retry hint instead of growing memory; a request larger
    /// than the whole budget is taken when nothing else is waiting.
    pub max_pending_bytes: ByteSize,
    /// Retry hint sent with overload responses.
    pub retry_after: HumanDuration,
    /// How long a request may wait for room in the queue before that refusal; "0s"
    /// refuses at once. Requests waiting at once may ask for a quarter of
    /// `max_pending_bytes` between them; others are refused at once.
    pub admission_wait: HumanDuration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_pending_bytes: ByteSize::mib(64),
            retry_after: HumanDuration::from_secs(1),
            admission_wait: HumanDuration::from_secs(2),
        }
    }
}

/// Trace assembly, RED metrics and the service graph.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// A trace is complete once no span of it arrived for this long; spans arriving later
    /// update it (state `updated_late`).
    pub completion_window: HumanDuration,
    /// Memory for traces being assembled (estimated); past it the oldest open traces are
    /// completed early (counted in `lookout_traces_evicted_total`).
    pub max_open_bytes: ByteSize,
    /// Window of the RED figures kept per service and operation (the longest `window=`
    /// `/api/v1/services` and alert rules can ask for).
    pub red_window: HumanDuration,
    /// Most operations tracked per service; others are counted under `__overflow__`.
    pub max_operations_per_service: usize,
    /// Most services tracked; others are counted under `__overflow__`.
    pub max_services: usize,
    /// RED series without a span for this long are dropped.
    pub series_idle_expiry: HumanDuration,
    /// How long a client (or producer) span waits for its server (or consumer) side
    /// before the service-graph edge is given up.
    pub graph_pair_wait: HumanDuration,
    /// How far back `/api/v1/dependencies` can look.
    pub graph_history: HumanDuration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            completion_window: HumanDuration::from_secs(10),
            max_open_bytes: ByteSize::mib(32),
            red_window: HumanDuration::from_secs(3600),
            max_operations_per_service: 200,
            max_services: 1000,
            series_idle_expiry: HumanDuration::from_secs(900),
            graph_pair_wait: HumanDuration::from_secs(10),
            graph_history: HumanDuration::from_secs(86_400),
        }
    }
}

/// Limits of the query API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query (`/api/v1/...`, `/jaeger/api/...`) running longer gets 503.
    pub timeout: HumanDuration,
    /// Queries running at once; more wait (within `timeout`) for a slot.
    pub max_concurrent: usize,
    /// Widest `from`..`to` range of one query; without `from`, a query covers the last
    /// `max_range`.
    pub max_range: HumanDuration,
    /// Longest log query text (`q`), in bytes.
    pub max_query_length: ByteSize,
    /// Most terms, phrases, ranges and set elements in one log query.
    pub max_query_clauses: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: HumanDuration::from_secs(30),
            max_concurrent: 16,
            max_range: HumanDuration::from_secs(31 * 86_400),
            max_query_length: ByteSize::kib(4),
            max_query_clauses: 256,
        }
    }
}

/// OTLP metrics received from services, exposed on `/metrics` for Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A series with no new data point for this long is no longer exposed.
    pub stale_after: HumanDuration,
    /// Most series kept; data points of new series past it are dropped and counted in
    /// `lookout_metrics_points_dropped_total{reason="max_series"}`.
    pub max_series: usize,
    /// Most series kept per service (`job`); past it, data points of the service's new
    /// series are dropped and counted with `reason="max_series_per_service"`, so one
    /// service with runaway labels cannot crowd out the others.
    pub max_series_per_service: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            stale_after: HumanDuration::from_secs(300),
            max_series: 100_000,
            max_series_per_service: 20_000,
        }
    }
}

impl TracesConfig {
    /// Check the values; keys in errors are relative to `[traces]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.completion_window.get() < std::time::Duration::from_secs(1) {
            return err(
                "completion_window",
                format!("must be at least 1s, got {}", self.completion_window),
            );
        }
        if self.max_open_bytes.get() < (1 << 20) {
            return err(
                "max_open_bytes",
                format!("must be at least 1MiB, got {}", self.max_open_bytes),
            );
        }
        if self.red_window.get() < std::time::Duration::from_secs(60) {
            return err(
                "red_window",
                format!("must be at least 1m, got {}", self.red_window),
            );
        }
        if self.max_operations_per_service == 0 || self.max_services == 0 {
            return err(
                if self.max_services == 0 {
                    "max_services"
                } else {
                    "max_operations_per_service"
                },
                "must be at least 1".into(),
            );
        }
        Ok(())
    }
}

impl IndexConfig {
    /// Check the values; keys in errors are relative to `[index]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.partition.get().as_secs() < 60 {
            return err(
                "partition",
                format!("must be at least 1m, got {}", self.partition),
            );
        }
        if self.commit_interval.get().is_zero() {
            return err("commit_interval", "must be greater than 0".into());
        }
        if self.commit_docs == 0 {
            return err("commit_docs", "must be at least 1".into());
        }
        if self.writer_threads == 0 || self.writer_threads > 16 {
            return err(
                "writer_threads",
                format!("must be between 1 and 16, got {}", self.writer_threads),
            );
        }
        // tantivy needs at least 15 MB of heap per indexing thread.
        let per_thread = self.writer_memory.get() / self.writer_threads as u64;
        if per_thread < 15_000_000 {
            return err(
                "writer_memory",
                format!(
                    "must be at least 15MB per writer thread ({} threads), got {}",
                    self.writer_threads, self.writer_memory
                ),
            );
        }
        Ok(())
    }
}

impl Validate for CollectorConfig {
    fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.retention.get().as_secs() < 60 {
            return err(
                "retention",
                format!("must be at least 1m, got {}", self.retention),
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return err("data_dir", "must not be empty".into());
        }
        self.limits.validate_with_prefix("limits")?;
        if let Some(tls) = &self.otlp.tls {
            tls.validate_with_prefix("otlp.tls")?;
        }
        self.otlp.auth.validate_with_prefix("otlp.auth")?;
        self.otlp
            .connections
            .validate_with_prefix("otlp.connections")?;
        if let Some(tls) = &self.api.tls {
            tls.validate_with_prefix("api.tls")?;
        }
        self.api.auth.validate_with_prefix("api.auth")?;
        self.api
            .connections
            .validate_with_prefix("api.connections")?;
        self.wal.validate().map_err(|v| v.under("wal"))?;
        self.traces.validate().map_err(|v| v.under("traces"))?;
        if self.metrics.stale_after.get() < std::time::Duration::from_secs(10) {
            return err(
                "metrics.stale_after",
                format!("must be at least 10s, got {}", self.metrics.stale_after),
            );
        }
        if self.metrics.max_series == 0 {
            return err("metrics.max_series", "must be at least 1".into());
        }
        self.index.validate().map_err(|v| v.under("index"))?;
        self.spans.validate().map_err(|v| v.under("spans"))?;
        if self.ingest.max_pending_bytes.get() < 1 << 20 {
            return err(
                "ingest.max_pending_bytes",
                format!(
                    "must be at least 1MiB, got {}",
                    self.ingest.max_pending_bytes
                ),
            );
        }
        crate::alerts::validate(&self.alerting, &self.alerts, &self.receivers)?;
        if let Some(c) = &self.cluster {
            c.validate().map_err(|v| v.under("cluster"))?;
        }
        // RED rules read the RED state: 10 s slices over `traces.red_window`.
        for (i, r) in self.alerts.iter().enumerate() {
            if r.signal.is_none() {
                continue;
            }
            let key = format!("alerts[{i}].window");
            if r.window.get() < std::time::Duration::from_secs(10) {
                return Err(Violation::new(
                    key,
                    format!(
                        "must be at least 10s, the time slice of RED metrics, got {}",
                        r.window
                    ),
                ));
            }
            if r.window > self.traces.red_window {
                return Err(Violation::new(
                    key,
                    format!(
                        "must be at most traces.red_window ({}), as RED metrics keep no \
                         more, got {}",
                        self.traces.red_window, r.window
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{parsed, refused};

    #[test]
    fn red_rule_windows_fit_the_red_state() {
        let rule = |window: &str, extra: &str| {
            format!(
                "{extra}[[alerts]]\nname = \"slow\"\nsignal = \"request_rate\"\nop = \"<\"\n\
                 threshold = 1.0\nwindow = \"{window}\"\nreceivers = [\"r\"]\n\
                 [receivers.r]\nurl = \"http://127.0.0.1:9/hook\"\n"
            )
        };
        let e = refused::<CollectorConfig>("c.toml", &rule("2h", ""));
        assert_eq!(e.key(), Some("alerts[0].window"));
        assert!(
            e.to_string().contains(
                "must be at most traces.red_window (1h), as RED metrics keep no more, got 2h"
            ),
            "{e}"
        );
        let e = refused::<CollectorConfig>("c.toml", &rule("5s", ""));
        assert_eq!(e.key(), Some("alerts[0].window"));
        assert!(e.to_string().contains("at least 10s"), "{e}");
        let c: CollectorConfig = parsed("c.toml", &rule("2h", "[traces]\nred_window = \"3h\"\n"));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn empty_config_equals_defaults() {
        let c: CollectorConfig = parsed("c.toml", "");
        assert_eq!(c, CollectorConfig::default());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = refused::<CollectorConfig>("c.toml", "[otlp]\ngrcp = \"127.0.0.1:1\"\n");
        assert_eq!(e.key(), Some("otlp.grcp"));
        let msg = e.to_string();
        assert!(
            msg.starts_with("c.toml: key `otlp.grcp`: unknown field"),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = refused::<CollectorConfig>("c.toml", "[limits]\nmax_attributes = \"many\"\n");
        assert_eq!(e.key(), Some("limits.max_attributes"));
    }

    #[test]
    fn bad_units_name_key() {
        let e = refused::<CollectorConfig>("c.toml", "retention = \"a week\"\n");
        assert_eq!(e.key(), Some("retention"));
        let e =
            refused::<CollectorConfig>("c.toml", "[limits]\nmax_request_size = \"4 parsecs\"\n");
        assert_eq!(e.key(), Some("limits.max_request_size"));
        assert!(e.to_string().contains("unknown size unit"), "{e}");
    }

    #[test]
    fn semantic_checks_name_key() {
        let e = refused::<CollectorConfig>(
            "c.toml",
            "[limits]\nmax_request_size = \"8MiB\"\nmax_decompressed_size = \"4MiB\"\n",
        );
        assert_eq!(e.key(), Some("limits.max_decompressed_size"));
        let e = refused::<CollectorConfig>("c.toml", "[index]\nwriter_memory = \"1MiB\"\n");
        assert_eq!(e.key(), Some("index.writer_memory"));
    }

    #[test]
    fn wal_reserve_is_at_least_a_segment() {
        let e = refused::<CollectorConfig>(
            "c.toml",
            "[wal]\nsegment_size = \"16MiB\"\nreserve = \"8MiB\"\n",
        );
        assert_eq!(e.key(), Some("wal.reserve"));
        let msg = e.to_string();
        assert!(
            msg.contains("must be at least wal.segment_size (16MiB), got 8MiB"),
            "{msg}"
        );
        // A larger segment raises the default reserve with it.
        let c: CollectorConfig = parsed("c.toml", "[wal]\nsegment_size = \"256MiB\"\n");
        assert!(c.validate().is_ok());
        assert_eq!(c.wal.reserve(), ByteSize::mib(512));
        assert_eq!(CollectorConfig::default().wal.reserve(), ByteSize::mib(128));
        let e = refused::<CollectorConfig>("c.toml", "[wal]\nreserve = \"0B\"\n");
        assert_eq!(e.key(), Some("wal.reserve"));
        let c: CollectorConfig = parsed(
            "c.toml",
            "[wal]\nsegment_size = \"1MiB\"\nreserve = \"1MiB\"\n",
        );
        assert!(c.validate().is_ok());
        assert_eq!(c.wal.reserve(), ByteSize::mib(1));
        let e = refused::<CollectorConfig>("c.toml", "[wal]\nsegment_size = \"512KiB\"\n");
        assert_eq!(e.key(), Some("wal.segment_size"));
    }

    #[test]
    fn malformed_toml_is_refused() {
        let e = refused::<CollectorConfig>("c.toml", "[otlp\n");
        assert!(e.to_string().starts_with("c.toml:"), "{e}");
    }
}
