use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{
    any_value::Value as V, AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue,
    KeyValueList,
};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric::Data, summary_data_point::ValueAtQuantile,
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::*;
use crate::Batch;

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn attrs(n: usize) -> Vec<KeyValue> {
    (0..n)
        .map(|i| match i % 5 {
            0 => kv(&format!("k{i}"), V::StringValue("x".repeat(i))),
            1 => kv("int", V::IntValue(i as i64)),
            2 => kv("bytes", V::BytesValue(vec![7; i])),
            3 => kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::StringValue("a".into())),
                        },
                        AnyValue {
                            value: Some(V::KvlistValue(KeyValueList {
                                values: vec![kv("inner", V::BoolValue(true))],
                            })),
                        },
                    ],
                }),
            ),
            _ => KeyValue::default(),
        })
        .collect()
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: attrs(7),
        entity_refs: vec![EntityRef {
            r#type: "service".into(),
            id_keys: vec!["service.name".into(), "service.namespace".into()],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "scope".into(),
        version: "1.0".into(),
        attributes: attrs(2),
        ..Default::default()
    })
}

fn traces(spans: usize) -> ExportTraceServiceRequest {
    let span = |i: usize| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        trace_state: "a=b".into(),
        name: format!("span {i}"),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: attrs(i % 12),
        events: (0..i % 3)
            .map(|e| span::Event {
                name: format!("event {e}"),
                attributes: attrs(3),
                ..Default::default()
            })
            .collect(),
        links: (0..i % 2)
            .map(|_| span::Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                attributes: attrs(2),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            message: "failed".into(),
            code: 2,
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: (0..3)
            .map(|r| ResourceSpans {
                resource: resource(),
                scope_spans: (0..2)
                    .map(|s| ScopeSpans {
                        scope: scope(),
                        spans: (0..spans).map(|i| span(i + r + s)).collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect(),
    }
}

fn logs(records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: (0..records)
                    .map(|i| LogRecord {
                        time_unix_nano: 1,
                        severity_text: "INFO".into(),
                        body: Some(AnyValue {
                            value: Some(V::StringValue(format!("line {i} {}", "y".repeat(i)))),
                        }),
                        attributes: attrs(i % 9),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        event_name: "e".into(),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let exemplar = Exemplar {
        filtered_attributes: attrs(2),
        span_id: vec![1; 8],
        trace_id: vec![2; 16],
        ..Default::default()
    };
    let number = |i: usize| NumberDataPoint {
        attributes: attrs(i),
        exemplars: vec![exemplar.clone(); i % 3],
        ..Default::default()
    };
    let metric = |name: &str, data: Data| Metric {
        name: name.into(),
        description: "d".into(),
        unit: "ms".into(),
        metadata: attrs(1),
        data: Some(data),
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: vec![
                    metric(
                        "g",
                        Data::Gauge(Gauge {
                            data_points: (0..5).map(number).collect(),
                        }),
                    ),
                    metric(
                        "s",
                        Data::Sum(Sum {
                            data_points: (0..3).map(number).collect(),
                            ..Default::default()
                        }),
                    ),
                    metric(
                        "h",
                        Data::Histogram(Histogram {
                            data_points: (0..4)
                                .map(|i| HistogramDataPoint {
                                    attributes: attrs(i),
                                    bucket_counts: vec![3; 10 * i],
                                    explicit_bounds: vec![1.5; 10 * i],
                                    exemplars: vec![exemplar.clone()],
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }),
                    ),
                    metric(
                        "e",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: (0..2)
                                .map(|i| ExponentialHistogramDataPoint {
                                    attributes: attrs(i),
                                    positive: Some(Buckets {
                                        offset: 1,
                                        bucket_counts: (0..300).collect(),
                                    }),
                                    negative: Some(Buckets {
                                        offset: -1,
                                        bucket_counts: vec![1; 3],
                                    }),
                                    exemplars: vec![exemplar.clone()],
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }),
                    ),
                    metric(
                        "q",
                        Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                attributes: attrs(3),
                                quantile_values: vec![
                                    ValueAtQuantile {
                                        quantile: 0.5,
                                        value: 1.0,
                                    };
                                    5
                                ],
                                ..Default::default()
                            }],
                        }),
                    ),
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The scan's items equal the decoded request's, and its bytes bound the decoded heap.
fn check(signal: Signal, body: &[u8]) -> Shape {
    let shape = scan(signal, body).expect("a request prost decodes scans");
    let batch = Batch::decode_protobuf(signal, body).expect("decodes");
    assert_eq!(shape.items, batch.item_count(), "{signal:?}");
    assert!(
        shape.decoded_bytes >= batch.heap_size(),
        "{signal:?}: scan {} < decoded {}",
        shape.decoded_bytes,
        batch.heap_size()
    );
    shape
}

#[test]
fn items_and_a_bound_of_the_decoded_size_for_every_signal() {
    for n in [0, 1, 7, 100] {
        check(Signal::Traces, &traces(n).encode_to_vec());
        check(Signal::Logs, &logs(n).encode_to_vec());
    }
    check(Signal::Metrics, &metrics().encode_to_vec());
    check(Signal::Traces, &[]);
    // The bound is not loose for ordinary requests: within 3x of what decoding holds.
    let body = traces(100).encode_to_vec();
    let (shape, batch) = (
        check(Signal::Traces, &body),
        Batch::decode_protobuf(Signal::Traces, &body).expect("decodes"),
    );
    assert!(
        shape.decoded_bytes < 3 * batch.heap_size(),
        "{} against {}",
        shape.decoded_bytes,
        batch.heap_size()
    );
}

/// One span with `n` empty attributes: 2 bytes each on the wire.
fn attribute_bomb(n: usize) -> Vec<u8> {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    attributes: vec![KeyValue::default(); n],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

#[test]
fn an_attribute_bomb_is_sized_before_it_is_decoded() {
    let body = attribute_bomb(100_000);
    assert!(body.len() < 210_000, "{}", body.len());
    let shape = check(Signal::Traces, &body);
    assert_eq!(shape.items, 1);
    assert!(
        shape.decoded_bytes > 30 * body.len() as u64,
        "{} for {} bytes",
        shape.decoded_bytes,
        body.len()
    );
}

#[test]
fn merged_messages_and_unpacked_numbers_are_counted() {
    // A singular message sent twice is merged by the decoder: its repeated fields grow
    // one Vec.
    let mut body = Vec::new();
    for _ in 0..3 {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                ..Default::default()
            }],
        }
        .encode(&mut body)
        .expect("encodes into a Vec");
    }
    check(Signal::Traces, &body);
    // Histogram buckets sent unpacked (one key per number), and packed varint buckets.
    let mut point = Vec::new();
    for i in 0..1000u64 {
        prost::encoding::fixed64::encode(6, &i, &mut point);
    }
    let mut data = Vec::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut data);
    prost::encoding::encode_varint(point.len() as u64, &mut data);
    data.extend_from_slice(&point);
    let mut metric = Vec::new();
    prost::encoding::bytes::encode(9, &data, &mut metric);
    let scope = {
        let mut v = Vec::new();
        prost::encoding::bytes::encode(2, &metric, &mut v);
        v
    };
    let rm = {
        let mut v = Vec::new();
        prost::encoding::bytes::encode(2, &scope, &mut v);
        v
    };
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rm, &mut req);
    let shape = check(Signal::Metrics, &req);
    assert_eq!(shape.items, 1);
    let buckets = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint {
                            positive: Some(Buckets {
                                offset: 0,
                                bucket_counts: vec![1; 50_000],
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let shape = check(Signal::Metrics, &buckets.encode_to_vec());
    assert!(shape.decoded_bytes >= 400_000, "{}", shape.decoded_bytes);
}

#[test]
fn unknown_fields_and_groups_are_skipped_as_the_decoder_skips_them() {
    let mut body = traces(3).encode_to_vec();
    prost::encoding::uint64::encode(99, &5, &mut body);
    prost::encoding::string::encode(100, &"unknown".to_string(), &mut body);
    prost::encoding::fixed32::encode(101, &1, &mut body);
    prost::encoding::encode_key(102, prost::encoding::WireType::StartGroup, &mut body);
    prost::encoding::uint64::encode(1, &5, &mut body);
    prost::encoding::encode_key(7, prost::encoding::WireType::StartGroup, &mut body);
    prost::encoding::encode_key(7, prost::encoding::WireType::EndGroup, &mut body);
    prost::encoding::encode_key(102, prost::encoding::WireType::EndGroup, &mut body);
    let shape = check(Signal::Traces, &body);
    assert_eq!(shape.items, 3 * 2 * 3);
}

#[test]
fn requests_that_cannot_be_framed_are_refused() {
    let body = traces(5).encode_to_vec();
    // Cut anywhere inside: either the scan or the decoder refuses it, and the scan never
    // accepts what the decoder refuses for framing.
    for cut in 1..body.len() {
        let part = &body[..cut];
        if Batch::decode_protobuf(Signal::Traces, part).is_ok() {
            check(Signal::Traces, part);
        } else {
            assert!(scan(Signal::Traces, part).is_err(), "cut at {cut}");
        }
    }
    assert_eq!(
        scan(Signal::Traces, &[0x0a, 0x05, 0x01]),
        Err(ScanError::Truncated { field: 1, at: 0 })
    );
    assert_eq!(
        scan(
            Signal::Traces,
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        ),
        Err(ScanError::Varint { at: 11 })
    );
    assert_eq!(
        scan(Signal::Traces, &[0x00, 0x01]),
        Err(ScanError::Key { key: 0, at: 0 })
    );
    assert!(matches!(
        scan(Signal::Traces, &[0x0c]),
        Err(ScanError::Key { .. })
    ));
    assert!(matches!(
        scan(Signal::Traces, &[0x0b, 0x08, 0x01]),
        Err(ScanError::Group { .. })
    ));
}

/// A log body nested `depth` arrays deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut v = AnyValue {
        value: Some(V::StringValue("leaf".into())),
    };
    for _ in 0..depth {
        v = AnyValue {
            value: Some(V::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    let mut req = logs(1);
    req.resource_logs[0].scope_logs[0].log_records[0].body = Some(v);
    req.encode_to_vec()
}

#[test]
fn nesting_is_refused_where_the_decoder_refuses_it() {
    for depth in [10, 45, 46, 47, 48, 60, 200] {
        let body = nested(depth);
        match Batch::decode_protobuf(Signal::Logs, &body) {
            Ok(_) => {
                check(Signal::Logs, &body);
            }
            Err(_) => assert_eq!(scan(Signal::Logs, &body), Err(ScanError::Depth), "{depth}"),
        }
    }
}

#[test]
fn mutated_requests_never_escape_the_bound() {
    let bodies = [
        (Signal::Traces, traces(4).encode_to_vec()),
        (Signal::Logs, logs(6).encode_to_vec()),
        (Signal::Metrics, metrics().encode_to_vec()),
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (signal, body) in &bodies {
        for _ in 0..3000 {
            let mut b = body.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            if Batch::decode_protobuf(*signal, &b).is_ok() {
                check(*signal, &b);
            }
        }
    }
}
