//! OTLP/JSON decoding over `serde_json::Value`.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _};
use serde::Deserialize as _;
use serde_json::{Map, Value};

use super::path::Path;
use super::{JsonError, MAX_ANY_VALUE_DEPTH, MAX_JSON_DEPTH};
use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::otlp::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::span::{Event, Link, SpanKind};
use crate::otlp::trace::v1::status::StatusCode;
use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// What every decoding step returns: the decoded value or the fault with its field path.
type DecodeResult<T> = Result<T, JsonError>;

fn err(p: &Path<'_>, reason: impl Into<String>) -> JsonError {
    JsonError {
        path: p.render(),
        reason: reason.into(),
    }
}

/// Parses the body into a `Value`, rejecting non-UTF-8, non-JSON and too deeply nested input.
pub(super) fn parse(body: &[u8]) -> DecodeResult<Value> {
    let root = Path::root();
    check_depth(body)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    // `check_depth` bounds the nesting, so the parser's own limit (128) can go: it would
    // reject legitimate `AnyValue`s nested 40 levels deep.
    de.disable_recursion_limit();
    let value = Value::deserialize(&mut de).map_err(|e| err(&root, e.to_string()))?;
    de.end().map_err(|e| err(&root, e.to_string()))?;
    Ok(value)
}

/// Fails when arrays and objects nest deeper than `MAX_JSON_DEPTH`, in one linear scan
/// that skips string contents. Syntax errors are left to the parser.
fn check_depth(body: &[u8]) -> DecodeResult<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(err(
                        &Path::root(),
                        format!(
                            "json nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
                        ),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scalars

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected(p: &Path<'_>, what: &str, v: &Value) -> JsonError {
    err(p, format!("expected {what}, got {}", kind(v)))
}

fn object<'v>(v: &'v Value, p: &Path<'_>) -> DecodeResult<&'v Map<String, Value>> {
    v.as_object().ok_or_else(|| expected(p, "object", v))
}

/// The non-null fields of the object `v`, each with its path.
fn fields<'a>(
    v: &'a Value,
    p: &'a Path<'a>,
) -> DecodeResult<impl Iterator<Item = (&'a str, &'a Value, Path<'a>)>> {
    Ok(object(v, p)?
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(move |(k, v)| (k.as_str(), v, p.key(k))))
}

/// A repeated field: every element must decode, none is skipped.
fn list<T>(
    v: &Value,
    p: &Path<'_>,
    mut f: impl FnMut(&Value, &Path<'_>) -> DecodeResult<T>,
) -> DecodeResult<Vec<T>> {
    let items = v.as_array().ok_or_else(|| expected(p, "array", v))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(f(item, &p.index(i))?);
    }
    Ok(out)
}

fn string(v: &Value, p: &Path<'_>) -> DecodeResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(expected(p, "string", v)),
    }
}

fn boolean(v: &Value, p: &Path<'_>) -> DecodeResult<bool> {
    v.as_bool().ok_or_else(|| expected(p, "boolean", v))
}

/// Largest integer that a double holds exactly: integers written in float notation
/// (`1e3`, `5.0`) are accepted up to this magnitude only, so that no digit is lost silently.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// An integer written as a JSON number or a decimal string, checked against `[min, max]`.
fn integer(v: &Value, p: &Path<'_>, min: i128, max: i128, ty: &str) -> DecodeResult<i128> {
    let n = match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                i128::from(u)
            } else if let Some(i) = n.as_i64() {
                i128::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f.fract() != 0.0 {
                    return Err(err(p, format!("expected an integer, got {n}")));
                }
                if f.abs() > MAX_EXACT_FLOAT_INT {
                    if f < min as f64 || f > max as f64 {
                        return Err(err(p, format!("{n} is out of range for {ty}")));
                    }
                    return Err(err(
                        p,
                        format!("integer {n} in float notation is not exact; write it without fraction or exponent"),
                    ));
                }
                // Integral and within ±2^53: the conversion is exact.
                f as i128
            }
        }
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(p, format!("expected an integer, got {v}")));
            }
            // At most 39 digits fit an i128; longer strings are out of range anyway.
            match s.parse::<i128>() {
                Ok(n) => n,
                Err(_) => return Err(err(p, format!("{v} is out of range for {ty}"))),
            }
        }
        _ => return Err(expected(p, "integer", v)),
    };
    if n < 0 && min == 0 {
        return Err(err(
            p,
            format!("expected a non-negative integer ({ty}), got {n}"),
        ));
    }
    if n < min || n > max {
        return Err(err(p, format!("{n} is out of range for {ty}")));
    }
    Ok(n)
}

fn uint64(v: &Value, p: &Path<'_>) -> DecodeResult<u64> {
    let n = integer(v, p, 0, i128::from(u64::MAX), "uint64")?;
    u64::try_from(n).map_err(|_| err(p, format!("{n} is out of range for uint64")))
}

fn int64(v: &Value, p: &Path<'_>) -> DecodeResult<i64> {
    let n = integer(v, p, i128::from(i64::MIN), i128::from(i64::MAX), "int64")?;
    i64::try_from(n).map_err(|_| err(p, format!("{n} is out of range for int64")))
}

fn uint32(v: &Value, p: &Path<'_>) -> DecodeResult<u32> {
    let n = integer(v, p, 0, i128::from(u32::MAX), "uint32")?;
    u32::try_from(n).map_err(|_| err(p, format!("{n} is out of range for uint32")))
}

fn int32(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    let n = integer(v, p, i128::from(i32::MIN), i128::from(i32::MAX), "int32")?;
    i32::try_from(n).map_err(|_| err(p, format!("{n} is out of range for int32")))
}

/// A double: a JSON number, `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal string.
fn double(v: &Value, p: &Path<'_>) -> DecodeResult<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| err(p, format!("expected a number, got {n}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => {
                let numeric = !s.is_empty()
                    && s.bytes().any(|b| b.is_ascii_digit())
                    && s.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                match s.parse::<f64>() {
                    Ok(f) if numeric && f.is_finite() => Ok(f),
                    Ok(_) if numeric => Err(err(p, format!("{v} is out of range for double"))),
                    _ => Err(err(p, format!("expected a number, got {v}"))),
                }
            }
        },
        _ => Err(expected(p, "number", v)),
    }
}

/// An enum: its integer value (unknown values are kept, proto3 enums are open) or its
/// proto name.
fn enumeration(
    v: &Value,
    p: &Path<'_>,
    ty: &str,
    from_name: impl Fn(&str) -> Option<i32>,
) -> DecodeResult<i32> {
    match v {
        Value::String(s) => from_name(s).ok_or_else(|| err(p, format!("unknown {ty} {v}"))),
        Value::Number(_) => int32(v, p),
        _ => Err(expected(p, &format!("{ty} (integer or name)"), v)),
    }
}

fn span_kind(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "span kind", |s| {
        SpanKind::from_str_name(s).map(|e| e as i32)
    })
}

fn status_code(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "status code", |s| {
        StatusCode::from_str_name(s).map(|e| e as i32)
    })
}

fn severity_number(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "severity number", |s| {
        SeverityNumber::from_str_name(s).map(|e| e as i32)
    })
}

fn temporality(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "aggregation temporality", |s| {
        AggregationTemporality::from_str_name(s).map(|e| e as i32)
    })
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A trace id (`len` 16) or span id (`len` 8): hex of either case; `""` is absent.
fn id(v: &Value, p: &Path<'_>, len: usize) -> DecodeResult<Vec<u8>> {
    let s = match v {
        Value::String(s) => s,
        _ => return Err(expected(p, "hex string", v)),
    };
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(err(
            p,
            format!("invalid hex character {c:?} at position {i}"),
        ));
    }
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.len() != 2 * len {
        return Err(err(
            p,
            format!("expected {} hex characters, got {}", 2 * len, s.len()),
        ));
    }
    Ok(s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = hex_digit(pair[0]).unwrap_or(0);
            let lo = hex_digit(pair[1]).unwrap_or(0);
            hi << 4 | lo
        })
        .collect())
}

const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Bytes: base64, standard or URL-safe alphabet, padded or not.
fn bytes(v: &Value, p: &Path<'_>) -> DecodeResult<Vec<u8>> {
    let s = match v {
        Value::String(s) => s,
        _ => return Err(expected(p, "base64 string", v)),
    };
    let engine = if s.bytes().any(|b| b == b'-' || b == b'_') {
        &BASE64_URL_SAFE
    } else {
        &BASE64_STANDARD
    };
    engine.decode(s).map_err(|e| {
        let reason = match e {
            DecodeError::InvalidByte(at, b) => {
                format!(
                    "invalid base64 character {:?} at position {at}",
                    char::from(b)
                )
            }
            DecodeError::InvalidLength(n) => format!("invalid base64 length {n}"),
            DecodeError::InvalidLastSymbol(at, b) => format!(
                "invalid last base64 character {:?} at position {at}",
                char::from(b)
            ),
            DecodeError::InvalidPadding => "invalid base64 padding".to_owned(),
        };
        err(p, reason)
    })
}

/// Reports a second member of a oneof.
fn one_of(p: &Path<'_>, first: &str, second: &str) -> JsonError {
    err(p, format!("only one of {first} and {second} may be set"))
}

// ---------------------------------------------------------------------------------------
// Common

fn any_value(v: &Value, p: &Path<'_>, depth: usize) -> DecodeResult<AnyValue> {
    use any_value::Value as V;
    if depth > MAX_ANY_VALUE_DEPTH {
        return Err(err(
            p,
            format!("value nested deeper than {MAX_ANY_VALUE_DEPTH} levels"),
        ));
    }
    let mut found: Option<(&str, V)> = None;
    for (k, v, fp) in fields(v, p)? {
        let value = match k {
            "stringValue" => V::StringValue(string(v, &fp)?),
            "boolValue" => V::BoolValue(boolean(v, &fp)?),
            "intValue" => V::IntValue(int64(v, &fp)?),
            "doubleValue" => V::DoubleValue(double(v, &fp)?),
            "arrayValue" => V::ArrayValue(array_value(v, &fp, depth)?),
            "kvlistValue" => V::KvlistValue(kvlist_value(v, &fp, depth)?),
            "bytesValue" => V::BytesValue(bytes(v, &fp)?),
            _ => continue,
        };
        if let Some((first, _)) = found {
            return Err(one_of(p, first, k));
        }
        found = Some((k, value));
    }
    Ok(AnyValue {
        value: found.map(|(_, v)| v),
    })
}

fn array_value(v: &Value, p: &Path<'_>, depth: usize) -> DecodeResult<ArrayValue> {
    let mut out = ArrayValue::default();
    for (k, v, fp) in fields(v, p)? {
        if k == "values" {
            out.values = list(v, &fp, |v, p| any_value(v, p, depth + 1))?;
        }
    }
    Ok(out)
}

fn kvlist_value(v: &Value, p: &Path<'_>, depth: usize) -> DecodeResult<KeyValueList> {
    let mut out = KeyValueList::default();
    for (k, v, fp) in fields(v, p)? {
        if k == "values" {
            out.values = list(v, &fp, |v, p| key_value(v, p, depth + 1))?;
        }
    }
    Ok(out)
}

fn key_value(v: &Value, p: &Path<'_>, depth: usize) -> DecodeResult<KeyValue> {
    let mut out = KeyValue::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "key" => out.key = string(v, &fp)?,
            "value" => out.value = Some(any_value(v, &fp, depth)?),
            _ => {}
        }
    }
    Ok(out)
}

fn attributes(v: &Value, p: &Path<'_>) -> DecodeResult<Vec<KeyValue>> {
    list(v, p, |v, p| key_value(v, p, 1))
}

fn resource(v: &Value, p: &Path<'_>) -> DecodeResult<Resource> {
    let mut out = Resource::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope(v: &Value, p: &Path<'_>) -> DecodeResult<InstrumentationScope> {
    let mut out = InstrumentationScope::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "name" => out.name = string(v, &fp)?,
            "version" => out.version = string(v, &fp)?,
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Traces

pub(super) fn traces(v: &Value) -> DecodeResult<ExportTraceServiceRequest> {
    let root = Path::root();
    let mut out = ExportTraceServiceRequest::default();
    for (k, v, fp) in fields(v, &root)? {
        if k == "resourceSpans" {
            out.resource_spans = list(v, &fp, resource_spans)?;
        }
    }
    Ok(out)
}

fn resource_spans(v: &Value, p: &Path<'_>) -> DecodeResult<ResourceSpans> {
    let mut out = ResourceSpans::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "resource" => out.resource = Some(resource(v, &fp)?),
            "scopeSpans" => out.scope_spans = list(v, &fp, scope_spans)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_spans(v: &Value, p: &Path<'_>) -> DecodeResult<ScopeSpans> {
    let mut out = ScopeSpans::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "scope" => out.scope = Some(scope(v, &fp)?),
            "spans" => out.spans = list(v, &fp, span)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn span(v: &Value, p: &Path<'_>) -> DecodeResult<Span> {
    let mut out = Span::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "traceId" => out.trace_id = id(v, &fp, 16)?,
            "spanId" => out.span_id = id(v, &fp, 8)?,
            "traceState" => out.trace_state = string(v, &fp)?,
            "parentSpanId" => out.parent_span_id = id(v, &fp, 8)?,
            "flags" => out.flags = uint32(v, &fp)?,
            "name" => out.name = string(v, &fp)?,
            "kind" => out.kind = span_kind(v, &fp)?,
            "startTimeUnixNano" => out.start_time_unix_nano = uint64(v, &fp)?,
            "endTimeUnixNano" => out.end_time_unix_nano = uint64(v, &fp)?,
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            "events" => out.events = list(v, &fp, event)?,
            "droppedEventsCount" => out.dropped_events_count = uint32(v, &fp)?,
            "links" => out.links = list(v, &fp, link)?,
            "droppedLinksCount" => out.dropped_links_count = uint32(v, &fp)?,
            "status" => out.status = Some(status(v, &fp)?),
            _ => {}
        }
    }
    Ok(out)
}

fn event(v: &Value, p: &Path<'_>) -> DecodeResult<Event> {
    let mut out = Event::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "timeUnixNano" => out.time_unix_nano = uint64(v, &fp)?,
            "name" => out.name = string(v, &fp)?,
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn link(v: &Value, p: &Path<'_>) -> DecodeResult<Link> {
    let mut out = Link::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "traceId" => out.trace_id = id(v, &fp, 16)?,
            "spanId" => out.span_id = id(v, &fp, 8)?,
            "traceState" => out.trace_state = string(v, &fp)?,
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            "flags" => out.flags = uint32(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn status(v: &Value, p: &Path<'_>) -> DecodeResult<Status> {
    let mut out = Status::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "message" => out.message = string(v, &fp)?,
            "code" => out.code = status_code(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Logs

pub(super) fn logs(v: &Value) -> DecodeResult<ExportLogsServiceRequest> {
    let root = Path::root();
    let mut out = ExportLogsServiceRequest::default();
    for (k, v, fp) in fields(v, &root)? {
        if k == "resourceLogs" {
            out.resource_logs = list(v, &fp, resource_logs)?;
        }
    }
    Ok(out)
}

fn resource_logs(v: &Value, p: &Path<'_>) -> DecodeResult<ResourceLogs> {
    let mut out = ResourceLogs::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "resource" => out.resource = Some(resource(v, &fp)?),
            "scopeLogs" => out.scope_logs = list(v, &fp, scope_logs)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_logs(v: &Value, p: &Path<'_>) -> DecodeResult<ScopeLogs> {
    let mut out = ScopeLogs::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "scope" => out.scope = Some(scope(v, &fp)?),
            "logRecords" => out.log_records = list(v, &fp, log_record)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn log_record(v: &Value, p: &Path<'_>) -> DecodeResult<LogRecord> {
    let mut out = LogRecord::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "timeUnixNano" => out.time_unix_nano = uint64(v, &fp)?,
            "observedTimeUnixNano" => out.observed_time_unix_nano = uint64(v, &fp)?,
            "severityNumber" => out.severity_number = severity_number(v, &fp)?,
            "severityText" => out.severity_text = string(v, &fp)?,
            "body" => out.body = Some(any_value(v, &fp, 1)?),
            "attributes" => out.attributes = attributes(v, &fp)?,
            "droppedAttributesCount" => out.dropped_attributes_count = uint32(v, &fp)?,
            "flags" => out.flags = uint32(v, &fp)?,
            "traceId" => out.trace_id = id(v, &fp, 16)?,
            "spanId" => out.span_id = id(v, &fp, 8)?,
            "eventName" => out.event_name = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Metrics

pub(super) fn metrics(v: &Value) -> DecodeResult<ExportMetricsServiceRequest> {
    let root = Path::root();
    let mut out = ExportMetricsServiceRequest::default();
    for (k, v, fp) in fields(v, &root)? {
        if k == "resourceMetrics" {
            out.resource_metrics = list(v, &fp, resource_metrics)?;
        }
    }
    Ok(out)
}

fn resource_metrics(v: &Value, p: &Path<'_>) -> DecodeResult<ResourceMetrics> {
    let mut out = ResourceMetrics::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "resource" => out.resource = Some(resource(v, &fp)?),
            "scopeMetrics" => out.scope_metrics = list(v, &fp, scope_metrics)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope_metrics(v: &Value, p: &Path<'_>) -> DecodeResult<ScopeMetrics> {
    let mut out = ScopeMetrics::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "scope" => out.scope = Some(scope(v, &fp)?),
            "metrics" => out.metrics = list(v, &fp, metric)?,
            "schemaUrl" => out.schema_url = string(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn metric(v: &Value, p: &Path<'_>) -> DecodeResult<Metric> {
    use metric::Data;
    let mut out = Metric::default();
    let mut data: Option<&str> = None;
    for (k, v, fp) in fields(v, p)? {
        let d = match k {
            "name" => {
                out.name = string(v, &fp)?;
                continue;
            }
            "description" => {
                out.description = string(v, &fp)?;
                continue;
            }
            "unit" => {
                out.unit = string(v, &fp)?;
                continue;
            }
            "metadata" => {
                out.metadata = attributes(v, &fp)?;
                continue;
            }
            "gauge" => Data::Gauge(gauge(v, &fp)?),
            "sum" => Data::Sum(sum(v, &fp)?),
            "histogram" => Data::Histogram(histogram(v, &fp)?),
            "exponentialHistogram" => Data::ExponentialHistogram(exponential_histogram(v, &fp)?),
            "summary" => Data::Summary(summary(v, &fp)?),
            _ => continue,
        };
        if let Some(first) = data {
            return Err(one_of(p, first, k));
        }
        data = Some(k);
        out.data = Some(d);
    }
    Ok(out)
}

fn gauge(v: &Value, p: &Path<'_>) -> DecodeResult<Gauge> {
    let mut out = Gauge::default();
    for (k, v, fp) in fields(v, p)? {
        if k == "dataPoints" {
            out.data_points = list(v, &fp, number_data_point)?;
        }
    }
    Ok(out)
}

fn sum(v: &Value, p: &Path<'_>) -> DecodeResult<Sum> {
    let mut out = Sum::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "dataPoints" => out.data_points = list(v, &fp, number_data_point)?,
            "aggregationTemporality" => out.aggregation_temporality = temporality(v, &fp)?,
            "isMonotonic" => out.is_monotonic = boolean(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn histogram(v: &Value, p: &Path<'_>) -> DecodeResult<Histogram> {
    let mut out = Histogram::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "dataPoints" => out.data_points = list(v, &fp, histogram_data_point)?,
            "aggregationTemporality" => out.aggregation_temporality = temporality(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn exponential_histogram(v: &Value, p: &Path<'_>) -> DecodeResult<ExponentialHistogram> {
    let mut out = ExponentialHistogram::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "dataPoints" => out.data_points = list(v, &fp, exponential_histogram_data_point)?,
            "aggregationTemporality" => out.aggregation_temporality = temporality(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn summary(v: &Value, p: &Path<'_>) -> DecodeResult<Summary> {
    let mut out = Summary::default();
    for (k, v, fp) in fields(v, p)? {
        if k == "dataPoints" {
            out.data_points = list(v, &fp, summary_data_point)?;
        }
    }
    Ok(out)
}

fn number_data_point(v: &Value, p: &Path<'_>) -> DecodeResult<NumberDataPoint> {
    use number_data_point::Value as V;
    let mut out = NumberDataPoint::default();
    let mut value: Option<&str> = None;
    for (k, v, fp) in fields(v, p)? {
        let val = match k {
            "attributes" => {
                out.attributes = attributes(v, &fp)?;
                continue;
            }
            "startTimeUnixNano" => {
                out.start_time_unix_nano = uint64(v, &fp)?;
                continue;
            }
            "timeUnixNano" => {
                out.time_unix_nano = uint64(v, &fp)?;
                continue;
            }
            "exemplars" => {
                out.exemplars = list(v, &fp, exemplar)?;
                continue;
            }
            "flags" => {
                out.flags = uint32(v, &fp)?;
                continue;
            }
            "asDouble" => V::AsDouble(double(v, &fp)?),
            "asInt" => V::AsInt(int64(v, &fp)?),
            _ => continue,
        };
        if let Some(first) = value {
            return Err(one_of(p, first, k));
        }
        value = Some(k);
        out.value = Some(val);
    }
    Ok(out)
}

fn exemplar(v: &Value, p: &Path<'_>) -> DecodeResult<Exemplar> {
    use exemplar::Value as V;
    let mut out = Exemplar::default();
    let mut value: Option<&str> = None;
    for (k, v, fp) in fields(v, p)? {
        let val = match k {
            "filteredAttributes" => {
                out.filtered_attributes = attributes(v, &fp)?;
                continue;
            }
            "timeUnixNano" => {
                out.time_unix_nano = uint64(v, &fp)?;
                continue;
            }
            "spanId" => {
                out.span_id = id(v, &fp, 8)?;
                continue;
            }
            "traceId" => {
                out.trace_id = id(v, &fp, 16)?;
                continue;
            }
            "asDouble" => V::AsDouble(double(v, &fp)?),
            "asInt" => V::AsInt(int64(v, &fp)?),
            _ => continue,
        };
        if let Some(first) = value {
            return Err(one_of(p, first, k));
        }
        value = Some(k);
        out.value = Some(val);
    }
    Ok(out)
}

fn histogram_data_point(v: &Value, p: &Path<'_>) -> DecodeResult<HistogramDataPoint> {
    let mut out = HistogramDataPoint::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "attributes" => out.attributes = attributes(v, &fp)?,
            "startTimeUnixNano" => out.start_time_unix_nano = uint64(v, &fp)?,
            "timeUnixNano" => out.time_unix_nano = uint64(v, &fp)?,
            "count" => out.count = uint64(v, &fp)?,
            "sum" => out.sum = Some(double(v, &fp)?),
            "bucketCounts" => out.bucket_counts = list(v, &fp, uint64)?,
            "explicitBounds" => out.explicit_bounds = list(v, &fp, double)?,
            "exemplars" => out.exemplars = list(v, &fp, exemplar)?,
            "flags" => out.flags = uint32(v, &fp)?,
            "min" => out.min = Some(double(v, &fp)?),
            "max" => out.max = Some(double(v, &fp)?),
            _ => {}
        }
    }
    Ok(out)
}

fn exponential_histogram_data_point(
    v: &Value,
    p: &Path<'_>,
) -> DecodeResult<ExponentialHistogramDataPoint> {
    let mut out = ExponentialHistogramDataPoint::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "attributes" => out.attributes = attributes(v, &fp)?,
            "startTimeUnixNano" => out.start_time_unix_nano = uint64(v, &fp)?,
            "timeUnixNano" => out.time_unix_nano = uint64(v, &fp)?,
            "count" => out.count = uint64(v, &fp)?,
            "sum" => out.sum = Some(double(v, &fp)?),
            "scale" => out.scale = int32(v, &fp)?,
            "zeroCount" => out.zero_count = uint64(v, &fp)?,
            "positive" => out.positive = Some(buckets(v, &fp)?),
            "negative" => out.negative = Some(buckets(v, &fp)?),
            "flags" => out.flags = uint32(v, &fp)?,
            "exemplars" => out.exemplars = list(v, &fp, exemplar)?,
            "min" => out.min = Some(double(v, &fp)?),
            "max" => out.max = Some(double(v, &fp)?),
            "zeroThreshold" => out.zero_threshold = double(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn buckets(v: &Value, p: &Path<'_>) -> DecodeResult<Buckets> {
    let mut out = Buckets::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "offset" => out.offset = int32(v, &fp)?,
            "bucketCounts" => out.bucket_counts = list(v, &fp, uint64)?,
            _ => {}
        }
    }
    Ok(out)
}

fn summary_data_point(v: &Value, p: &Path<'_>) -> DecodeResult<SummaryDataPoint> {
    let mut out = SummaryDataPoint::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "attributes" => out.attributes = attributes(v, &fp)?,
            "startTimeUnixNano" => out.start_time_unix_nano = uint64(v, &fp)?,
            "timeUnixNano" => out.time_unix_nano = uint64(v, &fp)?,
            "count" => out.count = uint64(v, &fp)?,
            "sum" => out.sum = double(v, &fp)?,
            "quantileValues" => out.quantile_values = list(v, &fp, value_at_quantile)?,
            "flags" => out.flags = uint32(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

fn value_at_quantile(v: &Value, p: &Path<'_>) -> DecodeResult<ValueAtQuantile> {
    let mut out = ValueAtQuantile::default();
    for (k, v, fp) in fields(v, p)? {
        match k {
            "quantile" => out.quantile = double(v, &fp)?,
            "value" => out.value = double(v, &fp)?,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn at<T>(f: impl Fn(&Value, &Path<'_>) -> DecodeResult<T>, v: Value) -> DecodeResult<T> {
        let root = Path::root();
        let p = root.key("x");
        f(&v, &p)
    }

    fn reason<T: std::fmt::Debug>(r: DecodeResult<T>) -> String {
        r.unwrap_err().reason
    }

    #[test]
    fn integers_as_numbers_and_strings() {
        assert_eq!(at(uint64, json!(5)).unwrap(), 5);
        assert_eq!(at(uint64, json!("18446744073709551615")).unwrap(), u64::MAX);
        assert_eq!(
            at(uint64, json!(18446744073709551615u64)).unwrap(),
            u64::MAX
        );
        assert_eq!(at(int64, json!("-9223372036854775808")).unwrap(), i64::MIN);
        assert_eq!(at(int64, json!(-3)).unwrap(), -3);
        assert_eq!(at(int64, json!(1e3)).unwrap(), 1000);
        assert_eq!(at(uint32, json!("4294967295")).unwrap(), u32::MAX);
        assert_eq!(at(int32, json!(-2147483648)).unwrap(), i32::MIN);
        assert_eq!(
            reason(at(uint64, json!("18446744073709551616"))),
            "18446744073709551616 is out of range for uint64"
        );
        assert_eq!(
            reason(at(uint64, json!(-1))),
            "expected a non-negative integer (uint64), got -1"
        );
        assert_eq!(
            reason(at(uint64, json!(1.5))),
            "expected an integer, got 1.5"
        );
        assert_eq!(
            reason(at(uint64, json!("1.5"))),
            "expected an integer, got \"1.5\""
        );
        assert_eq!(
            reason(at(uint64, json!(""))),
            "expected an integer, got \"\""
        );
        assert_eq!(
            reason(at(uint64, json!(" 1"))),
            "expected an integer, got \" 1\""
        );
        assert_eq!(
            reason(at(uint64, json!(true))),
            "expected integer, got boolean"
        );
        assert_eq!(
            reason(at(uint32, json!(4294967296u64))),
            "4294967296 is out of range for uint32"
        );
        assert_eq!(
            reason(at(int32, json!("2147483648"))),
            "2147483648 is out of range for int32"
        );
        assert_eq!(
            reason(at(int64, json!("9".repeat(60)))),
            format!("\"{}\" is out of range for int64", "9".repeat(60))
        );
        assert!(reason(at(uint64, json!(1.6e19))).contains("not exact"));
        assert_eq!(
            reason(at(uint64, json!(1e20))),
            "1e+20 is out of range for uint64"
        );
    }

    #[test]
    fn doubles() {
        assert_eq!(at(double, json!(1.5)).unwrap(), 1.5);
        assert_eq!(at(double, json!(7)).unwrap(), 7.0);
        assert_eq!(at(double, json!("-2.5e3")).unwrap(), -2500.0);
        assert!(at(double, json!("NaN")).unwrap().is_nan());
        assert_eq!(at(double, json!("Infinity")).unwrap(), f64::INFINITY);
        assert_eq!(at(double, json!("-Infinity")).unwrap(), f64::NEG_INFINITY);
        assert_eq!(
            reason(at(double, json!("inf"))),
            "expected a number, got \"inf\""
        );
        assert_eq!(
            reason(at(double, json!("nan"))),
            "expected a number, got \"nan\""
        );
        assert_eq!(
            reason(at(double, json!("e"))),
            "expected a number, got \"e\""
        );
        assert_eq!(
            reason(at(double, json!("1e999"))),
            "\"1e999\" is out of range for double"
        );
        assert_eq!(reason(at(double, json!([]))), "expected number, got array");
    }

    #[test]
    fn ids_and_bytes() {
        assert_eq!(
            at(|v, p| id(v, p, 8), json!("00FFaa0102030405")).unwrap(),
            vec![0, 255, 170, 1, 2, 3, 4, 5]
        );
        assert!(at(|v, p| id(v, p, 8), json!("")).unwrap().is_empty());
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("00ffaa01020304"))),
            "expected 16 hex characters, got 14"
        );
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("00ffaa010203040g"))),
            "invalid hex character 'g' at position 15"
        );
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("éé"))),
            "invalid hex character 'é' at position 0"
        );
        assert_eq!(at(bytes, json!("+/8=")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("+/8")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("-_8=")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("-_8")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(
            reason(at(bytes, json!("+_8="))),
            "invalid base64 character '+' at position 0"
        );
        assert_eq!(reason(at(bytes, json!("a"))), "invalid base64 length 1");
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(check_depth(deep.as_bytes()).is_err());
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(check_depth(ok.as_bytes()).is_ok());
        let quoted = format!("[\"\\\"{}\"]", "[".repeat(1000));
        assert!(check_depth(quoted.as_bytes()).is_ok());
        assert!(parse(quoted.as_bytes()).is_ok());
    }
}
