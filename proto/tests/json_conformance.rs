//! OTLP/JSON conformance: the specification's example files, the mapping's edge cases,
//! every error with its path, nesting bounds, and encode/decode round trips.

#![allow(clippy::unwrap_used, clippy::panic)]

use lookout_proto::json::{
    decode_logs, decode_metrics, decode_traces, encode_logs, encode_logs_response, encode_metrics,
    encode_metrics_response, encode_trace_response, encode_traces, JsonError,
};
use lookout_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use lookout_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use lookout_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use lookout_proto::otlp::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::span::{Event, Link};
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The error message of a decode that must fail.
fn error<T: std::fmt::Debug>(r: Result<T, JsonError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, decoded {v:?}"),
        Err(e) => {
            assert_eq!(e.to_string(), format!("{}: {}", e.path, e.reason));
            e.to_string()
        }
    }
}

fn str_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    })
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A traces request whose only span is `span`.
fn one_span(span: Value) -> Vec<u8> {
    body(&json!({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}))
}

fn decode_one_span(span: Value) -> Result<Span, JsonError> {
    decode_traces(&one_span(span)).map(|r| r.resource_spans[0].scope_spans[0].spans[0].clone())
}

/// A logs request whose only record is `record`.
fn one_log(record: Value) -> Vec<u8> {
    body(&json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}))
}

fn decode_one_log(record: Value) -> Result<LogRecord, JsonError> {
    decode_logs(&one_log(record)).map(|r| r.resource_logs[0].scope_logs[0].log_records[0].clone())
}

/// A metrics request whose only metric is `metric`.
fn one_metric(metric: Value) -> Vec<u8> {
    body(&json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}))
}

fn decode_one_metric(metric: Value) -> Result<Metric, JsonError> {
    decode_metrics(&one_metric(metric))
        .map(|r| r.resource_metrics[0].scope_metrics[0].metrics[0].clone())
}

fn attr_value(v: Value) -> Result<Option<AnyValue>, JsonError> {
    decode_one_log(json!({"attributes": [{"key": "k", "value": v}]}))
        .map(|l| l.attributes[0].value.clone())
}

const SPAN: &str = "resourceSpans[0].scopeSpans[0].spans[0]";
const LOG: &str = "resourceLogs[0].scopeLogs[0].logRecords[0]";
const METRIC: &str = "resourceMetrics[0].scopeMetrics[0].metrics[0]";

/// Asserts that the traces request whose only span is `span` is refused with `want`
/// after the span's path.
#[track_caller]
fn assert_span_error(span: Value, want: &str) {
    assert_eq!(error(decode_one_span(span)), format!("{SPAN}{want}"));
}

/// Asserts that the logs request whose only record is `record` is refused with `want`
/// after the record's path.
#[track_caller]
fn assert_log_error(record: Value, want: &str) {
    assert_eq!(error(decode_one_log(record)), format!("{LOG}{want}"));
}

/// Asserts that the metrics request whose only metric is `metric` is refused with `want`
/// after the metric's path.
#[track_caller]
fn assert_metric_error(metric: Value, want: &str) {
    assert_eq!(error(decode_one_metric(metric)), format!("{METRIC}{want}"));
}

/// Asserts that a log record whose one attribute has the value `v` is refused with `want`
/// after the value's path.
#[track_caller]
fn assert_attr_value_error(v: Value, want: &str) {
    assert_eq!(
        error(attr_value(v)),
        format!("{LOG}.attributes[0].value{want}")
    );
}

// ---------------------------------------------------------------------------------------
// The specification's example files

#[test]
fn spec_example_trace() {
    let req = decode_traces(&fixture("trace.json")).unwrap();
    assert_eq!(req.resource_spans.len(), 1);
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().unwrap();
    assert_eq!(resource.attributes.len(), 1);
    assert_eq!(resource.attributes[0].key, "service.name");
    assert_eq!(resource.attributes[0].value, str_value("my.service"));
    let ss = &rs.scope_spans[0];
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!(scope.name, "my.library");
    assert_eq!(scope.version, "1.0.0");
    assert_eq!(scope.attributes[0].key, "my.scope.attribute");
    assert_eq!(scope.attributes[0].value, str_value("some scope attribute"));
    assert_eq!(ss.spans.len(), 1);
    let span = &ss.spans[0];
    assert_eq!(
        span.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(span.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
    assert_eq!(
        span.parent_span_id,
        hex::decode("eee19b7ec3c1b173").unwrap()
    );
    assert_eq!(span.name, "I'm a server span");
    assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(span.kind, 2);
    assert_eq!(
        span.attributes,
        vec![kv(
            "my.span.attr",
            any_value::Value::StringValue("some value".into())
        )]
    );
    assert_eq!(span.status, None);
    assert!(span.events.is_empty() && span.links.is_empty());
}

#[test]
fn spec_example_logs() {
    let req = decode_logs(&fixture("logs.json")).unwrap();
    let rl = &req.resource_logs[0];
    assert_eq!(
        rl.resource.as_ref().unwrap().attributes[0].value,
        str_value("my.service")
    );
    let sl = &rl.scope_logs[0];
    assert_eq!(sl.scope.as_ref().unwrap().name, "my.library");
    assert_eq!(sl.log_records.len(), 1);
    let log = &sl.log_records[0];
    assert_eq!(log.time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(log.observed_time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(log.severity_text, "Information");
    assert_eq!(log.severity_number, 0);
    assert_eq!(
        log.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(log.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
    assert_eq!(log.body, str_value("Example log record"));
    use any_value::Value as V;
    assert_eq!(
        log.attributes,
        vec![
            kv("string.attribute", V::StringValue("some string".into())),
            kv("boolean.attribute", V::BoolValue(true)),
            kv("int.attribute", V::IntValue(10)),
            kv("double.attribute", V::DoubleValue(637.704)),
            kv(
                "array.attribute",
                V::ArrayValue(ArrayValue {
                    values: vec![str_value("many").unwrap(), str_value("values").unwrap()],
                })
            ),
            kv(
                "map.attribute",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("some.map.key", V::StringValue("some value".into()))],
                })
            ),
        ]
    );
}

#[test]
fn spec_example_metrics() {
    let req = decode_metrics(&fixture("metrics.json")).unwrap();
    let sm = &req.resource_metrics[0].scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().version, "1.0.0");
    assert_eq!(sm.metrics.len(), 3);

    let counter = &sm.metrics[0];
    assert_eq!(
        (counter.name.as_str(), counter.unit.as_str()),
        ("my.counter", "1")
    );
    assert_eq!(counter.description, "I am a Counter");
    let Some(Data::Sum(sum)) = &counter.data else {
        panic!("not a sum: {counter:?}")
    };
    assert_eq!(sum.aggregation_temporality, 1);
    assert!(sum.is_monotonic);
    let p = &sum.data_points[0];
    assert_eq!(p.value, Some(number_data_point::Value::AsDouble(5.0)));
    assert_eq!(p.start_time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(p.time_unix_nano, 1_544_712_660_300_000_000);
    assert_eq!(p.attributes[0].key, "my.counter.attr");

    let gauge = &sm.metrics[1];
    assert_eq!(gauge.name, "my.gauge");
    let Some(Data::Gauge(g)) = &gauge.data else {
        panic!("not a gauge: {gauge:?}")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsDouble(10.0))
    );
    assert_eq!(g.data_points[0].start_time_unix_nano, 0);

    let histogram = &sm.metrics[2];
    let Some(Data::Histogram(h)) = &histogram.data else {
        panic!("not a histogram")
    };
    assert_eq!(h.aggregation_temporality, 1);
    let p = &h.data_points[0];
    assert_eq!(p.count, 2);
    assert_eq!(p.sum, Some(2.0));
    assert_eq!(p.bucket_counts, vec![1, 1]);
    assert_eq!(p.explicit_bounds, vec![1.0]);
    assert_eq!((p.min, p.max), (Some(0.0), Some(2.0)));
    assert_eq!(p.attributes[0].value, str_value("some value"));
}

#[test]
fn spec_examples_round_trip() {
    let t = decode_traces(&fixture("trace.json")).unwrap();
    assert_eq!(decode_traces(&encode_traces(&t)).unwrap(), t);
    let l = decode_logs(&fixture("logs.json")).unwrap();
    assert_eq!(decode_logs(&encode_logs(&l)).unwrap(), l);
    let m = decode_metrics(&fixture("metrics.json")).unwrap();
    assert_eq!(decode_metrics(&encode_metrics(&m)).unwrap(), m);
}

// ---------------------------------------------------------------------------------------
// Accepted variations

#[test]
fn integers_as_numbers_or_strings() {
    let a = decode_one_span(json!({
        "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": 1544712661000000000u64,
        "droppedAttributesCount": "3", "droppedEventsCount": 4, "flags": "769", "kind": 3
    }))
    .unwrap();
    assert_eq!(a.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(a.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(
        (a.dropped_attributes_count, a.dropped_events_count, a.flags),
        (3, 4, 769)
    );
    let max = decode_one_span(json!({"startTimeUnixNano": "18446744073709551615"})).unwrap();
    assert_eq!(max.start_time_unix_nano, u64::MAX);
    // Integral float notation within 2^53 is exact, hence accepted.
    let f = decode_one_span(json!({"startTimeUnixNano": 1.5e15})).unwrap();
    assert_eq!(f.start_time_unix_nano, 1_500_000_000_000_000);

    use any_value::Value as V;
    assert_eq!(
        attr_value(json!({"intValue": "-9223372036854775808"}))
            .unwrap()
            .unwrap()
            .value,
        Some(V::IntValue(i64::MIN))
    );
    assert_eq!(
        attr_value(json!({"intValue": 42})).unwrap().unwrap().value,
        Some(V::IntValue(42))
    );
    assert_eq!(
        attr_value(json!({"intValue": "-0"}))
            .unwrap()
            .unwrap()
            .value,
        Some(V::IntValue(0))
    );

    let m = decode_one_metric(json!({"exponentialHistogram": {"dataPoints": [
        {"scale": "-3", "count": "7", "zeroCount": 2, "positive": {"offset": "-2", "bucketCounts": ["1", 2]}}
    ]}}))
    .unwrap();
    let Some(Data::ExponentialHistogram(h)) = m.data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert_eq!((p.scale, p.count, p.zero_count), (-3, 7, 2));
    assert_eq!(
        p.positive,
        Some(Buckets {
            offset: -2,
            bucket_counts: vec![1, 2]
        })
    );
    assert_eq!(p.negative, None);
}

#[test]
fn doubles_as_numbers_or_strings() {
    let m = decode_one_metric(json!({"gauge": {"dataPoints": [
        {"asDouble": "NaN"}, {"asDouble": "Infinity"}, {"asDouble": "-Infinity"},
        {"asDouble": "2.5"}, {"asDouble": "-1e-3"}, {"asDouble": 7}, {"asDouble": 0.1}
    ]}}))
    .unwrap();
    let Some(Data::Gauge(g)) = m.data else {
        panic!()
    };
    let values: Vec<f64> = g
        .data_points
        .iter()
        .map(|p| match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert!(values[0].is_nan());
    assert_eq!(
        &values[1..],
        &[f64::INFINITY, f64::NEG_INFINITY, 2.5, -1e-3, 7.0, 0.1]
    );

    let m = decode_one_metric(json!({"histogram": {"dataPoints": [{
        "sum": "12.5", "min": "-Infinity", "max": "Infinity", "explicitBounds": ["0.5", 1, "Infinity"]
    }]}}))
    .unwrap();
    let Some(Data::Histogram(h)) = m.data else {
        panic!()
    };
    let p = &h.data_points[0];
    assert_eq!(
        (p.sum, p.min, p.max),
        (Some(12.5), Some(f64::NEG_INFINITY), Some(f64::INFINITY))
    );
    assert_eq!(p.explicit_bounds, vec![0.5, 1.0, f64::INFINITY]);

    let v = attr_value(json!({"doubleValue": "NaN"})).unwrap().unwrap();
    assert!(matches!(v.value, Some(any_value::Value::DoubleValue(d)) if d.is_nan()));
}

#[test]
fn null_means_default() {
    let span = decode_one_span(json!({
        "traceId": null, "spanId": null, "name": null, "kind": null, "startTimeUnixNano": null,
        "attributes": null, "events": null, "links": null, "status": null, "flags": null,
        "droppedAttributesCount": null
    }))
    .unwrap();
    assert_eq!(span, Span::default());

    let req = decode_traces(&body(&json!({"resourceSpans": [
        {"resource": null, "schemaUrl": null, "scopeSpans": [{"scope": null, "spans": null}]}
    ]})))
    .unwrap();
    assert_eq!(req.resource_spans[0].resource, None);
    assert_eq!(req.resource_spans[0].scope_spans[0], ScopeSpans::default());
    assert_eq!(
        decode_traces(b"{\"resourceSpans\": null}").unwrap(),
        ExportTraceServiceRequest::default()
    );

    let log =
        decode_one_log(json!({"body": null, "severityNumber": null, "eventName": null})).unwrap();
    assert_eq!(log, LogRecord::default());
    // A null member of a oneof is not set; the other member still counts.
    assert_eq!(
        attr_value(json!({"stringValue": null})).unwrap(),
        Some(AnyValue { value: None })
    );
    assert_eq!(
        attr_value(json!({"stringValue": null, "boolValue": false})).unwrap(),
        Some(AnyValue {
            value: Some(any_value::Value::BoolValue(false))
        })
    );
    assert_eq!(attr_value(Value::Null).unwrap(), None);

    let m = decode_one_metric(
        json!({"gauge": null, "sum": {"isMonotonic": null, "dataPoints": [
            {"asInt": null, "asDouble": 1.5}
        ]}}),
    )
    .unwrap();
    let Some(Data::Sum(s)) = m.data else { panic!() };
    assert!(!s.is_monotonic);
    assert_eq!(
        s.data_points[0].value,
        Some(number_data_point::Value::AsDouble(1.5))
    );

    let m = decode_one_metric(
        json!({"histogram": {"dataPoints": [{"sum": null, "min": null, "max": 3}]}}),
    )
    .unwrap();
    let Some(Data::Histogram(h)) = m.data else {
        panic!()
    };
    assert_eq!(
        (
            h.data_points[0].sum,
            h.data_points[0].min,
            h.data_points[0].max
        ),
        (None, None, Some(3.0))
    );
}

#[test]
fn present_but_empty_messages_are_kept() {
    let req = decode_traces(&body(&json!({"resourceSpans": [
        {"resource": {}, "scopeSpans": [{"scope": {}, "spans": [{"status": {}}]}]}
    ]})))
    .unwrap();
    let rs = &req.resource_spans[0];
    assert_eq!(rs.resource, Some(Resource::default()));
    assert_eq!(
        rs.scope_spans[0].scope,
        Some(InstrumentationScope::default())
    );
    assert_eq!(rs.scope_spans[0].spans[0].status, Some(Status::default()));
    assert_eq!(
        decode_one_log(json!({"body": {}})).unwrap().body,
        Some(AnyValue { value: None })
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let req = decode_traces(&body(&json!({
        "futureTopLevel": {"a": [1, 2]},
        "resourceSpans": [{
            "resource": {"attributes": [], "entityRefs": [{"type": "service", "idKeys": ["service.name"]}], "x": 1},
            "newThing": "?",
            "scopeSpans": [{"scope": {"name": "s", "extra": true}, "spans": [{
                "name": "op", "trace_id": "not looked at", "someNewField": {"deep": [null]},
                "status": {"code": 2, "detail": "x"},
                "events": [{"name": "e", "future": 1}],
                "links": [{"traceId": "", "future": []}]
            }]}]
        }]
    })))
    .unwrap();
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "op");
    assert!(span.trace_id.is_empty());
    assert_eq!(span.status.as_ref().unwrap().code, 2);
    assert_eq!(span.events[0].name, "e");
    assert_eq!(span.links.len(), 1);
    assert_eq!(req.resource_spans[0].resource, Some(Resource::default()));
    // An AnyValue with only unknown keys is an empty value, not an error.
    assert_eq!(
        attr_value(json!({"futureValue": 1})).unwrap(),
        Some(AnyValue { value: None })
    );
}

#[test]
fn enums_as_integers_or_names() {
    let span = decode_one_span(
        json!({"kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_ERROR"}}),
    )
    .unwrap();
    assert_eq!(span.kind, 2);
    assert_eq!(span.status.unwrap().code, 2);
    let log = decode_one_log(json!({"severityNumber": "SEVERITY_NUMBER_INFO"})).unwrap();
    assert_eq!(log.severity_number, 9);
    let log = decode_one_log(json!({"severityNumber": 17})).unwrap();
    assert_eq!(log.severity_number, 17);
    let m = decode_one_metric(
        json!({"sum": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA"}}),
    )
    .unwrap();
    assert!(matches!(m.data, Some(Data::Sum(ref s)) if s.aggregation_temporality == 1));
    let m = decode_one_metric(
        json!({"histogram": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE"}}),
    )
    .unwrap();
    assert!(matches!(m.data, Some(Data::Histogram(ref h)) if h.aggregation_temporality == 2));
    // Open enums: unknown integers are kept.
    assert_eq!(decode_one_span(json!({"kind": 42})).unwrap().kind, 42);
    assert_eq!(
        decode_one_log(json!({"severityNumber": 99}))
            .unwrap()
            .severity_number,
        99
    );
}

#[test]
fn ids_are_hex_of_either_case() {
    let span = decode_one_span(json!({
        "traceId": "5B8EFFF798038103d269b633813fc60c", "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "", "links": [{"traceId": "00000000000000000000000000000000", "spanId": "0000000000000000"}]
    }))
    .unwrap();
    assert_eq!(
        span.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(span.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
    assert!(span.parent_span_id.is_empty());
    // All-zero ids are left for the collector to judge.
    assert_eq!(span.links[0].trace_id, vec![0; 16]);
    assert_eq!(span.links[0].span_id, vec![0; 8]);
}

#[test]
fn bytes_are_base64_of_either_alphabet() {
    let want = Some(AnyValue {
        value: Some(any_value::Value::BytesValue(vec![0xfb, 0xff, 0x01])),
    });
    for s in ["+/8B", "-_8B"] {
        assert_eq!(attr_value(json!({"bytesValue": s})).unwrap(), want, "{s}");
    }
    let want = Some(AnyValue {
        value: Some(any_value::Value::BytesValue(vec![0xfb, 0xff])),
    });
    for s in ["+/8=", "+/8", "-_8=", "-_8"] {
        assert_eq!(attr_value(json!({"bytesValue": s})).unwrap(), want, "{s}");
    }
    assert_eq!(
        attr_value(json!({"bytesValue": ""})).unwrap(),
        Some(AnyValue {
            value: Some(any_value::Value::BytesValue(vec![]))
        })
    );
}

#[test]
fn log_record_every_field() {
    let log = decode_one_log(json!({
        "timeUnixNano": "1", "observedTimeUnixNano": "2", "severityNumber": 13, "severityText": "WARN",
        "body": {"kvlistValue": {"values": [{"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}, {}]}}}, {"key": "b"}]}},
        "attributes": [{"key": "k", "value": {"boolValue": false}}], "droppedAttributesCount": 5,
        "flags": 1, "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
        "eventName": "browser.click"
    }))
    .unwrap();
    use any_value::Value as V;
    assert_eq!(
        log,
        LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 13,
            severity_text: "WARN".into(),
            body: Some(AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: vec![
                        kv(
                            "a",
                            V::ArrayValue(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(V::IntValue(1))
                                    },
                                    AnyValue { value: None }
                                ],
                            })
                        ),
                        KeyValue {
                            key: "b".into(),
                            value: None,
                            ..Default::default()
                        },
                    ],
                })),
            }),
            attributes: vec![kv("k", V::BoolValue(false))],
            dropped_attributes_count: 5,
            flags: 1,
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            event_name: "browser.click".into(),
        }
    );
}

// ---------------------------------------------------------------------------------------
// Errors, each with its exact path

#[test]
fn trace_id_wrong_length_names_the_path() {
    let spans: Vec<Value> = (0..4)
        .map(|i| json!({"traceId": if i == 3 { "5b8efff798038103d269b633813fc60" } else { "5b8efff798038103d269b633813fc60c" }}))
        .collect();
    let req = json!({"resourceSpans": [{"scopeSpans": [{"spans": []}, {"spans": spans}]}]});
    assert_eq!(
        error(decode_traces(&body(&req))),
        "resourceSpans[0].scopeSpans[1].spans[3].traceId: expected 32 hex characters, got 31"
    );
}

#[test]
fn bad_ids() {
    let cases = [
        (
            json!({"spanId": "eee19b7ec3c1b1"}),
            "spanId: expected 16 hex characters, got 14",
        ),
        (
            json!({"spanId": "eee19b7ec3c1b17z"}),
            "spanId: invalid hex character 'z' at position 15",
        ),
        (
            json!({"parentSpanId": "eee19b7ec3c1b174ff"}),
            "parentSpanId: expected 16 hex characters, got 18",
        ),
        (
            json!({"traceId": "W4796JgDgQPSabYzgT/GDA=="}),
            "traceId: invalid hex character 'W' at position 0",
        ),
        (
            json!({"traceId": 5}),
            "traceId: expected hex string, got number",
        ),
        (
            json!({"links": [{}, {"traceId": "abc"}]}),
            "links[1].traceId: expected 32 hex characters, got 3",
        ),
        (
            json!({"links": [{"spanId": "0102030405060708090a"}]}),
            "links[0].spanId: expected 16 hex characters, got 20",
        ),
    ];
    for (span, want) in cases {
        assert_span_error(span, &format!(".{want}"));
    }
    assert_log_error(
        json!({"traceId": "0102"}),
        ".traceId: expected 32 hex characters, got 4",
    );
    assert_log_error(
        json!({"spanId": "g102030405060708"}),
        ".spanId: invalid hex character 'g' at position 0",
    );
    assert_metric_error(
        json!({"gauge": {"dataPoints": [{"exemplars": [{"spanId": "01"}]}]}}),
        ".gauge.dataPoints[0].exemplars[0].spanId: expected 16 hex characters, got 2",
    );
    assert_metric_error(
        json!({"sum": {"dataPoints": [{"exemplars": [{"traceId": "0102030405060708"}]}]}}),
        ".sum.dataPoints[0].exemplars[0].traceId: expected 32 hex characters, got 16",
    );
}

#[test]
fn wrong_json_types() {
    let cases = [
        (json!({"name": 5}), "name: expected string, got number"),
        (
            json!({"attributes": {}}),
            "attributes: expected array, got object",
        ),
        (
            json!({"attributes": [{"key": 1}]}),
            "attributes[0].key: expected string, got number",
        ),
        (
            json!({"attributes": [{"key": "k", "value": "v"}]}),
            "attributes[0].value: expected object, got string",
        ),
        (
            json!({"attributes": [{"key": "k", "value": {"boolValue": "true"}}]}),
            "attributes[0].value.boolValue: expected boolean, got string",
        ),
        (
            json!({"attributes": [{"key": "k", "value": {"stringValue": 1}}]}),
            "attributes[0].value.stringValue: expected string, got number",
        ),
        (
            json!({"attributes": [{"key": "k", "value": {"arrayValue": []}}]}),
            "attributes[0].value.arrayValue: expected object, got array",
        ),
        (
            json!({"attributes": [{"key": "k", "value": {"kvlistValue": [{"key": "a"}]}}]}),
            "attributes[0].value.kvlistValue: expected object, got array",
        ),
        (
            json!({"attributes": [{"key": "k", "value": {"doubleValue": true}}]}),
            "attributes[0].value.doubleValue: expected number, got boolean",
        ),
        (json!({"status": []}), "status: expected object, got array"),
        (
            json!({"events": [{"name": "a"}, "b"]}),
            "events[1]: expected object, got string",
        ),
        (
            json!({"events": [{"timeUnixNano": [1]}]}),
            "events[0].timeUnixNano: expected integer, got array",
        ),
        (
            json!({"kind": true}),
            "kind: expected span kind (integer or name), got boolean",
        ),
        (
            json!({"kind": "SERVER"}),
            "kind: unknown span kind \"SERVER\"",
        ),
        (
            json!({"status": {"code": "STATUS_CODE_BROKEN"}}),
            "status.code: unknown status code \"STATUS_CODE_BROKEN\"",
        ),
        (
            json!({"status": {"message": false}}),
            "status.message: expected string, got boolean",
        ),
    ];
    for (span, want) in cases {
        assert_span_error(span, &format!(".{want}"));
    }
    let prefix = "resourceSpans[0].scopeSpans[0]";
    assert_eq!(
        error(decode_traces(&body(
            &json!({"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]})
        ))),
        format!("{prefix}.spans: expected array, got string")
    );
    assert_eq!(
        error(decode_traces(&body(
            &json!({"resourceSpans": [{"scopeSpans": [{"spans": [null]}]}]})
        ))),
        format!("{prefix}.spans[0]: expected object, got null")
    );
    assert_eq!(
        error(decode_traces(&body(
            &json!({"resourceSpans": [{"scopeSpans": [{"scope": {"version": 1}}]}]})
        ))),
        format!("{prefix}.scope.version: expected string, got number")
    );
    assert_eq!(
        error(decode_traces(&body(
            &json!({"resourceSpans": [{"resource": {"droppedAttributesCount": "x"}}]})
        ))),
        "resourceSpans[0].resource.droppedAttributesCount: expected an integer, got \"x\""
    );
    assert_eq!(
        error(decode_traces(&body(&json!({"resourceSpans": {}})))),
        "resourceSpans: expected array, got object"
    );
    assert_eq!(
        error(decode_logs(&body(
            &json!({"resourceLogs": [{"schemaUrl": []}]})
        ))),
        "resourceLogs[0].schemaUrl: expected string, got array"
    );
    assert_log_error(
        json!({"severityNumber": "INFO"}),
        ".severityNumber: unknown severity number \"INFO\"",
    );
    assert_log_error(
        json!({"severityText": 9}),
        ".severityText: expected string, got number",
    );
    assert_metric_error(
        json!({"sum": {"isMonotonic": "true"}}),
        ".sum.isMonotonic: expected boolean, got string",
    );
    assert_metric_error(
        json!({"sum": {"aggregationTemporality": "DELTA"}}),
        ".sum.aggregationTemporality: unknown aggregation temporality \"DELTA\"",
    );
    assert_metric_error(
        json!({"summary": {"dataPoints": [{"quantileValues": [{"quantile": "median"}]}]}}),
        ".summary.dataPoints[0].quantileValues[0].quantile: expected a number, got \"median\"",
    );
    assert_metric_error(json!({"exponentialHistogram": {"dataPoints": [{"positive": {"bucketCounts": [1, "x"]}}]}}), ".exponentialHistogram.dataPoints[0].positive.bucketCounts[1]: expected an integer, got \"x\"");
    assert_metric_error(
        json!({"histogram": {"dataPoints": [{"explicitBounds": [1, null]}]}}),
        ".histogram.dataPoints[0].explicitBounds[1]: expected number, got null",
    );
    assert_metric_error(json!({"name": ["x"]}), ".name: expected string, got array");
}

#[test]
fn bad_integers() {
    let cases = [
        (
            json!({"startTimeUnixNano": -1}),
            "startTimeUnixNano: expected a non-negative integer (uint64), got -1",
        ),
        (
            json!({"startTimeUnixNano": "-5"}),
            "startTimeUnixNano: expected a non-negative integer (uint64), got -5",
        ),
        (
            json!({"startTimeUnixNano": "18446744073709551616"}),
            "startTimeUnixNano: 18446744073709551616 is out of range for uint64",
        ),
        (
            json!({"startTimeUnixNano": 1.5}),
            "startTimeUnixNano: expected an integer, got 1.5",
        ),
        (
            json!({"endTimeUnixNano": "12.0"}),
            "endTimeUnixNano: expected an integer, got \"12.0\"",
        ),
        (
            json!({"endTimeUnixNano": "abc"}),
            "endTimeUnixNano: expected an integer, got \"abc\"",
        ),
        (
            json!({"endTimeUnixNano": ""}),
            "endTimeUnixNano: expected an integer, got \"\"",
        ),
        (
            json!({"endTimeUnixNano": true}),
            "endTimeUnixNano: expected integer, got boolean",
        ),
        (
            json!({"droppedAttributesCount": 4294967296u64}),
            "droppedAttributesCount: 4294967296 is out of range for uint32",
        ),
        (
            json!({"droppedLinksCount": -1}),
            "droppedLinksCount: expected a non-negative integer (uint32), got -1",
        ),
        (
            json!({"flags": "4294967296"}),
            "flags: 4294967296 is out of range for uint32",
        ),
        (
            json!({"kind": 2147483648u64}),
            "kind: 2147483648 is out of range for int32",
        ),
    ];
    for (span, want) in cases {
        assert_span_error(span, &format!(".{want}"));
    }
    assert_attr_value_error(
        json!({"intValue": "9223372036854775808"}),
        ".intValue: 9223372036854775808 is out of range for int64",
    );
    assert_attr_value_error(
        json!({"intValue": 2.5}),
        ".intValue: expected an integer, got 2.5",
    );
    assert_metric_error(
        json!({"exponentialHistogram": {"dataPoints": [{"scale": "2147483648"}]}}),
        ".exponentialHistogram.dataPoints[0].scale: 2147483648 is out of range for int32",
    );
    assert_metric_error(json!({"histogram": {"dataPoints": [{"bucketCounts": [1, -2]}]}}), ".histogram.dataPoints[0].bucketCounts[1]: expected a non-negative integer (uint64), got -2");
    // Beyond 2^53 float notation would silently lose digits.
    assert!(error(decode_one_span(
        json!({"startTimeUnixNano": 1.5447126603e18})
    ))
    .contains("not exact"));
}

#[test]
fn bad_doubles() {
    let point = |v: Value| decode_one_metric(json!({"gauge": {"dataPoints": [{"asDouble": v}]}}));
    let at = format!("{METRIC}.gauge.dataPoints[0].asDouble");
    assert_eq!(
        error(point(json!("nan"))),
        format!("{at}: expected a number, got \"nan\"")
    );
    assert_eq!(
        error(point(json!("inf"))),
        format!("{at}: expected a number, got \"inf\"")
    );
    assert_eq!(
        error(point(json!("1,5"))),
        format!("{at}: expected a number, got \"1,5\"")
    );
    assert_eq!(
        error(point(json!("1e400"))),
        format!("{at}: \"1e400\" is out of range for double")
    );
    assert_eq!(
        error(point(json!(false))),
        format!("{at}: expected number, got boolean")
    );
}

#[test]
fn bad_bytes() {
    let at = format!("{LOG}.attributes[0].value.bytesValue");
    assert_eq!(
        error(attr_value(json!({"bytesValue": "a"}))),
        format!("{at}: invalid base64 length 1")
    );
    assert_eq!(
        error(attr_value(json!({"bytesValue": "ab!d"}))),
        format!("{at}: invalid base64 character '!' at position 2")
    );
    assert_eq!(
        error(attr_value(json!({"bytesValue": "+/-_"}))),
        format!("{at}: invalid base64 character '+' at position 0")
    );
    assert_eq!(
        error(attr_value(json!({"bytesValue": [1]}))),
        format!("{at}: expected base64 string, got array")
    );
}

#[test]
fn oneofs_take_one_member() {
    assert_attr_value_error(
        json!({"stringValue": "a", "intValue": 1}),
        ": only one of intValue and stringValue may be set",
    );
    assert_log_error(
        json!({"body": {"arrayValue": {"values": [{"boolValue": true, "doubleValue": 1}]}}}),
        ".body.arrayValue.values[0]: only one of boolValue and doubleValue may be set",
    );
    assert_metric_error(
        json!({"gauge": {}, "sum": {}}),
        ": only one of gauge and sum may be set",
    );
    assert_metric_error(
        json!({"gauge": {"dataPoints": [{"asDouble": 1, "asInt": 1}]}}),
        ".gauge.dataPoints[0]: only one of asDouble and asInt may be set",
    );
    assert_metric_error(
        json!({"gauge": {"dataPoints": [{"exemplars": [{"asDouble": 1, "asInt": "2"}]}]}}),
        ".gauge.dataPoints[0].exemplars[0]: only one of asDouble and asInt may be set",
    );
}

#[test]
fn a_bad_data_point_fails_the_whole_request() {
    let req = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "ok", "gauge": {"dataPoints": [{"asInt": 1}]}},
        {"name": "bad", "sum": {"dataPoints": [{"asInt": "1"}, {"asInt": "2"}, {"asInt": "abc"}]}},
        {"name": "also ok", "gauge": {"dataPoints": [{"asDouble": 1}]}}
    ]}]}]});
    assert_eq!(
        error(decode_metrics(&body(&req))),
        "resourceMetrics[0].scopeMetrics[0].metrics[1].sum.dataPoints[2].asInt: expected an integer, got \"abc\""
    );
    let req = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "h", "histogram": {"dataPoints": [{"count": 1}, {"count": 2, "sum": "x"}]}}
    ]}]}]});
    assert_eq!(
        error(decode_metrics(&body(&req))),
        "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[1].sum: expected a number, got \"x\""
    );
}

#[test]
fn document_level_errors_are_at_root() {
    let e = decode_traces(b"{\"resourceSpans\": [").unwrap_err();
    assert_eq!(e.path, "$");
    assert_eq!(e.reason, "EOF while parsing a list at line 1 column 19");
    let e = decode_logs(b"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "$: EOF while parsing a value at line 1 column 0"
    );
    let e = decode_metrics(b"{\"resourceMetrics\": []} x").unwrap_err();
    assert_eq!(e.to_string(), "$: trailing characters at line 1 column 25");
    let e = decode_logs(b"{\"resourceLogs\": [{\"schemaUrl\": \"\xff\"}]}").unwrap_err();
    assert_eq!(e.path, "$");
    assert!(e.reason.contains("line 1 column"), "{e}");
    let e = decode_traces(b"\xef\xbb\xbf{}").unwrap_err();
    assert_eq!(e.path, "$");
    assert_eq!(error(decode_traces(b"[]")), "$: expected object, got array");
    assert_eq!(
        error(decode_metrics(b"null")),
        "$: expected object, got null"
    );
    assert_eq!(
        decode_traces(b" {} ").unwrap(),
        ExportTraceServiceRequest::default()
    );
}

// ---------------------------------------------------------------------------------------
// Nesting bounds

fn nested_array(levels: usize) -> Value {
    let mut v = json!({"stringValue": "leaf"});
    for _ in 1..levels {
        v = json!({"arrayValue": {"values": [v]}});
    }
    v
}

fn nested_kvlist(levels: usize) -> Value {
    let mut v = json!({"intValue": "1"});
    for _ in 1..levels {
        v = json!({"kvlistValue": {"values": [{"key": "k", "value": v}]}});
    }
    v
}

/// Builds the JSON text directly: `serde_json::Value` itself cannot be nested this deep
/// without the test overflowing its own stack on drop.
fn nested_text(levels: usize) -> String {
    let mut s = String::from("{\"resourceMetrics\":[{\"scopeMetrics\":[{\"metrics\":[{\"gauge\":{\"dataPoints\":[{\"exemplars\":[{\"filteredAttributes\":[{\"key\":\"k\",\"value\":");
    for _ in 1..levels {
        s.push_str("{\"kvlistValue\":{\"values\":[{\"key\":\"k\",\"value\":");
    }
    s.push_str("{\"boolValue\":true}");
    for _ in 1..levels {
        s.push_str("}]}}");
    }
    s.push_str("}]}]}]}}]}]}]}");
    s
}

fn depth_of(v: &AnyValue) -> usize {
    match &v.value {
        Some(any_value::Value::ArrayValue(a)) => {
            1 + a.values.iter().map(depth_of).max().unwrap_or(0)
        }
        Some(any_value::Value::KvlistValue(l)) => {
            1 + l
                .values
                .iter()
                .filter_map(|kv| kv.value.as_ref())
                .map(depth_of)
                .max()
                .unwrap_or(0)
        }
        _ => 1,
    }
}

#[test]
fn any_value_nests_up_to_64_levels() {
    let body64 = decode_one_log(json!({"body": nested_array(64)}))
        .unwrap()
        .body
        .unwrap();
    assert_eq!(depth_of(&body64), 64);
    let attr64 = attr_value(nested_kvlist(64)).unwrap().unwrap();
    assert_eq!(depth_of(&attr64), 64);
    // The deepest envelope (an exemplar's filtered attribute) still fits 64 kvlist levels.
    let m = decode_metrics(nested_text(64).as_bytes()).unwrap();
    let Some(Data::Gauge(g)) = &m.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    let v = g.data_points[0].exemplars[0].filtered_attributes[0]
        .value
        .as_ref()
        .unwrap();
    assert_eq!(depth_of(v), 64);
    // And the encoder's output of such a value decodes again.
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(body64),
                    attributes: vec![KeyValue {
                        key: "a".into(),
                        value: Some(attr64),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(decode_logs(&encode_logs(&req)).unwrap(), req);
}

#[test]
fn any_value_deeper_than_64_levels_is_an_error() {
    let e = decode_one_log(json!({"body": nested_array(65)})).unwrap_err();
    assert_eq!(e.reason, "value nested deeper than 64 levels");
    assert_eq!(
        e.path,
        format!("{LOG}.body{}", ".arrayValue.values[0]".repeat(64))
    );
    let e = attr_value(nested_kvlist(65)).unwrap_err();
    assert_eq!(e.reason, "value nested deeper than 64 levels");
    assert!(
        e.path.starts_with(&format!(
            "{LOG}.attributes[0].value.kvlistValue.values[0].value."
        )),
        "{}",
        e.path
    );
    let e = decode_metrics(nested_text(65).as_bytes()).unwrap_err();
    assert_eq!(e.reason, "value nested deeper than 64 levels");
}

#[test]
fn hostile_nesting_does_not_overflow_the_stack() {
    let n = 200_000;
    let text = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let e = decode_traces(text.as_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "$: json nested deeper than 320 levels of arrays and objects"
    );
    let text = format!(
        "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{{\"body\":{}",
        "{\"arrayValue\":{\"values\":[".repeat(n)
    );
    assert_eq!(decode_logs(text.as_bytes()).unwrap_err().path, "$");
    let e = decode_metrics(nested_text(100).as_bytes()).unwrap_err();
    assert_eq!(e.path, "$");
    // The deepest input that is parsed at all fits the stack of a test thread (2 MiB).
    let text = format!("{}{}", "[".repeat(320), "]".repeat(320));
    assert_eq!(
        error(decode_traces(text.as_bytes())),
        "$: expected object, got array"
    );
    let text = format!("{}1{}", "{\"a\":".repeat(320), "}".repeat(320));
    assert_eq!(
        decode_traces(text.as_bytes()).unwrap(),
        ExportTraceServiceRequest::default()
    );
}

// ---------------------------------------------------------------------------------------
// Encoding and round trips

fn all_any_values() -> Vec<KeyValue> {
    use any_value::Value as V;
    vec![
        kv(
            "s",
            V::StringValue("héllo \"quoted\" \\ \n\t\u{1} 🚀".into()),
        ),
        kv("empty string", V::StringValue(String::new())),
        kv("t", V::BoolValue(true)),
        kv("f", V::BoolValue(false)),
        kv("i", V::IntValue(i64::MIN)),
        kv("i max", V::IntValue(i64::MAX)),
        kv("zero", V::IntValue(0)),
        kv("d", V::DoubleValue(-1.25e-300)),
        kv("d0", V::DoubleValue(0.0)),
        kv("inf", V::DoubleValue(f64::INFINITY)),
        kv("bytes", V::BytesValue((0..=255).collect())),
        kv("no bytes", V::BytesValue(vec![])),
        kv(
            "array",
            V::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(V::IntValue(1)),
                    },
                    AnyValue { value: None },
                    AnyValue {
                        value: Some(V::ArrayValue(ArrayValue::default())),
                    },
                ],
            }),
        ),
        kv(
            "map",
            V::KvlistValue(KeyValueList {
                values: vec![
                    kv("nested", V::KvlistValue(KeyValueList::default())),
                    KeyValue {
                        key: "no value".into(),
                        value: None,
                        ..Default::default()
                    },
                    KeyValue {
                        key: String::new(),
                        value: Some(AnyValue { value: None }),
                        ..Default::default()
                    },
                ],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
    ]
}

fn rich_resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv(
            "service.name",
            any_value::Value::StringValue("checkout".into()),
        )],
        dropped_attributes_count: 2,
        ..Default::default()
    })
}

fn rich_scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "lib".into(),
        version: "1.2.3".into(),
        attributes: all_any_values(),
        dropped_attributes_count: 1,
    })
}

fn rich_traces() -> ExportTraceServiceRequest {
    let span = Span {
        trace_id: (0..16).map(|i| i * 17).collect(),
        span_id: vec![0xab; 8],
        trace_state: "rojo=00f067aa0ba902b7".into(),
        parent_span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        flags: 0x301,
        name: "POST /pay".into(),
        kind: 3,
        start_time_unix_nano: u64::MAX,
        end_time_unix_nano: 1_544_712_661_000_000_001,
        attributes: all_any_values(),
        dropped_attributes_count: 7,
        events: vec![
            Event {
                time_unix_nano: 5,
                name: "exception".into(),
                attributes: all_any_values(),
                dropped_attributes_count: 1,
            },
            Event::default(),
        ],
        dropped_events_count: 8,
        links: vec![
            Link {
                trace_id: vec![0; 16],
                span_id: vec![0xff; 8],
                trace_state: "a=b".into(),
                attributes: all_any_values(),
                dropped_attributes_count: 3,
                flags: 1,
            },
            Link::default(),
        ],
        dropped_links_count: 9,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: rich_resource(),
                scope_spans: vec![
                    ScopeSpans {
                        scope: rich_scope(),
                        spans: vec![
                            span,
                            Span {
                                kind: 77,
                                status: Some(Status::default()),
                                ..Default::default()
                            },
                        ],
                        schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
                    },
                    ScopeSpans::default(),
                ],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ResourceSpans {
                resource: Some(Resource::default()),
                ..Default::default()
            },
        ],
    }
}

fn rich_logs() -> ExportLogsServiceRequest {
    use any_value::Value as V;
    let record = LogRecord {
        time_unix_nano: 1,
        observed_time_unix_nano: u64::MAX - 1,
        severity_number: 21,
        severity_text: "FATAL".into(),
        body: Some(AnyValue {
            value: Some(V::KvlistValue(KeyValueList {
                values: all_any_values(),
            })),
        }),
        attributes: all_any_values(),
        dropped_attributes_count: 4,
        flags: 1,
        trace_id: vec![0xde; 16],
        span_id: vec![0xad; 8],
        event_name: "device.app.lifecycle".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: rich_resource(),
            scope_logs: vec![ScopeLogs {
                scope: rich_scope(),
                log_records: vec![
                    record,
                    LogRecord {
                        body: Some(AnyValue { value: None }),
                        ..Default::default()
                    },
                    LogRecord {
                        severity_number: 255,
                        ..Default::default()
                    },
                ],
                schema_url: "s".into(),
            }],
            schema_url: "r".into(),
        }],
    }
}

fn exemplars() -> Vec<Exemplar> {
    vec![
        Exemplar {
            filtered_attributes: all_any_values(),
            time_unix_nano: 11,
            span_id: vec![7; 8],
            trace_id: vec![9; 16],
            value: Some(exemplar::Value::AsDouble(0.1 + 0.2)),
        },
        Exemplar {
            value: Some(exemplar::Value::AsInt(0)),
            ..Default::default()
        },
        Exemplar {
            value: Some(exemplar::Value::AsInt(i64::MIN)),
            ..Default::default()
        },
        Exemplar::default(),
    ]
}

fn rich_metrics() -> ExportMetricsServiceRequest {
    use number_data_point::Value as NV;
    let number_points = vec![
        NumberDataPoint {
            attributes: all_any_values(),
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            exemplars: exemplars(),
            flags: 1,
            value: Some(NV::AsDouble(3.5)),
        },
        NumberDataPoint {
            value: Some(NV::AsInt(-42)),
            ..Default::default()
        },
        NumberDataPoint {
            value: Some(NV::AsInt(0)),
            ..Default::default()
        },
        NumberDataPoint {
            value: Some(NV::AsDouble(0.0)),
            ..Default::default()
        },
        NumberDataPoint {
            value: Some(NV::AsDouble(f64::NEG_INFINITY)),
            ..Default::default()
        },
        NumberDataPoint::default(),
    ];
    let metrics = vec![
        Metric {
            name: "g".into(),
            description: "a gauge".into(),
            unit: "By".into(),
            metadata: all_any_values(),
            data: Some(Data::Gauge(Gauge {
                data_points: number_points.clone(),
            })),
        },
        Metric {
            name: "s".into(),
            data: Some(Data::Sum(Sum {
                data_points: number_points,
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "h".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![
                    HistogramDataPoint {
                        attributes: all_any_values(),
                        start_time_unix_nano: 3,
                        time_unix_nano: 4,
                        count: u64::MAX,
                        sum: Some(0.0),
                        bucket_counts: vec![0, 1, u64::MAX],
                        explicit_bounds: vec![-1.5, 1e-9, 1e300],
                        exemplars: exemplars(),
                        flags: 1,
                        min: Some(-0.5),
                        max: Some(f64::INFINITY),
                    },
                    HistogramDataPoint::default(),
                ],
                aggregation_temporality: 1,
            })),
            ..Default::default()
        },
        Metric {
            name: "eh".into(),
            data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![
                    ExponentialHistogramDataPoint {
                        attributes: all_any_values(),
                        start_time_unix_nano: 5,
                        time_unix_nano: 6,
                        count: 10,
                        sum: Some(-3.25),
                        scale: -4,
                        zero_count: 2,
                        positive: Some(Buckets {
                            offset: -7,
                            bucket_counts: vec![1, 0, 3],
                        }),
                        negative: Some(Buckets::default()),
                        flags: 1,
                        exemplars: exemplars(),
                        min: Some(0.0),
                        max: Some(99.0),
                        zero_threshold: 1e-12,
                    },
                    ExponentialHistogramDataPoint::default(),
                ],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
        Metric {
            name: "sm".into(),
            data: Some(Data::Summary(Summary {
                data_points: vec![
                    SummaryDataPoint {
                        attributes: all_any_values(),
                        start_time_unix_nano: 7,
                        time_unix_nano: 8,
                        count: 100,
                        sum: 1234.5,
                        quantile_values: vec![
                            ValueAtQuantile {
                                quantile: 0.0,
                                value: 1.0,
                            },
                            ValueAtQuantile {
                                quantile: 0.99,
                                value: 250.0,
                            },
                            ValueAtQuantile::default(),
                        ],
                        flags: 1,
                    },
                    SummaryDataPoint::default(),
                ],
            })),
            ..Default::default()
        },
        Metric {
            name: "no data".into(),
            ..Default::default()
        },
        Metric {
            data: Some(Data::Gauge(Gauge::default())),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: rich_resource(),
            scope_metrics: vec![
                ScopeMetrics {
                    scope: rich_scope(),
                    metrics,
                    schema_url: "s".into(),
                },
                ScopeMetrics::default(),
            ],
            schema_url: "r".into(),
        }],
    }
}

#[test]
fn traces_round_trip() {
    let req = rich_traces();
    assert_eq!(decode_traces(&encode_traces(&req)).unwrap(), req);
    let empty = ExportTraceServiceRequest::default();
    assert_eq!(encode_traces(&empty), b"{}");
    assert_eq!(decode_traces(&encode_traces(&empty)).unwrap(), empty);
}

#[test]
fn logs_round_trip() {
    let req = rich_logs();
    assert_eq!(decode_logs(&encode_logs(&req)).unwrap(), req);
    assert_eq!(encode_logs(&ExportLogsServiceRequest::default()), b"{}");
}

#[test]
fn metrics_round_trip() {
    let req = rich_metrics();
    assert_eq!(decode_metrics(&encode_metrics(&req)).unwrap(), req);
    assert_eq!(
        encode_metrics(&ExportMetricsServiceRequest::default()),
        b"{}"
    );
}

#[test]
fn doubles_round_trip_bit_for_bit() {
    // Awkward doubles: subnormals, extremes, and pseudo-random bit patterns.
    let mut values = vec![
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        5e-324,
        0.1 + 0.2,
        1.0 / 3.0,
        -0.0,
        9007199254740993.0,
        1e21,
        1e-7,
        123_456_789.123_456_79,
        f64::NAN,
        f64::INFINITY,
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        values.push(f64::from_bits(x));
    }
    let points: Vec<NumberDataPoint> = values
        .iter()
        .map(|&d| NumberDataPoint {
            value: Some(number_data_point::Value::AsDouble(d)),
            ..Default::default()
        })
        .collect();
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    data: Some(Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let back = decode_metrics(&encode_metrics(&req)).unwrap();
    let Some(Data::Gauge(g)) = &back.resource_metrics[0].scope_metrics[0].metrics[0].data else {
        panic!()
    };
    assert_eq!(g.data_points.len(), values.len());
    for (p, want) in g.data_points.iter().zip(&values) {
        let Some(number_data_point::Value::AsDouble(got)) = p.value else {
            panic!()
        };
        if want.is_nan() {
            assert!(got.is_nan());
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{want:e}");
        }
    }
}

#[test]
fn encoder_writes_the_canonical_form() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: hex::decode("5B8EFFF798038103D269B633813FC60C").unwrap(),
                    span_id: hex::decode("EEE19B7EC3C1B174").unwrap(),
                    name: "op".into(),
                    kind: 2,
                    start_time_unix_nano: 1_544_712_660_000_000_000,
                    attributes: vec![
                        kv("n", any_value::Value::IntValue(10)),
                        kv("b", any_value::Value::BytesValue(vec![0xfb, 0xff])),
                        kv("d", any_value::Value::DoubleValue(f64::NAN)),
                    ],
                    status: Some(Status {
                        message: String::new(),
                        code: 2,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let text = String::from_utf8(encode_traces(&req)).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","#,
            r#""spanId":"eee19b7ec3c1b174","name":"op","kind":2,"startTimeUnixNano":"1544712660000000000","#,
            r#""attributes":[{"key":"n","value":{"intValue":"10"}},{"key":"b","value":{"bytesValue":"+/8="}},"#,
            r#"{"key":"d","value":{"doubleValue":"NaN"}}],"status":{"code":2}}]}]}]}"#
        )
    );
    let metric = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "m".into(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsInt(0)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 1,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(
        String::from_utf8(encode_metrics(&metric)).unwrap(),
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"dataPoints":[{"asInt":"0"}],"aggregationTemporality":1,"isMonotonic":true}}]}]}]}"#
    );
}

#[test]
fn responses() {
    let r = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 3,
            error_message: "3 spans had no \"name\"".into(),
        }),
    };
    assert_eq!(
        encode_trace_response(&r),
        br#"{"partialSuccess":{"rejectedSpans":"3","errorMessage":"3 spans had no \"name\""}}"#
    );
    assert_eq!(
        encode_trace_response(&ExportTraceServiceResponse::default()),
        b"{}"
    );
    let r = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "too long".into(),
        }),
    };
    assert_eq!(
        encode_logs_response(&r),
        br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"too long"}}"#
    );
    assert_eq!(
        encode_logs_response(&ExportLogsServiceResponse::default()),
        b"{}"
    );
    let r = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: 0,
            error_message: "warning: unit".into(),
        }),
    };
    assert_eq!(
        encode_metrics_response(&r),
        br#"{"partialSuccess":{"errorMessage":"warning: unit"}}"#
    );
    assert_eq!(
        encode_metrics_response(&ExportMetricsServiceResponse::default()),
        b"{}"
    );
    let r = ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess::default()),
    };
    assert_eq!(encode_metrics_response(&r), br#"{"partialSuccess":{}}"#);
}

#[test]
fn large_requests_decode_in_linear_time() {
    // 100k attributes in one span and 50k spans: quadratic work would not finish.
    let attrs: Vec<Value> = (0..100_000)
        .map(|i| json!({"key": format!("k{i}"), "value": {"intValue": i}}))
        .collect();
    let span = decode_one_span(json!({"attributes": attrs})).unwrap();
    assert_eq!(span.attributes.len(), 100_000);
    assert_eq!(span.attributes[99_999].key, "k99999");
    let spans: Vec<Value> = (0..50_000)
        .map(|i| json!({"name": format!("s{i}"), "spanId": format!("{i:016x}")}))
        .collect();
    let req = decode_traces(&body(
        &json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}),
    ))
    .unwrap();
    assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 50_000);
    assert_eq!(decode_traces(&encode_traces(&req)).unwrap(), req);
}

/// One span with `n` empty attributes (`{}`, 3 bytes of JSON each).
fn attribute_bomb(n: usize) -> Vec<u8> {
    let mut out =
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"s","attributes":["#.to_vec();
    for i in 0..n {
        out.extend_from_slice(if i == 0 { b"{}" } else { b",{}" });
    }
    out.extend_from_slice(b"]}]}]}]}");
    out
}

#[test]
fn metered_decoding_reports_what_it_allocates_as_it_grows() {
    use lookout_proto::json::decode_traces_metered;
    let n = 100_000;
    let body = attribute_bomb(n);
    let mut told = Vec::new();
    let req = decode_traces_metered(&body, &mut |heap| {
        told.push(heap);
        Ok(())
    })
    .unwrap();
    let attrs = &req.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(attrs.len(), n);
    // Told in steps, increasing, and at least what the attribute array holds.
    assert!(told.len() >= 5, "{told:?}");
    assert!(told.windows(2).all(|w| w[0] < w[1]), "{told:?}");
    let held = (attrs.capacity() * std::mem::size_of::<KeyValue>()) as u64;
    let last = *told.last().unwrap();
    assert!(
        last >= held / 2 && last <= 2 * held + (64 << 10),
        "{last} vs {held}"
    );

    // Refusing stops the decode where it is, with the refusal's reason.
    let mut calls = 0;
    let e = decode_traces_metered(&body, &mut |heap| {
        calls += 1;
        if heap > 1 << 20 {
            Err("over the budget".to_owned())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert_eq!(e.reason, "over the budget");
    assert!(
        e.path
            .starts_with("resourceSpans[0].scopeSpans[0].spans[0].attributes["),
        "{}",
        e.path
    );
    assert!(calls < 40, "{calls} calls");
    // The unmetered decoder decodes the same request whole.
    assert_eq!(decode_traces(&body).unwrap(), req);
}
