//! `Batch::heap_size` against the bytes the allocator really hands out while a request is
//! decoded: the ingest budget charges that estimate, so it must not undercount.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use lookout_ingest::batch::Batch;
use lookout_ingest::signal::Signal;
use lookout_proto::attr;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    metric, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// Live bytes, counted by requested size (the estimate rounds to size classes on top).
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::SeqCst);
        // SAFETY: same layout as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::SeqCst);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::SeqCst);
        // SAFETY: as for `dealloc`, and `new` is the caller's new size.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            attr::string("service.name", service),
            attr::string("host.name", "web-1"),
        ],
        ..Default::default()
    })
}

fn traces() -> Vec<u8> {
    let spans = (0..200u32)
        .map(|i| Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![i as u8; 8],
            parent_span_id: vec![1; 8],
            name: format!("GET /api/items/{i}"),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: (0..8)
                .map(|a| attr::string(&format!("attr.{a}"), format!("value-{i}-{a}")))
                .collect(),
            events: vec![span::Event {
                name: "exception".into(),
                attributes: vec![attr::string("exception.message", "boom")],
                ..Default::default()
            }],
            status: Some(Status {
                message: "failed".into(),
                code: 2,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("checkout"),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    let log_records = (0..300u32)
        .map(|i| LogRecord {
            time_unix_nano: 1,
            severity_text: "INFO".into(),
            severity_number: 9,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "order {i} paid by customer {i} with card ending 4242"
                ))),
            }),
            attributes: vec![
                attr::string("http.method", "POST"),
                attr::string("order.id", i.to_string()),
            ],
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("payments"),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics() -> Vec<u8> {
    let metrics = (0..50u32)
        .map(|i| Metric {
            name: format!("http.server.duration.{i}"),
            unit: "ms".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: (0..4)
                    .map(|p| HistogramDataPoint {
                        attributes: vec![attr::string("route", format!("/r/{p}"))],
                        count: 10,
                        bucket_counts: vec![1; 16],
                        explicit_bounds: vec![1.0; 15],
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: 2,
            })),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("inventory"),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn heap_size_covers_what_decoding_allocates() {
    for (signal, body) in [
        (Signal::Traces, traces()),
        (Signal::Logs, logs()),
        (Signal::Metrics, metrics()),
    ] {
        let before = LIVE.load(Ordering::SeqCst);
        let batch = Batch::decode_protobuf(signal, &body).expect("decode");
        let allocated = (LIVE.load(Ordering::SeqCst) - before) as u64 + size_of::<Batch>() as u64;
        let estimate = batch.heap_size();
        // Never below what the allocator handed out; above it only by size-class rounding.
        assert!(
            estimate >= allocated && estimate <= allocated + allocated / 4,
            "{signal}: estimate {estimate} bytes, decoding allocated {allocated} ({} on the wire)",
            body.len()
        );
        // The reason the budget no longer multiplies the wire size by a constant.
        assert!(
            estimate > 2 * body.len() as u64,
            "{signal}: {estimate} vs {}",
            body.len()
        );
        drop(batch);
    }
}
