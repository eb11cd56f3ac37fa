//! The collector's ingest sink: a request is acknowledged once its WAL record is durable.

use std::time::Duration;

use futures::future::BoxFuture;
use lookout_ingest::{IngestError, IngestSink, SinkRequest};

use super::error::WalError;
use super::Wal;

/// The collector's sink: its write-ahead log. The request's budget charge travels with the
/// record, and is given back when the store that applies it drops it (or at once, when
/// the write fails).
pub struct WalSink {
    wal: Wal,
    retry_after: Duration,
}

impl WalSink {
    /// A sink over `wal`.
    pub fn new(wal: Wal, retry_after: Duration) -> Self {
        Self { wal, retry_after }
    }
}

impl IngestSink for WalSink {
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError> {
        let retry_after = self.retry_after;
        let unavailable = move |e: &WalError| IngestError::Unavailable {
            message: format!("cannot store the batch: {e}"),
            retry_after,
        };
        let fut = self
            .wal
            .submit(req.signal, req.payload, Some(req.batch), Some(req.charge))
            .map_err(|e| unavailable(&e))?;
        Ok(Box::pin(async move {
            fut.await.map(|_lsn| ()).map_err(|e| unavailable(&e))
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::time::Duration;

    use lookout_ingest::{Budget, Encoding, Ingest, IngestError, IngestOptions, Signal, Transport};
    use lookout_proto::otlp::common::v1::KeyValue;

    use super::*;
    use crate::wal::{Checkpoints, WalMetrics, WalOptions};

    fn ingest(dir: &std::path::Path, budget: Arc<Budget>) -> Arc<Ingest> {
        ingest_with(dir, budget, &lookout_config::LimitsConfig::default())
    }

    fn ingest_with(
        dir: &std::path::Path,
        budget: Arc<Budget>,
        limits: &lookout_config::LimitsConfig,
    ) -> Arc<Ingest> {
        let registry = prometheus::Registry::new();
        let (wal, _h) = Wal::open(
            dir,
            WalOptions {
                segment_size: 1 << 20,
                fsync: false,
                reserve: 0,
            },
            Arc::new(Checkpoints::default()),
            WalMetrics::register(&registry).unwrap(),
            Box::new(|_| {}),
        )
        .unwrap();
        let cfg = lookout_config::CollectorConfig::default();
        let opts = IngestOptions::new(limits, cfg.ingest.retry_after.get());
        let sink = WalSink::new(wal, opts.retry_after);
        Arc::new(Ingest::new(
            opts,
            Arc::new(sink),
            budget,
            lookout_ingest::ReceiverMetrics::register(&registry, "lookout").unwrap(),
        ))
    }

    #[tokio::test]
    async fn full_budget_means_overloaded_with_a_retry_hint() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(Budget::new(1000));
        let ingest = ingest(dir.path(), budget.clone());
        assert!(budget.try_take(990));
        let e = ingest
            .export_bytes(
                Signal::Logs,
                Transport::Http,
                // One empty `ResourceLogs`: a few hundred bytes decoded.
                bytes::Bytes::from_static(&[0x0a, 0x00]),
                Encoding::Protobuf,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::Overloaded { .. }), "{e}");
        assert_eq!(e.http_status(), ::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let status = lookout_ingest::grpc::to_status(&e);
        use tonic_types::StatusExt;
        assert!(
            status.get_details_retry_info().is_some(),
            "RetryInfo is attached"
        );
        // Once the stores catch up, the same request is admitted.
        budget.release(990);
        let a = ingest
            .export_bytes(
                Signal::Logs,
                Transport::Http,
                bytes::Bytes::new(),
                Encoding::Protobuf,
            )
            .await
            .unwrap();
        assert_eq!(a.accepted, 0);
        assert_eq!(budget.used(), 0, "an empty request gives its budget back");
    }

    /// Logs of several services, `(service, records)`.
    fn logs_of(services: &[(&str, usize)]) -> bytes::Bytes {
        use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
        use lookout_proto::otlp::common::v1::{any_value, AnyValue};
        use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use lookout_proto::otlp::resource::v1::Resource;
        use prost::Message;
        let now = lookout_ingest::clock::now_unix_nano();
        let req = ExportLogsServiceRequest {
            resource_logs: services
                .iter()
                .map(|(svc, n)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(svc.to_string())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: (0..*n)
                            .map(|_| LogRecord {
                                time_unix_nano: now,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        bytes::Bytes::from(req.encode_to_vec())
    }

    #[tokio::test]
    async fn items_per_request_and_per_service_rates_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        let limits = lookout_config::LimitsConfig {
            max_items_per_request: 500,
            max_items_per_second_per_service: 100,
            ..Default::default()
        };
        let ingest = ingest_with(dir.path(), Arc::new(Budget::new(64 << 20)), &limits);
        let send =
            |body| ingest.export_bytes(Signal::Logs, Transport::Http, body, Encoding::Protobuf);

        let e = send(logs_of(&[("a", 300), ("b", 201)])).await.unwrap_err();
        assert!(matches!(e, IngestError::TooLarge(_)), "{e}");
        assert!(
            e.to_string().contains("501 log records in one request"),
            "{e}"
        );
        assert_eq!(e.retry_after(), None);

        // The burst (2 × rate) of "a" passes, then "a" alone is throttled with a hint.
        assert_eq!(send(logs_of(&[("a", 200)])).await.unwrap().accepted, 200);
        let e = send(logs_of(&[("a", 10)])).await.unwrap_err();
        assert!(matches!(e, IngestError::Throttled { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("service \"a\" is over its ingest rate"),
            "{e}"
        );
        assert_eq!(e.http_status(), ::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        assert!(e.retry_after().unwrap() >= Duration::from_secs(1));

        // A request mixing services keeps the others and names the rejected one.
        let a = send(logs_of(&[("a", 7), ("b", 5)])).await.unwrap();
        assert_eq!((a.accepted, a.rejected), (5, 7));
        assert!(
            a.message
                .contains("7 log records of service \"a\" rejected"),
            "{}",
            a.message
        );
    }
}
