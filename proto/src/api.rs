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

/// Answer of `GET /api/v1/traces/{trace_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResponse {
    /// Trace id (hex).
    pub trace_id: String,
    /// Every stored span of the trace, by start time.
    pub spans: Vec<SpanView>,
    /// Services taking part, sorted.
    pub services: Vec<String>,
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
}
