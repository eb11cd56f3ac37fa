//! OTLP export requests for tests: resources named by `service.name`, log records with
//! string bodies, spans.

use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// Now, in Unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A string value.
pub fn string_value(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    })
}

/// A string attribute.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: string_value(v),
        ..Default::default()
    }
}

/// A resource with `service.name` only.
pub fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", service)],
        ..Default::default()
    })
}

/// A log record with a string body.
pub fn log_record(body: impl Into<String>, time_unix_nano: u64) -> LogRecord {
    LogRecord {
        time_unix_nano,
        body: string_value(body),
        ..Default::default()
    }
}

/// One resource of `service` with `records` in one scope.
pub fn logs_request(service: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(service),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A logs export request of `service` with one record per body, stamped now.
pub fn log_request(
    service: &str,
    bodies: impl IntoIterator<Item = String>,
) -> ExportLogsServiceRequest {
    logs_request(
        service,
        bodies
            .into_iter()
            .map(|b| log_record(b, now_ns()))
            .collect(),
    )
}

/// One resource of `service` with `spans` in one scope.
pub fn traces_request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(service),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The id of the `seq`th trace of writer `writer`, first byte `tag`.
pub fn writer_trace_id(tag: u8, writer: usize, seq: usize) -> [u8; 16] {
    let mut trace = [0u8; 16];
    trace[0] = tag;
    trace[1] = writer as u8;
    trace[8..].copy_from_slice(&(seq as u64).to_be_bytes());
    trace
}

/// A whole trace of three 1 µs spans starting now: `op1` (span id `[1; 8]`) with its
/// children `op2` and `op3`.
pub fn three_span_trace(service: &str, trace: [u8; 16]) -> ExportTraceServiceRequest {
    let t = now_ns();
    let spans = (1..=3u8)
        .map(|i| Span {
            trace_id: trace.to_vec(),
            span_id: vec![i; 8],
            parent_span_id: if i == 1 { vec![] } else { vec![1; 8] },
            name: format!("op{i}"),
            start_time_unix_nano: t,
            end_time_unix_nano: t + 1000,
            ..Default::default()
        })
        .collect();
    traces_request(service, spans)
}
