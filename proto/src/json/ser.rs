//! Canonical OTLP/JSON encoding, written straight into a `String`.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::otlp::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, SummaryDataPoint,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::span::{Event, Link};
use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Writes a JSON string literal.
fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes a double: a number in shortest round-trip form, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
fn write_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v == f64::INFINITY {
        out.push_str("\"Infinity\"");
    } else if v == f64::NEG_INFINITY {
        out.push_str("\"-Infinity\"");
    } else {
        // `Debug` is the shortest representation that parses back to the same value and
        // switches to exponent notation for very large and small magnitudes.
        let _ = write!(out, "{v:?}");
    }
}

/// Writes lowercase hex.
fn write_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 2);
    out.push('"');
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out.push('"');
}

/// An object being written; fields at their default value are left out.
struct Obj<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn begin(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, empty: true }
    }

    fn end(self) {
        self.out.push('}');
    }

    /// Starts a field; the caller writes its value.
    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    fn str(&mut self, key: &str, v: &str) {
        if !v.is_empty() {
            write_str(self.key(key), v);
        }
    }

    fn bool(&mut self, key: &str, v: bool) {
        if v {
            self.key(key).push_str("true");
        }
    }

    /// A 32-bit integer or enum, as a JSON number.
    fn int<T: Into<i64>>(&mut self, key: &str, v: T) {
        let v = v.into();
        if v != 0 {
            let _ = write!(self.key(key), "{v}");
        }
    }

    /// A 64-bit integer, as a decimal string.
    fn u64(&mut self, key: &str, v: u64) {
        if v != 0 {
            let _ = write!(self.key(key), "\"{v}\"");
        }
    }

    fn i64(&mut self, key: &str, v: i64) {
        if v != 0 {
            let _ = write!(self.key(key), "\"{v}\"");
        }
    }

    fn f64(&mut self, key: &str, v: f64) {
        if v != 0.0 {
            write_f64(self.key(key), v);
        }
    }

    fn opt_f64(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v {
            write_f64(self.key(key), v);
        }
    }

    fn id(&mut self, key: &str, v: &[u8]) {
        if !v.is_empty() {
            write_hex(self.key(key), v);
        }
    }

    fn msg<T>(&mut self, key: &str, v: Option<&T>, f: impl Fn(&mut String, &T)) {
        if let Some(v) = v {
            f(self.key(key), v);
        }
    }

    fn list<T>(&mut self, key: &str, items: &[T], f: impl Fn(&mut String, &T)) {
        if items.is_empty() {
            return;
        }
        let out = self.key(key);
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            f(out, item);
        }
        out.push(']');
    }
}

fn uint64_item(out: &mut String, v: &u64) {
    let _ = write!(out, "\"{v}\"");
}

fn double_item(out: &mut String, v: &f64) {
    write_f64(out, *v);
}

// ---------------------------------------------------------------------------------------
// Common

fn any_value(out: &mut String, v: &AnyValue) {
    use any_value::Value as V;
    let mut o = Obj::begin(out);
    match &v.value {
        Some(V::StringValue(s)) => write_str(o.key("stringValue"), s),
        Some(V::BoolValue(b)) => o
            .key("boolValue")
            .push_str(if *b { "true" } else { "false" }),
        Some(V::IntValue(i)) => {
            let _ = write!(o.key("intValue"), "\"{i}\"");
        }
        Some(V::DoubleValue(d)) => write_f64(o.key("doubleValue"), *d),
        Some(V::ArrayValue(a)) => {
            let mut inner = Obj::begin(o.key("arrayValue"));
            inner.list("values", &a.values, any_value);
            inner.end();
        }
        Some(V::KvlistValue(kv)) => {
            let mut inner = Obj::begin(o.key("kvlistValue"));
            inner.list("values", &kv.values, key_value);
            inner.end();
        }
        Some(V::BytesValue(b)) => write_str(o.key("bytesValue"), &BASE64.encode(b)),
        // Profiles-only dictionary index: meaningless outside a profiles request.
        Some(V::StringValueStrindex(_)) | None => {}
    }
    o.end();
}

fn key_value(out: &mut String, kv: &KeyValue) {
    let mut o = Obj::begin(out);
    o.str("key", &kv.key);
    o.msg("value", kv.value.as_ref(), any_value);
    o.end();
}

fn resource(out: &mut String, r: &Resource) {
    let mut o = Obj::begin(out);
    o.list("attributes", &r.attributes, key_value);
    o.int("droppedAttributesCount", r.dropped_attributes_count);
    o.end();
}

fn scope(out: &mut String, s: &InstrumentationScope) {
    let mut o = Obj::begin(out);
    o.str("name", &s.name);
    o.str("version", &s.version);
    o.list("attributes", &s.attributes, key_value);
    o.int("droppedAttributesCount", s.dropped_attributes_count);
    o.end();
}

// ---------------------------------------------------------------------------------------
// Traces

pub(super) fn traces(req: &ExportTraceServiceRequest) -> String {
    let mut out = String::new();
    let mut o = Obj::begin(&mut out);
    o.list("resourceSpans", &req.resource_spans, resource_spans);
    o.end();
    out
}

fn resource_spans(out: &mut String, r: &ResourceSpans) {
    let mut o = Obj::begin(out);
    o.msg("resource", r.resource.as_ref(), resource);
    o.list("scopeSpans", &r.scope_spans, scope_spans);
    o.str("schemaUrl", &r.schema_url);
    o.end();
}

fn scope_spans(out: &mut String, s: &ScopeSpans) {
    let mut o = Obj::begin(out);
    o.msg("scope", s.scope.as_ref(), scope);
    o.list("spans", &s.spans, span);
    o.str("schemaUrl", &s.schema_url);
    o.end();
}

fn span(out: &mut String, s: &Span) {
    let mut o = Obj::begin(out);
    o.id("traceId", &s.trace_id);
    o.id("spanId", &s.span_id);
    o.str("traceState", &s.trace_state);
    o.id("parentSpanId", &s.parent_span_id);
    o.int("flags", s.flags);
    o.str("name", &s.name);
    o.int("kind", s.kind);
    o.u64("startTimeUnixNano", s.start_time_unix_nano);
    o.u64("endTimeUnixNano", s.end_time_unix_nano);
    o.list("attributes", &s.attributes, key_value);
    o.int("droppedAttributesCount", s.dropped_attributes_count);
    o.list("events", &s.events, event);
    o.int("droppedEventsCount", s.dropped_events_count);
    o.list("links", &s.links, link);
    o.int("droppedLinksCount", s.dropped_links_count);
    o.msg("status", s.status.as_ref(), status);
    o.end();
}

fn event(out: &mut String, e: &Event) {
    let mut o = Obj::begin(out);
    o.u64("timeUnixNano", e.time_unix_nano);
    o.str("name", &e.name);
    o.list("attributes", &e.attributes, key_value);
    o.int("droppedAttributesCount", e.dropped_attributes_count);
    o.end();
}

fn link(out: &mut String, l: &Link) {
    let mut o = Obj::begin(out);
    o.id("traceId", &l.trace_id);
    o.id("spanId", &l.span_id);
    o.str("traceState", &l.trace_state);
    o.list("attributes", &l.attributes, key_value);
    o.int("droppedAttributesCount", l.dropped_attributes_count);
    o.int("flags", l.flags);
    o.end();
}

fn status(out: &mut String, s: &Status) {
    let mut o = Obj::begin(out);
    o.str("message", &s.message);
    o.int("code", s.code);
    o.end();
}

// ---------------------------------------------------------------------------------------
// Logs

pub(super) fn logs(req: &ExportLogsServiceRequest) -> String {
    let mut out = String::new();
    let mut o = Obj::begin(&mut out);
    o.list("resourceLogs", &req.resource_logs, resource_logs);
    o.end();
    out
}

fn resource_logs(out: &mut String, r: &ResourceLogs) {
    let mut o = Obj::begin(out);
    o.msg("resource", r.resource.as_ref(), resource);
    o.list("scopeLogs", &r.scope_logs, scope_logs);
    o.str("schemaUrl", &r.schema_url);
    o.end();
}

fn scope_logs(out: &mut String, s: &ScopeLogs) {
    let mut o = Obj::begin(out);
    o.msg("scope", s.scope.as_ref(), scope);
    o.list("logRecords", &s.log_records, log_record);
    o.str("schemaUrl", &s.schema_url);
    o.end();
}

fn log_record(out: &mut String, l: &LogRecord) {
    let mut o = Obj::begin(out);
    o.u64("timeUnixNano", l.time_unix_nano);
    o.u64("observedTimeUnixNano", l.observed_time_unix_nano);
    o.int("severityNumber", l.severity_number);
    o.str("severityText", &l.severity_text);
    o.msg("body", l.body.as_ref(), any_value);
    o.list("attributes", &l.attributes, key_value);
    o.int("droppedAttributesCount", l.dropped_attributes_count);
    o.int("flags", l.flags);
    o.id("traceId", &l.trace_id);
    o.id("spanId", &l.span_id);
    o.str("eventName", &l.event_name);
    o.end();
}

// ---------------------------------------------------------------------------------------
// Metrics

pub(super) fn metrics(req: &ExportMetricsServiceRequest) -> String {
    let mut out = String::new();
    let mut o = Obj::begin(&mut out);
    o.list("resourceMetrics", &req.resource_metrics, resource_metrics);
    o.end();
    out
}

fn resource_metrics(out: &mut String, r: &ResourceMetrics) {
    let mut o = Obj::begin(out);
    o.msg("resource", r.resource.as_ref(), resource);
    o.list("scopeMetrics", &r.scope_metrics, scope_metrics);
    o.str("schemaUrl", &r.schema_url);
    o.end();
}

fn scope_metrics(out: &mut String, s: &ScopeMetrics) {
    let mut o = Obj::begin(out);
    o.msg("scope", s.scope.as_ref(), scope);
    o.list("metrics", &s.metrics, metric);
    o.str("schemaUrl", &s.schema_url);
    o.end();
}

fn metric(out: &mut String, m: &Metric) {
    use metric::Data;
    let mut o = Obj::begin(out);
    o.str("name", &m.name);
    o.str("description", &m.description);
    o.str("unit", &m.unit);
    o.list("metadata", &m.metadata, key_value);
    match &m.data {
        Some(Data::Gauge(g)) => {
            let mut d = Obj::begin(o.key("gauge"));
            d.list("dataPoints", &g.data_points, number_data_point);
            d.end();
        }
        Some(Data::Sum(s)) => {
            let mut d = Obj::begin(o.key("sum"));
            d.list("dataPoints", &s.data_points, number_data_point);
            d.int("aggregationTemporality", s.aggregation_temporality);
            d.bool("isMonotonic", s.is_monotonic);
            d.end();
        }
        Some(Data::Histogram(h)) => {
            let mut d = Obj::begin(o.key("histogram"));
            d.list("dataPoints", &h.data_points, histogram_data_point);
            d.int("aggregationTemporality", h.aggregation_temporality);
            d.end();
        }
        Some(Data::ExponentialHistogram(h)) => {
            let mut d = Obj::begin(o.key("exponentialHistogram"));
            d.list(
                "dataPoints",
                &h.data_points,
                exponential_histogram_data_point,
            );
            d.int("aggregationTemporality", h.aggregation_temporality);
            d.end();
        }
        Some(Data::Summary(s)) => {
            let mut d = Obj::begin(o.key("summary"));
            d.list("dataPoints", &s.data_points, summary_data_point);
            d.end();
        }
        None => {}
    }
    o.end();
}

fn number_data_point(out: &mut String, p: &NumberDataPoint) {
    use number_data_point::Value as V;
    let mut o = Obj::begin(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    match p.value {
        Some(V::AsDouble(d)) => write_f64(o.key("asDouble"), d),
        Some(V::AsInt(i)) => {
            let _ = write!(o.key("asInt"), "\"{i}\"");
        }
        None => {}
    }
    o.list("exemplars", &p.exemplars, exemplar);
    o.int("flags", p.flags);
    o.end();
}

fn exemplar(out: &mut String, e: &Exemplar) {
    use exemplar::Value as V;
    let mut o = Obj::begin(out);
    o.list("filteredAttributes", &e.filtered_attributes, key_value);
    o.u64("timeUnixNano", e.time_unix_nano);
    match e.value {
        Some(V::AsDouble(d)) => write_f64(o.key("asDouble"), d),
        Some(V::AsInt(i)) => {
            let _ = write!(o.key("asInt"), "\"{i}\"");
        }
        None => {}
    }
    o.id("spanId", &e.span_id);
    o.id("traceId", &e.trace_id);
    o.end();
}

fn histogram_data_point(out: &mut String, p: &HistogramDataPoint) {
    let mut o = Obj::begin(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.opt_f64("sum", p.sum);
    o.list("bucketCounts", &p.bucket_counts, uint64_item);
    o.list("explicitBounds", &p.explicit_bounds, double_item);
    o.list("exemplars", &p.exemplars, exemplar);
    o.int("flags", p.flags);
    o.opt_f64("min", p.min);
    o.opt_f64("max", p.max);
    o.end();
}

fn exponential_histogram_data_point(out: &mut String, p: &ExponentialHistogramDataPoint) {
    let mut o = Obj::begin(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.opt_f64("sum", p.sum);
    o.int("scale", p.scale);
    o.u64("zeroCount", p.zero_count);
    o.msg("positive", p.positive.as_ref(), buckets);
    o.msg("negative", p.negative.as_ref(), buckets);
    o.int("flags", p.flags);
    o.list("exemplars", &p.exemplars, exemplar);
    o.opt_f64("min", p.min);
    o.opt_f64("max", p.max);
    o.f64("zeroThreshold", p.zero_threshold);
    o.end();
}

fn buckets(out: &mut String, b: &Buckets) {
    let mut o = Obj::begin(out);
    o.int("offset", b.offset);
    o.list("bucketCounts", &b.bucket_counts, uint64_item);
    o.end();
}

fn summary_data_point(out: &mut String, p: &SummaryDataPoint) {
    let mut o = Obj::begin(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.f64("sum", p.sum);
    o.list("quantileValues", &p.quantile_values, value_at_quantile);
    o.int("flags", p.flags);
    o.end();
}

fn value_at_quantile(out: &mut String, q: &ValueAtQuantile) {
    let mut o = Obj::begin(out);
    o.f64("quantile", q.quantile);
    o.f64("value", q.value);
    o.end();
}

// ---------------------------------------------------------------------------------------
// Responses

/// `{"partialSuccess":{"<rejected key>":"<n>","errorMessage":"..."}}`, or `{}`.
pub(super) fn partial_success(rejected_key: &str, p: Option<(i64, &str)>) -> Vec<u8> {
    let mut out = String::new();
    let mut o = Obj::begin(&mut out);
    if let Some((rejected, message)) = p {
        let mut inner = Obj::begin(o.key("partialSuccess"));
        inner.i64(rejected_key, rejected);
        inner.str("errorMessage", message);
        inner.end();
    }
    o.end();
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_strings() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\n\u{1}é\u{7f}");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001é\u{7f}\"");
        let back: String = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(back, "a\"b\\c\n\u{1}é\u{7f}");
    }

    #[test]
    fn writes_doubles() {
        let cases = [
            (0.5, "0.5"),
            (5.0, "5.0"),
            (-0.0, "-0.0"),
            (1e300, "1e300"),
            (1e-7, "1e-7"),
            (f64::NAN, "\"NaN\""),
            (f64::INFINITY, "\"Infinity\""),
            (f64::NEG_INFINITY, "\"-Infinity\""),
        ];
        for (v, want) in cases {
            let mut out = String::new();
            write_f64(&mut out, v);
            assert_eq!(out, want);
        }
    }
}
