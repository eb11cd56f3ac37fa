//! OTLP/gRPC receiver: the three OTLP services over the shared [`Ingest`] path.

use std::sync::Arc;

use lookout_proto::otlp::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use lookout_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use lookout_proto::otlp::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use lookout_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use lookout_proto::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use lookout_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Accepted, Ingest, IngestError};
use crate::batch::Batch;
use crate::signal::Transport;

/// The OTLP/gRPC services.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
}

/// Map an ingest error to a gRPC status; retryable errors carry RetryInfo.
pub fn to_status(e: &IngestError) -> Status {
    match e.retry_after() {
        Some(delay) => Status::with_error_details(
            e.grpc_code(),
            e.to_string(),
            ErrorDetails::with_retry_info(Some(delay)),
        ),
        None => Status::new(e.grpc_code(), e.to_string()),
    }
}

impl OtlpGrpc {
    async fn export(&self, batch: Batch, wire_size: usize) -> Result<Accepted, Status> {
        self.ingest
            .export_batch(batch, Transport::Grpc, wire_size)
            .await
            .map_err(|e| to_status(&e))
    }
}

fn rejected(a: &Accepted) -> Option<(i64, String)> {
    (a.rejected > 0).then(|| {
        (
            i64::try_from(a.rejected).unwrap_or(i64::MAX),
            a.message.clone(),
        )
    })
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = OtlpGrpc::export(self, Batch::Traces(req), size).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: rejected(&a).map(|(n, m)| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: m,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = OtlpGrpc::export(self, Batch::Logs(req), size).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: rejected(&a).map(|(n, m)| ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: m,
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let req = request.into_inner();
        let size = req.encoded_len();
        let a = OtlpGrpc::export(self, Batch::Metrics(req), size).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: rejected(&a).map(|(n, m)| ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: m,
            }),
        }))
    }
}

/// tonic answers OUT_OF_RANGE for a message over the size limit, which OTLP clients retry
/// forever; OTLP wants RESOURCE_EXHAUSTED without RetryInfo (permanent). It answers
/// INTERNAL for undecodable protobuf or gzip, which OTLP clients also retry; that is bad
/// data, INVALID_ARGUMENT. Our handlers never answer either code themselves, and tonic
/// sends these errors as trailers-only responses, so the headers carry the status.
fn remap_status<B>(mut res: http::Response<B>) -> http::Response<B> {
    let code = match res.headers().get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"11") => "8",
        Some(b"13") => "3",
        _ => return res,
    };
    res.headers_mut()
        .insert("grpc-status", http::HeaderValue::from_static(code));
    res
}

/// Serve OTLP/gRPC on an already bound listener until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingest: Arc<Ingest>,
    max_message_size: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let svc = OtlpGrpc { ingest };
    let incoming = tokio_stream_from(listener);
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(remap_status))
        .add_service(
            TraceServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_size),
        )
        .add_service(
            LogsServiceServer::new(svc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_size),
        )
        .add_service(
            MetricsServiceServer::new(svc)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_size),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    return Some((Ok(s), l));
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(error = %e, "cannot accept an OTLP/gRPC connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}
