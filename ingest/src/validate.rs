//! Checks and limits applied to every export request before it is written.
//!
//! Items that cannot be stored meaningfully (ids of the wrong length, no timestamp,
//! timestamps far in the future) are removed and reported in `partial_success`; attribute
//! lists and string values over the limits are cut, counted and recorded in
//! `dropped_attributes_count`, the way the OpenTelemetry SDKs apply their own limits.

use std::fmt::Write as _;

use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::logs::v1::LogRecord;
use lookout_proto::otlp::metrics::v1::metric::Data;
use lookout_proto::otlp::metrics::v1::Metric;
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::Span;

use crate::batch::Batch;

/// Limits applied to one request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most attributes per entity.
    pub max_attributes: usize,
    /// Longest string value, in bytes.
    pub max_attribute_length: usize,
    /// Latest acceptable timestamp, in Unix nanoseconds.
    pub max_time_unix_nano: u64,
    /// Longest acceptable span (end minus start), in nanoseconds.
    pub max_span_duration_nanos: u64,
}

/// What the checks removed or changed.
#[derive(Debug, Default)]
pub struct Report {
    /// Items removed.
    pub rejected: u64,
    /// Reasons of the first few removals.
    pub message: String,
    reasons: usize,
    /// Attributes dropped or values truncated.
    pub limited: u64,
    /// Whether the batch was changed (it must be re-encoded).
    pub modified: bool,
}

const MAX_REASONS: usize = 3;

impl Report {
    fn reject(&mut self, what: std::fmt::Arguments<'_>) {
        self.rejected += 1;
        self.modified = true;
        self.reasons += 1;
        if self.reasons <= MAX_REASONS {
            if !self.message.is_empty() {
                self.message.push_str("; ");
            }
            let _ = self.message.write_fmt(what);
        } else if self.reasons == MAX_REASONS + 1 {
            self.message.push_str("; ...");
        }
    }
}

fn id_ok(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|b| *b != 0)
}

/// Apply the checks and limits to `batch` in place.
pub fn sanitize(batch: &mut Batch, limits: &Limits, now_unix_nano: u64) -> Report {
    let mut r = Report::default();
    match batch {
        Batch::Traces(req) => sanitize_traces(req, limits, &mut r),
        Batch::Logs(req) => sanitize_logs(req, limits, now_unix_nano, &mut r),
        Batch::Metrics(req) => sanitize_metrics(req, limits, &mut r),
    }
    r
}

/// Limit the attributes of a resource, when there is one.
fn limit_resource(res: Option<&mut Resource>, limits: &Limits, r: &mut Report) {
    if let Some(res) = res {
        limit_attrs(
            &mut res.attributes,
            &mut res.dropped_attributes_count,
            limits,
            r,
        );
    }
}

/// Limit the attributes of an instrumentation scope, when there is one.
fn limit_scope(scope: Option<&mut InstrumentationScope>, limits: &Limits, r: &mut Report) {
    if let Some(scope) = scope {
        limit_attrs(
            &mut scope.attributes,
            &mut scope.dropped_attributes_count,
            limits,
            r,
        );
    }
}

fn sanitize_traces(req: &mut ExportTraceServiceRequest, limits: &Limits, r: &mut Report) {
    for (ri, rs) in req.resource_spans.iter_mut().enumerate() {
        limit_resource(rs.resource.as_mut(), limits, r);
        for (si, ss) in rs.scope_spans.iter_mut().enumerate() {
            limit_scope(ss.scope.as_mut(), limits, r);
            let mut i = 0usize;
            ss.spans.retain_mut(|span| {
                let at = i;
                i += 1;
                if let Some(f) = span_fault(span, limits) {
                    r.reject(format_args!(
                        "resource_spans[{ri}].scope_spans[{si}].spans[{at}]: {f}"
                    ));
                    return false;
                }
                if span.parent_span_id.iter().all(|b| *b == 0) && !span.parent_span_id.is_empty() {
                    span.parent_span_id.clear();
                    r.modified = true;
                }
                limit_attrs(
                    &mut span.attributes,
                    &mut span.dropped_attributes_count,
                    limits,
                    r,
                );
                for ev in &mut span.events {
                    limit_attrs(
                        &mut ev.attributes,
                        &mut ev.dropped_attributes_count,
                        limits,
                        r,
                    );
                }
                for link in &mut span.links {
                    limit_attrs(
                        &mut link.attributes,
                        &mut link.dropped_attributes_count,
                        limits,
                        r,
                    );
                }
                true
            });
        }
    }
}

/// Why `span` cannot be stored, if it cannot.
fn span_fault(span: &Span, limits: &Limits) -> Option<String> {
    if span.trace_id.len() != 16 {
        Some(format!(
            "trace_id must be 16 bytes, got {}",
            span.trace_id.len()
        ))
    } else if !id_ok(&span.trace_id, 16) {
        Some("trace_id is all zeros".to_string())
    } else if span.span_id.len() != 8 {
        Some(format!(
            "span_id must be 8 bytes, got {}",
            span.span_id.len()
        ))
    } else if !id_ok(&span.span_id, 8) {
        Some("span_id is all zeros".to_string())
    } else if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        Some(format!(
            "parent_span_id must be empty or 8 bytes, got {}",
            span.parent_span_id.len()
        ))
    } else if span.start_time_unix_nano == 0 {
        Some("start_time_unix_nano is 0".to_string())
    } else if span.start_time_unix_nano > limits.max_time_unix_nano {
        Some("start_time_unix_nano is too far in the future".to_string())
    } else if span.end_time_unix_nano > limits.max_time_unix_nano {
        // An end of u64::MAX would make the span last for centuries in RED and alerts.
        Some("end_time_unix_nano is too far in the future".to_string())
    } else if span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
        > limits.max_span_duration_nanos
    {
        // A start in 1970 with a correct end would do the same as an end in 2500.
        let secs = |n: u64| lookout_config::HumanDuration::from_secs(n / 1_000_000_000);
        Some(format!(
            "span lasts {}, longer than limits.max_span_duration ({})",
            secs(span.end_time_unix_nano - span.start_time_unix_nano),
            secs(limits.max_span_duration_nanos)
        ))
    } else {
        None
    }
}

fn sanitize_logs(
    req: &mut ExportLogsServiceRequest,
    limits: &Limits,
    now_unix_nano: u64,
    r: &mut Report,
) {
    for (ri, rl) in req.resource_logs.iter_mut().enumerate() {
        limit_resource(rl.resource.as_mut(), limits, r);
        for (si, sl) in rl.scope_logs.iter_mut().enumerate() {
            limit_scope(sl.scope.as_mut(), limits, r);
            let mut i = 0usize;
            sl.log_records.retain_mut(|log| {
                let at = i;
                i += 1;
                // The time an event occurred is optional: fall back to the time it
                // was observed, then to the time it arrived here.
                if log.time_unix_nano == 0 {
                    log.time_unix_nano = if log.observed_time_unix_nano != 0 {
                        log.observed_time_unix_nano
                    } else {
                        now_unix_nano
                    };
                    r.modified = true;
                }
                if let Some(f) = log_fault(log, limits) {
                    r.reject(format_args!(
                        "resource_logs[{ri}].scope_logs[{si}].log_records[{at}]: {f}"
                    ));
                    return false;
                }
                // All-zero ids mean "no id".
                if !log.trace_id.is_empty() && !id_ok(&log.trace_id, 16) {
                    log.trace_id.clear();
                    r.modified = true;
                }
                if !log.span_id.is_empty() && !id_ok(&log.span_id, 8) {
                    log.span_id.clear();
                    r.modified = true;
                }
                if let Some(body) = log.body.as_mut() {
                    limit_value(body, limits, r, 0);
                }
                limit_attrs(
                    &mut log.attributes,
                    &mut log.dropped_attributes_count,
                    limits,
                    r,
                );
                true
            });
        }
    }
}

/// Why `log` cannot be stored, if it cannot (its time already defaulted).
fn log_fault(log: &LogRecord, limits: &Limits) -> Option<String> {
    if !(log.trace_id.is_empty() || log.trace_id.len() == 16) {
        Some(format!(
            "trace_id must be empty or 16 bytes, got {}",
            log.trace_id.len()
        ))
    } else if !(log.span_id.is_empty() || log.span_id.len() == 8) {
        Some(format!(
            "span_id must be empty or 8 bytes, got {}",
            log.span_id.len()
        ))
    } else if log.time_unix_nano > limits.max_time_unix_nano {
        Some("time_unix_nano is too far in the future".to_string())
    } else {
        None
    }
}

fn sanitize_metrics(req: &mut ExportMetricsServiceRequest, limits: &Limits, r: &mut Report) {
    for (ri, rm) in req.resource_metrics.iter_mut().enumerate() {
        limit_resource(rm.resource.as_mut(), limits, r);
        for (si, sm) in rm.scope_metrics.iter_mut().enumerate() {
            let mut mi = 0usize;
            sm.metrics.retain_mut(|m| {
                let at = mi;
                mi += 1;
                let points = crate::batch::metric_points(m.data.as_ref());
                let fault = if m.name.is_empty() {
                    Some("metric name is empty".to_string())
                } else if m.data.is_none() {
                    Some(format!("metric {:?} has no data", m.name))
                } else {
                    None
                };
                if let Some(f) = fault {
                    // Every point of a nameless metric is lost; count them all.
                    for _ in 0..points.max(1) {
                        r.reject(format_args!(
                            "resource_metrics[{ri}].scope_metrics[{si}].metrics[{at}]: {f}"
                        ));
                    }
                    return false;
                }
                sanitize_points(m, limits, r);
                true
            });
        }
    }
}

/// Remove the data points of `m` without a usable time and limit the attributes of
/// the others.
fn sanitize_points(m: &mut Metric, limits: &Limits, r: &mut Report) {
    let name = m.name.clone();
    let max_t = limits.max_time_unix_nano;
    let check = |t: u64, attrs: &mut Vec<KeyValue>, r: &mut Report| -> bool {
        if t == 0 {
            r.reject(format_args!(
                "metric {name:?}: data point time_unix_nano is 0"
            ));
            return false;
        }
        if t > max_t {
            r.reject(format_args!(
                "metric {name:?}: data point time_unix_nano is too far in the future"
            ));
            return false;
        }
        let mut dropped = 0u32;
        limit_attrs(attrs, &mut dropped, limits, r);
        true
    };
    match m.data.as_mut() {
        Some(Data::Gauge(g)) => g
            .data_points
            .retain_mut(|p| check(p.time_unix_nano, &mut p.attributes, r)),
        Some(Data::Sum(s)) => s
            .data_points
            .retain_mut(|p| check(p.time_unix_nano, &mut p.attributes, r)),
        Some(Data::Histogram(h)) => h
            .data_points
            .retain_mut(|p| check(p.time_unix_nano, &mut p.attributes, r)),
        Some(Data::ExponentialHistogram(h)) => h
            .data_points
            .retain_mut(|p| check(p.time_unix_nano, &mut p.attributes, r)),
        Some(Data::Summary(s)) => s
            .data_points
            .retain_mut(|p| check(p.time_unix_nano, &mut p.attributes, r)),
        None => {}
    }
}

fn limit_attrs(attrs: &mut Vec<KeyValue>, dropped: &mut u32, limits: &Limits, r: &mut Report) {
    if attrs.len() > limits.max_attributes {
        let extra = attrs.len() - limits.max_attributes;
        attrs.truncate(limits.max_attributes);
        *dropped = dropped.saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
        r.limited += extra as u64;
        r.modified = true;
    }
    for kv in attrs.iter_mut() {
        if let Some(v) = kv.value.as_mut() {
            limit_value(v, limits, r, 0);
        }
    }
}

const MAX_DEPTH: usize = 16;

/// Cut the elements of a nested array or key-value list at `depth` to the limits; false
/// when it is nested too deep to keep any.
fn limit_nested<T>(values: &mut Vec<T>, depth: usize, limits: &Limits, r: &mut Report) -> bool {
    if depth >= MAX_DEPTH {
        values.clear();
        r.limited += 1;
        r.modified = true;
        return false;
    }
    if values.len() > limits.max_attributes {
        r.limited += (values.len() - limits.max_attributes) as u64;
        values.truncate(limits.max_attributes);
        r.modified = true;
    }
    true
}

fn limit_value(v: &mut AnyValue, limits: &Limits, r: &mut Report, depth: usize) {
    match v.value.as_mut() {
        Some(any_value::Value::StringValue(s)) if s.len() > limits.max_attribute_length => {
            let mut end = limits.max_attribute_length;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            r.limited += 1;
            r.modified = true;
        }
        Some(any_value::Value::BytesValue(b)) if b.len() > limits.max_attribute_length => {
            b.truncate(limits.max_attribute_length);
            r.limited += 1;
            r.modified = true;
        }
        Some(any_value::Value::ArrayValue(a)) => {
            if !limit_nested(&mut a.values, depth, limits, r) {
                return;
            }
            for x in &mut a.values {
                limit_value(x, limits, r, depth + 1);
            }
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            if !limit_nested(&mut kv.values, depth, limits, r) {
                return;
            }
            for x in &mut kv.values {
                if let Some(v) = x.value.as_mut() {
                    limit_value(v, limits, r, depth + 1);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::attr;
    use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
    use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_attributes: 2,
            max_attribute_length: 8,
            max_time_unix_nano: 2_000,
            max_span_duration_nanos: 500,
        }
    }

    fn span(trace: Vec<u8>, id: Vec<u8>, start: u64) -> Span {
        Span {
            trace_id: trace,
            span_id: id,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1,
            ..Default::default()
        }
    }

    #[test]
    fn bad_spans_are_rejected_with_reasons() {
        let spans = vec![
            span(vec![1; 16], vec![1; 8], 1_000),
            span(vec![1; 5], vec![1; 8], 1_000),
            span(vec![0; 16], vec![1; 8], 1_000),
            span(vec![1; 16], vec![1; 8], 0),
            span(vec![1; 16], vec![1; 8], 5_000),
            Span {
                end_time_unix_nano: u64::MAX,
                ..span(vec![1; 16], vec![2; 8], 1_000)
            },
            Span {
                end_time_unix_nano: 1_501,
                ..span(vec![1; 16], vec![3; 8], 1_000)
            },
        ];
        let mut b = Batch::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let r = sanitize(&mut b, &limits(), 1_000);
        assert_eq!(r.rejected, 6);
        assert_eq!(b.item_count(), 1);
        let mut only_end = b.clone();
        if let Batch::Traces(req) = &mut only_end {
            req.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 2_001;
        }
        let r2 = sanitize(&mut only_end, &limits(), 1_000);
        assert_eq!(r2.rejected, 1);
        assert!(
            r2.message
                .contains("spans[0]: end_time_unix_nano is too far in the future"),
            "{}",
            r2.message
        );
        assert!(
            r.message
                .contains("spans[1]: trace_id must be 16 bytes, got 5"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("spans[2]: trace_id is all zeros"),
            "{}",
            r.message
        );
        assert!(r.message.ends_with("; ..."), "{}", r.message);
    }

    #[test]
    fn attribute_limits_truncate_and_count() {
        let mut b = Batch::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: 0,
                        observed_time_unix_nano: 0,
                        attributes: vec![
                            attr::string("a", "é123456789"),
                            attr::string("b", "x"),
                            attr::string("c", "y"),
                        ],
                        trace_id: vec![0; 16],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let r = sanitize(&mut b, &limits(), 1_500);
        assert_eq!(r.rejected, 0);
        assert_eq!(r.limited, 2);
        let Batch::Logs(req) = &b else { unreachable!() };
        let log = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(log.attributes.len(), 2);
        assert_eq!(log.dropped_attributes_count, 1);
        assert_eq!(log.time_unix_nano, 1_500, "falls back to arrival time");
        assert!(log.trace_id.is_empty(), "all-zero id means none");
        let Some(any_value::Value::StringValue(s)) =
            &log.attributes[0].value.as_ref().unwrap().value
        else {
            unreachable!()
        };
        assert_eq!(s, "é123456", "cut on a char boundary");
    }
}
