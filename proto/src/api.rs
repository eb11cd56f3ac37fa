//! Request and response types of the collector's query API (`/api/v1`), shared by the
//! collector and the dashboard. Timestamps are RFC 3339 strings with nanoseconds; ids are
//! lowercase hex.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Every error of the query API: `{"error": "..."}` with a 4xx or 5xx status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, naming the parameter at fault.
    pub error: String,
}

/// Answer of `GET /api/v1/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsResponse {
    /// Matching log records in the time range, whatever the limit.
    pub total: u64,
    /// The newest `limit` of them, newest first.
    pub logs: Vec<LogEntry>,
    /// Time spent searching, in milliseconds.
    pub took_ms: f64,
    /// What is missing from the answer (cluster mode: a node that did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the event happened (RFC 3339, nanoseconds).
    pub timestamp: String,
    /// Same instant in Unix nanoseconds.
    pub timestamp_unix_nano: u64,
    /// `service.name` of the resource, `unknown_service` when absent.
    pub service: String,
    /// Normalised severity: `trace`, `debug`, `info`, `warn`, `error`, `fatal` or `unspecified`.
    pub severity: String,
    /// OTLP severity number (1..=24, 0 when unspecified).
    pub severity_number: u32,
    /// Severity text as sent, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity_text: String,
    /// Log body; non-string bodies are rendered as JSON.
    pub body: String,
    /// Log record attributes.
    pub attributes: Map<String, Value>,
    /// Resource attributes.
    pub resource: Map<String, Value>,
    /// Trace id (hex), when the record belongs to a span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Span id (hex), when the record belongs to a span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

/// Answer of `GET /api/v1/traces/{trace_id}`: the assembled trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResponse {
    /// Trace id (hex).
    pub trace_id: String,
    /// Completeness: `open` (spans still arriving), `complete` (idle for the completion
    /// window) or `updated_late` (spans arrived after completion and were re-assembled).
    pub state: String,
    /// Span id of the root, absent when no span qualifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_span_id: Option<String>,
    /// Start of the trace (RFC 3339), after clock-skew adjustment.
    pub start: String,
    /// Start in Unix nanoseconds.
    pub start_unix_nano: u64,
    /// From the earliest start to the latest end, in nanoseconds.
    pub duration_ns: u64,
    /// Stored spans.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Spans whose parent is not in the trace.
    pub orphan_count: u64,
    /// Services taking part, sorted.
    pub services: Vec<String>,
    /// Every span in depth-first tree order (children by start time), ready for a
    /// waterfall; orphans follow as extra subtrees.
    pub spans: Vec<SpanView>,
    /// The critical path: the segments, in time order, that determine the trace's
    /// end-to-end latency.
    pub critical_path: Vec<CriticalSegment>,
    /// What was wrong or adjusted.
    pub warnings: Vec<TraceWarning>,
}

/// One segment of the critical path: while it lasts, this span is what the trace waits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticalSegment {
    /// Span id (hex).
    pub span_id: String,
    /// Segment start, nanoseconds from trace start.
    pub start_offset_ns: u64,
    /// Segment end, nanoseconds from trace start.
    pub end_offset_ns: u64,
}

/// A problem found while assembling a trace, or an adjustment made to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceWarning {
    /// `missing_parent`, `clock_skew`, `duplicate_span_id`, `parent_cycle`, `self_parent`,
    /// `end_before_start`, `multiple_roots`, `no_root`, `truncated`, `unreadable_partition`.
    pub kind: String,
    /// The span concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Human-readable detail.
    pub message: String,
}

/// One span as the query API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanView {
    /// Trace id (hex).
    pub trace_id: String,
    /// Span id (hex).
    pub span_id: String,
    /// Parent span id (hex), absent for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// Depth in the tree: 0 for the root and for the top of each orphan subtree.
    #[serde(default)]
    pub depth: u32,
    /// Start, nanoseconds from the trace start (after clock-skew adjustment).
    #[serde(default)]
    pub offset_ns: u64,
    /// Shift applied to this span's timestamps to correct clock skew, nanoseconds
    /// (`start_unix_nano` already includes it); 0 when none.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub skew_adjustment_ns: i64,
    /// Whether part of this span is on the critical path.
    #[serde(default)]
    pub critical: bool,
    /// `service.name` of the resource.
    pub service: String,
    /// Span name.
    pub operation: String,
    /// `server`, `client`, `producer`, `consumer`, `internal` or `unspecified`.
    pub kind: String,
    /// Start (RFC 3339, nanoseconds).
    pub start: String,
    /// Start in Unix nanoseconds.
    pub start_unix_nano: u64,
    /// Duration in nanoseconds (0 when the end precedes the start).
    pub duration_ns: u64,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// Status message, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    /// Span attributes.
    pub attributes: Map<String, Value>,
    /// Resource attributes.
    pub resource: Map<String, Value>,
    /// Span events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<SpanEvent>,
    /// Links to other spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SpanLink>,
}

/// A span event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanEvent {
    /// When (RFC 3339).
    pub timestamp: String,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Map<String, Value>,
}

/// A link from a span to another span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanLink {
    /// Linked trace id (hex).
    pub trace_id: String,
    /// Linked span id (hex).
    pub span_id: String,
    /// Link attributes.
    pub attributes: Map<String, Value>,
}

/// Answer of `GET /api/v1/traces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracesResponse {
    /// Matching traces, newest first.
    pub traces: Vec<TraceSummary>,
    /// Time spent searching, in milliseconds.
    pub took_ms: f64,
    /// What is missing from the answer (cluster mode: a node that did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Summary of one trace in search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// Trace id (hex).
    pub trace_id: String,
    /// Service of the root span (or of the earliest span when the root is missing).
    pub root_service: String,
    /// Operation of the root span.
    pub root_operation: String,
    /// Start of the trace (RFC 3339).
    pub start: String,
    /// Start in Unix nanoseconds.
    pub start_unix_nano: u64,
    /// From the earliest start to the latest end, in nanoseconds.
    pub duration_ns: u64,
    /// Stored spans.
    pub span_count: u64,
    /// Spans with status error.
    pub error_count: u64,
    /// Services taking part, sorted.
    pub services: Vec<String>,
    /// `open`, `complete` or `updated_late` (see [`TraceResponse::state`]).
    pub state: String,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Answer of `GET /api/v1/services`: RED figures derived from server and consumer spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicesResponse {
    /// Length of the window the figures cover, seconds.
    pub window_s: u64,
    /// Every service seen, sorted by name.
    pub services: Vec<ServiceStats>,
    /// What is missing from the answer (cluster mode: a node that did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// RED figures of one service (all its operations together) or one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedStats {
    /// Requests in the window.
    pub requests: u64,
    /// Requests with status error in the window.
    pub errors: u64,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// `errors / requests` (0 without requests).
    pub error_rate: f64,
    /// Latency percentiles in milliseconds, from the duration histogram (bucket-precise).
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests per second in each slice of the window, oldest first (for sparklines).
    pub rate_history: Vec<f64>,
    /// Example trace ids of recent slow or failed requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exemplar_trace_ids: Vec<String>,
    /// The latency histogram behind the percentiles, as `[bucket, count]` pairs of a
    /// log-linear histogram in microseconds; given only to another cluster member, which
    /// adds the histograms of every member to compute the cluster's percentiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<[u32; 2]>,
}

/// One service in [`ServicesResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// `service.name`.
    pub service: String,
    /// Figures over all operations.
    #[serde(flatten)]
    pub stats: RedStats,
    /// Per operation (normalised names), by request count, highest first.
    pub operations: Vec<OperationStats>,
    /// The signals the service sent (`traces`, `logs`, `metrics`) in the last 24 hours
    /// of this collector's run; a service with no entry spans is listed with zero figures.
    #[serde(default)]
    pub signals: Vec<String>,
    /// When the service last sent any signal, Unix nanoseconds (0: not known).
    #[serde(default)]
    pub last_seen_unix_nano: u64,
}

/// One operation of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationStats {
    /// Normalised operation name (`__overflow__` collects operations past the cap).
    pub operation: String,
    /// Figures of the operation.
    #[serde(flatten)]
    pub stats: RedStats,
}

/// Answer of `GET /api/v1/dependencies`: the service graph over a time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependenciesResponse {
    /// Edges caller → callee, by calls, highest first.
    pub edges: Vec<DependencyEdge>,
    /// What is missing from the answer (cluster mode: a node that did not answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One edge of the service graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencyEdge {
    /// Calling service (client or producer side).
    pub caller: String,
    /// Called service (server or consumer side).
    pub callee: String,
    /// Calls seen in the range.
    pub calls: u64,
    /// Calls where either side had status error.
    pub errors: u64,
    /// Mean latency seen by the server side, ms.
    pub avg_ms: f64,
    /// 95th percentile latency (server side), ms.
    pub p95_ms: f64,
    /// Every call of the range was inferred from the caller's client span alone (its
    /// `peer.service`, `server.address`, ...): the callee sent no span of the call, and
    /// latencies are the client's.
    #[serde(default)]
    pub inferred: bool,
}

/// Answer of `GET /api/v1/alerts`: every rule with its instances, and the receivers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertsResponse {
    /// Rules in config order.
    pub rules: Vec<AlertRuleStatus>,
    /// Receivers by name.
    pub receivers: Vec<ReceiverStatus>,
    /// Cluster mode: why this is not the cluster's state (the alert leader did not
    /// answer, so the answering member's own is shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One rule and its alert instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRuleStatus {
    /// Rule name (`alertname`).
    pub name: String,
    /// What is compared: a span signal (`latency_p99`, ...) or `metric:NAME`.
    pub signal: String,
    /// Service the rule is restricted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Operation the rule is restricted to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// `>`, `>=`, `<` or `<=`.
    pub op: String,
    /// Threshold.
    pub threshold: f64,
    /// Evaluation window, e.g. `1m`.
    pub window: String,
    /// How long the condition must hold before firing.
    #[serde(rename = "for")]
    pub for_: String,
    /// Receivers notified.
    pub receivers: Vec<String>,
    /// The rule's state: `firing` when any instance fires, else `pending` when any is
    /// pending, else `inactive`.
    pub state: String,
    /// Instances (one per service when the rule names none), firing first.
    pub instances: Vec<AlertInstanceStatus>,
}

/// One alert instance of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInstanceStatus {
    /// Labels (`alertname`, `service`, `severity`, ...).
    pub labels: std::collections::BTreeMap<String, String>,
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub state: String,
    /// Latest value (absent when there was no data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When the instance entered its current state (RFC 3339).
    pub since: String,
    /// When it started firing (RFC 3339), while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<String>,
    /// Alertmanager fingerprint of the labels.
    pub fingerprint: String,
    /// Latest notification about this instance, per receiver.
    pub notifications: Vec<NotificationStatus>,
}

/// The latest notification of one receiver about an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationStatus {
    /// Receiver name.
    pub receiver: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// When it was queued (RFC 3339).
    pub queued_at: String,
    /// `pending`, `retrying`, `delivered` or `failed`.
    pub result: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A receiver and its delivery counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiverStatus {
    /// Name.
    pub name: String,
    /// `webhook` or `alertmanager`.
    pub kind: String,
    /// Notifications delivered.
    pub delivered: u64,
    /// Notifications given up on.
    pub failed: u64,
    /// Notifications waiting for delivery or a retry.
    pub pending: u64,
}

/// Answer of `GET /api/v1/cluster`: the members and who consumes which partition, as the
/// answering node sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterResponse {
    /// Whether the node runs in cluster mode; the rest is empty when not.
    pub enabled: bool,
    /// The answering node's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Partitions of the stream.
    pub partitions: u32,
    /// Whether the answering node is connected to the stream.
    pub connected: bool,
    /// Members, by name.
    pub members: Vec<ClusterMember>,
    /// Partitions no member holds a lease on (for a moment after a member stops).
    pub unowned: Vec<u32>,
    /// The member that evaluates the alert rules for the cluster (its
    /// `/api/v1/alerts` is the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts_leader: Option<String>,
    /// Members that did not answer for their own figures (lag, consumed, redelivered).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One member of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Its name.
    pub node: String,
    /// Its query API.
    pub api: String,
    /// Whether it takes partitions (a gateway only publishes).
    pub consume: bool,
    /// Partitions it holds the lease of.
    pub partitions: Vec<u32>,
    /// Messages of its partitions not yet delivered to it, as it last saw them; absent
    /// for a gateway and for a member that did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_messages: Option<u64>,
    /// Messages it consumed into its WAL since it started (absent as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_messages: Option<u64>,
    /// Messages delivered to it more than once since it started (absent as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redelivered_messages: Option<u64>,
}
