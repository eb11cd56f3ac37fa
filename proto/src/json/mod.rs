//! A strict OTLP/JSON codec.
//!
//! Decoding follows the OTLP specification's "JSON Protobuf Encoding" on top of the
//! proto3 JSON mapping: lowerCamelCase keys, trace and span ids as hex (not base64),
//! enums as integers (their proto names are accepted too), 64-bit integers as numbers
//! or decimal strings, doubles as numbers or the strings `"NaN"`, `"Infinity"`,
//! `"-Infinity"` or a decimal string, `null` as the default value, unknown keys ignored.
//!
//! Decoding is all or nothing: a span, log record, metric or data point is never
//! dropped; any fault fails the whole request with a [`JsonError`] whose `path` names the
//! offending field (`resourceSpans[0].scopeSpans[1].spans[3].traceId`).
//!
//! Encoding writes the canonical form (hex ids, enums as integers, 64-bit integers as
//! strings, default and empty fields omitted), which decodes back to an equal message.
//! Not carried in either direction: `Resource.entityRefs` and the profiles-only
//! dictionary indices (`KeyValue.key_strindex`, `AnyValue.string_value_strindex`).

mod de;
mod path;
mod ser;

use crate::otlp::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use crate::otlp::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::otlp::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// Deepest nesting of `AnyValue`s (arrays and key-value lists) that decoding accepts;
/// a top-level attribute value or log body is at depth 1.
const MAX_ANY_VALUE_DEPTH: usize = 64;

/// Deepest nesting of JSON arrays and objects that decoding parses at all. It leaves room
/// for `MAX_ANY_VALUE_DEPTH` levels of key-value lists (4 JSON levels each) under the
/// deepest OTLP envelope (15 levels), and bounds the parser's recursion so that hostile
/// input cannot overflow the stack.
const MAX_JSON_DEPTH: usize = 320;

/// Why an OTLP/JSON body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct JsonError {
    /// Where the fault is: a field path such as `resourceLogs[0].scopeLogs[0].logRecords[2].body`,
    /// or `$` for the document as a whole (not JSON, not UTF-8, not an object, too deep).
    pub path: String,
    /// What is wrong there, in lowercase, e.g. `expected 32 hex characters, got 31`.
    pub reason: String,
}

/// Told the heap bytes a decoding request holds so far, as it grows; an `Err` stops
/// decoding, with that reason at the path reached. See [`decode_traces_metered`].
pub type Grow<'g> = &'g mut dyn FnMut(u64) -> Result<(), String>;

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` (the body of `POST /v1/traces`).
pub fn decode_traces(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    de::decode(body, &mut |_| Ok(()))
}

/// Decodes an OTLP/JSON `ExportLogsServiceRequest` (the body of `POST /v1/logs`).
pub fn decode_logs(body: &[u8]) -> Result<ExportLogsServiceRequest, JsonError> {
    de::decode(body, &mut |_| Ok(()))
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest` (the body of `POST /v1/metrics`).
pub fn decode_metrics(body: &[u8]) -> Result<ExportMetricsServiceRequest, JsonError> {
    de::decode(body, &mut |_| Ok(()))
}

/// Decodes like [`decode_traces`], telling `grow` the heap bytes of the decoded request
/// (strings, ids and repeated fields; an upper bound of what it holds) each time they
/// have grown by 64 KiB, before the growth is allocated where it can be: a caller stops
/// a request whose decoded form would not fit its memory budget by refusing.
pub fn decode_traces_metered(
    body: &[u8],
    grow: Grow<'_>,
) -> Result<ExportTraceServiceRequest, JsonError> {
    de::decode(body, grow)
}

/// [`decode_logs`], metered as [`decode_traces_metered`] is.
pub fn decode_logs_metered(
    body: &[u8],
    grow: Grow<'_>,
) -> Result<ExportLogsServiceRequest, JsonError> {
    de::decode(body, grow)
}

/// [`decode_metrics`], metered as [`decode_traces_metered`] is.
pub fn decode_metrics_metered(
    body: &[u8],
    grow: Grow<'_>,
) -> Result<ExportMetricsServiceRequest, JsonError> {
    de::decode(body, grow)
}

/// Encodes a trace export request as canonical OTLP/JSON.
pub fn encode_traces(req: &ExportTraceServiceRequest) -> Vec<u8> {
    ser::traces(req).into_bytes()
}

/// Encodes a logs export request as canonical OTLP/JSON.
pub fn encode_logs(req: &ExportLogsServiceRequest) -> Vec<u8> {
    ser::logs(req).into_bytes()
}

/// Encodes a metrics export request as canonical OTLP/JSON.
pub fn encode_metrics(req: &ExportMetricsServiceRequest) -> Vec<u8> {
    ser::metrics(req).into_bytes()
}

/// Encodes a trace export response:
/// `{"partialSuccess":{"rejectedSpans":"3","errorMessage":"..."}}`, or `{}` when
/// `partial_success` is `None`.
pub fn encode_trace_response(r: &ExportTraceServiceResponse) -> Vec<u8> {
    let p = r.partial_success.as_ref();
    ser::partial_success(
        "rejectedSpans",
        p.map(|p| (p.rejected_spans, &*p.error_message)),
    )
}

/// Encodes a logs export response:
/// `{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"..."}}`, or `{}` when
/// `partial_success` is `None`.
pub fn encode_logs_response(r: &ExportLogsServiceResponse) -> Vec<u8> {
    let p = r.partial_success.as_ref();
    ser::partial_success(
        "rejectedLogRecords",
        p.map(|p| (p.rejected_log_records, &*p.error_message)),
    )
}

/// Encodes a metrics export response:
/// `{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"..."}}`, or `{}` when
/// `partial_success` is `None`.
pub fn encode_metrics_response(r: &ExportMetricsServiceResponse) -> Vec<u8> {
    let p = r.partial_success.as_ref();
    ser::partial_success(
        "rejectedDataPoints",
        p.map(|p| (p.rejected_data_points, &*p.error_message)),
    )
}
