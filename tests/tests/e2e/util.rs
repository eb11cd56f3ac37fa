//! Small helpers shared by the end-to-end test modules.

use lookout_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};

/// Now, in Unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// A string attribute.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// POST a protobuf export request to the collector's OTLP/HTTP `path`; expects 200.
pub async fn post_protobuf(c: &lookout_tests::Collector, path: &str, body: Vec<u8>) {
    let r = reqwest::Client::new()
        .post(c.http_url(path))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
}

/// A logs export request of `service` with one record per body, stamped now.
pub fn log_request(
    service: &str,
    bodies: impl IntoIterator<Item = String>,
) -> lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest {
    use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use lookout_proto::otlp::resource::v1::Resource;
    lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: bodies
                    .into_iter()
                    .map(|b| LogRecord {
                        time_unix_nano: now_ns(),
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(b)),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}
