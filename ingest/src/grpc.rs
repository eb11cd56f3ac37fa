//! OTLP/gRPC receiver: the three OTLP `Export` methods over the shared [`Ingest`] path.
//!
//! Requests are taken as raw protobuf bytes (a pass-through codec) and decoded once by the
//! ingest path, which writes those same bytes to the WAL when the checks changed nothing;
//! typed tonic services would decode, and the WAL would then need a re-encode.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use futures::future::BoxFuture;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::IngestError;
use crate::pipeline::{encode_response, Encoding, Ingest};
use crate::signal::{Signal, Transport};

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

/// A codec that passes message bytes through untouched, both ways.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One OTLP gRPC service (`TraceService`, `LogsService` or `MetricsService`), chosen by
/// the const parameter (the signal's WAL tag).
#[derive(Clone)]
pub struct OtlpService<const TAG: u8> {
    ingest: Arc<Ingest>,
    max_message_size: usize,
}

const fn signal_of(tag: u8) -> Signal {
    match tag {
        1 => Signal::Traces,
        2 => Signal::Logs,
        _ => Signal::Metrics,
    }
}

const fn service_name(tag: u8) -> &'static str {
    match signal_of(tag) {
        Signal::Traces => "opentelemetry.proto.collector.trace.v1.TraceService",
        Signal::Logs => "opentelemetry.proto.collector.logs.v1.LogsService",
        Signal::Metrics => "opentelemetry.proto.collector.metrics.v1.MetricsService",
    }
}

impl<const TAG: u8> NamedService for OtlpService<TAG> {
    const NAME: &'static str = service_name(TAG);
}

struct Export {
    ingest: Arc<Ingest>,
    signal: Signal,
}

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (ingest, signal) = (self.ingest.clone(), self.signal);
        Box::pin(async move {
            let body = request.into_inner();
            match ingest
                .export_bytes(signal, Transport::Grpc, body, Encoding::Protobuf)
                .await
            {
                Ok(a) => Ok(Response::new(Bytes::from(encode_response(
                    signal,
                    Encoding::Protobuf,
                    &a,
                )))),
                Err(e) => Err(to_status(&e)),
            }
        })
    }
}

impl<const TAG: u8, B> tower::Service<http::Request<B>> for OtlpService<TAG>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let export_path =
            req.uri().path().strip_suffix("/Export") == Some(&format!("/{}", service_name(TAG)));
        if !export_path {
            return Box::pin(async move {
                Ok(
                    Status::unimplemented("unknown method; OTLP services have only Export")
                        .into_http(),
                )
            });
        }
        let export = Export {
            ingest: self.ingest.clone(),
            signal: signal_of(TAG),
        };
        let max = self.max_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(max);
            Ok(grpc.unary(export, req).await)
        })
    }
}

/// tonic answers OUT_OF_RANGE for a message over the size limit, which OTLP clients retry
/// forever; OTLP wants RESOURCE_EXHAUSTED without RetryInfo (permanent). It answers
/// INTERNAL for an undecodable gzip frame, which OTLP clients also retry; that is bad
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

/// How [`serve`] runs besides the ingest path.
pub struct GrpcOptions {
    /// Largest message accepted, after decompression.
    pub max_message_size: usize,
    /// Accepted bearer tokens; `None` serves everyone.
    pub tokens: Option<Arc<crate::net::Tokens>>,
    /// Counts calls refused for a missing or wrong token.
    pub unauthenticated: prometheus::IntCounter,
    /// Most concurrent calls per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// Longest a call may take, its request body included (CANCELLED after it).
    pub request_timeout: std::time::Duration,
}

/// Serve OTLP/gRPC on the connections of `conns` (see [`crate::net::incoming`]) until
/// `shutdown` resolves.
pub async fn serve(
    conns: tokio::sync::mpsc::Receiver<crate::net::Conn>,
    ingest: Arc<Ingest>,
    opts: GrpcOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let max_message_size = opts.max_message_size;
    let traces = OtlpService::<1> {
        ingest: ingest.clone(),
        max_message_size,
    };
    let logs = OtlpService::<2> {
        ingest: ingest.clone(),
        max_message_size,
    };
    let metrics = OtlpService::<3> {
        ingest,
        max_message_size,
    };
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(opts.max_concurrent_streams))
        .timeout(opts.request_timeout)
        .layer(tower::util::MapResponseLayer::new(remap_status))
        .layer(tonic::service::InterceptorLayer::new(
            crate::net::auth::grpc_interceptor(opts.tokens, opts.unauthenticated),
        ))
        .add_service(traces)
        .add_service(logs)
        .add_service(metrics)
        .serve_with_incoming_shutdown(crate::net::conn_stream(conns), shutdown)
        .await
}
