//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/logs`, `/v1/metrics` with protobuf or JSON
//! bodies, optionally gzip- or zstd-compressed, over the shared [`Ingest`] path.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;

use crate::error::IngestError;
use crate::pipeline::{encode_response, Accepted, Encoding, Ingest};
use crate::signal::{Signal, Transport};

/// Shared state of the OTLP/HTTP routes.
#[derive(Clone)]
pub struct HttpState {
    ingest: Arc<Ingest>,
    max_request_size: usize,
    max_decompressed_size: usize,
    request_timeout: Duration,
}

/// The OTLP/HTTP router; a request body must be in within `request_timeout` of the
/// headers, however steadily it trickles in (408).
pub fn router(
    ingest: Arc<Ingest>,
    max_request_size: usize,
    max_decompressed_size: usize,
    request_timeout: Duration,
) -> Router {
    let state = HttpState {
        ingest,
        max_request_size,
        max_decompressed_size,
        request_timeout,
    };
    Router::new()
        .route("/v1/traces", post(traces).fallback(method_not_allowed))
        .route("/v1/logs", post(logs).fallback(method_not_allowed))
        .route("/v1/metrics", post(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        // Our own limit below gives OTLP-shaped errors.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn traces(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Signal::Traces, headers, body).await
}
async fn logs(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Signal::Logs, headers, body).await
}
async fn metrics(State(s): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    handle(s, Signal::Metrics, headers, body).await
}

/// The 401 of a request without an accepted bearer token: a `Status` in the request's
/// encoding (protobuf unless it sent JSON), as OTLP/HTTP error bodies are.
pub fn reject_unauthenticated(headers: &HeaderMap) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let encoding = if json {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    status_response(
        StatusCode::UNAUTHORIZED,
        encoding,
        crate::net::auth::UNAUTHENTICATED,
        None,
    )
}

async fn method_not_allowed(method: Method) -> Response {
    let mut r = status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        Encoding::Json,
        &format!("method {method} not allowed; OTLP/HTTP export uses POST"),
        None,
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

async fn not_found() -> Response {
    status_response(
        StatusCode::NOT_FOUND,
        Encoding::Json,
        "not found; OTLP/HTTP paths are /v1/traces, /v1/logs and /v1/metrics",
        None,
    )
}

async fn handle(s: HttpState, signal: Signal, headers: HeaderMap, body: Body) -> Response {
    let (encoding, result) = match read_request(&s, &headers, body).await {
        Ok((encoding, bytes, held)) => (
            encoding,
            s.ingest
                .export_bytes_held(signal, Transport::Http, bytes, encoding, held)
                .await,
        ),
        Err((encoding, e)) => {
            s.ingest.count_refused(signal, Transport::Http, &e, None);
            (encoding, Err(e))
        }
    };
    match result {
        Ok(a) => success(signal, encoding, &a),
        Err(e) => {
            tracing::debug!(%signal, error = %e, "refused OTLP/HTTP request");
            status_response(e.http_status(), encoding, &e.to_string(), e.retry_after())
        }
    }
}

/// Content type, size and compression checks; returns the inflated body, and the budget
/// charge that holds it when it was inflated.
async fn read_request(
    s: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Encoding, Bytes, Option<crate::budget::Charge>), (Encoding, IngestError)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let encoding = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        _ => {
            drain(body, DRAIN_LIMIT).await;
            return Err((
                Encoding::Json,
                IngestError::UnsupportedMedia(format!(
                "unsupported content-type {ct:?}; use application/x-protobuf or application/json"
            )),
            ));
        }
    };
    let fail = |e| (encoding, e);
    let compression = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => None,
        Some("gzip") => Some("gzip"),
        Some("zstd") => Some("zstd"),
        Some(other) => {
            drain(body, DRAIN_LIMIT).await;
            return Err(fail(IngestError::UnsupportedMedia(format!(
                "unsupported content-encoding {other:?}; use gzip, zstd or none"
            ))));
        }
    };
    let too_large = |n: String| {
        IngestError::TooLarge(format!(
            "request body of {n} bytes exceeds the limit of {} bytes",
            s.max_request_size
        ))
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = content_length {
        if len > s.max_request_size as u64 {
            // Read what the client sends so it sees the 413 rather than a reset connection.
            drain(body, DRAIN_LIMIT).await;
            return Err(fail(too_large(len.to_string())));
        }
    }
    let mut body = body.into_data_stream();
    let mut raw = bytes::BytesMut::with_capacity(content_length.map_or(0, |l| l as usize));
    let deadline = tokio::time::Instant::now() + s.request_timeout;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, body.next()).await else {
            return Err(fail(IngestError::TimedOut(format!(
                "request body not complete within {:?} ({} bytes read); \
                 [otlp.connections] request_timeout",
                s.request_timeout,
                raw.len()
            ))));
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(|e| {
            fail(IngestError::Invalid(format!(
                "cannot read request body: {e}"
            )))
        })?;
        if raw.len() + chunk.len() > s.max_request_size {
            let seen = raw.len() + chunk.len();
            drop(raw);
            let rest = drain_stream(body, DRAIN_LIMIT).await;
            return Err(fail(too_large((seen as u64 + rest).to_string())));
        }
        raw.extend_from_slice(&chunk);
    }
    let raw = raw.freeze();
    let Some(compression) = compression else {
        return Ok((encoding, raw, None));
    };
    let limit = s.max_decompressed_size;
    // The inflated body is held against the ingest budget as it grows, so that many small
    // bodies that inflate to the limit at once cannot take more memory than the budget.
    let first = (raw.len() * 4).max(64 << 10).min(limit);
    let mut charge = s.ingest.reserve(first as u64).await.map_err(fail)?;
    let ingest = s.ingest.clone();
    let inflate = move || -> Result<(Bytes, crate::budget::Charge), IngestError> {
        let invalid =
            |e: std::io::Error| IngestError::Invalid(format!("invalid {compression} body: {e}"));
        let mut reader: Box<dyn Read> = if compression == "zstd" {
            let mut dec = zstd::stream::read::Decoder::new(&raw[..]).map_err(invalid)?;
            // A frame may ask for a window of up to 2 GiB; 32 MiB is plenty for OTLP.
            dec.window_log_max(25).map_err(invalid)?;
            Box::new(dec.take(limit as u64 + 1))
        } else {
            Box::new(flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1))
        };
        let mut out = Vec::with_capacity(first);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = reader.read(&mut buf).map_err(invalid)?;
            if n == 0 {
                break;
            }
            if out.len() + n > out.capacity() {
                let want = (out.capacity() * 2).max(out.len() + n).min(limit + n);
                if !charge.try_grow(want as u64) {
                    return Err(ingest.overloaded());
                }
                out.reserve_exact(want - out.len());
            }
            out.extend_from_slice(&buf[..n]);
        }
        if out.len() > limit {
            return Err(IngestError::TooLarge(format!(
                "{compression} body inflates past the limit of {limit} bytes"
            )));
        }
        // The charge goes on holding the inflated body until the request is stored.
        charge.resize(out.len() as u64);
        Ok((Bytes::from(out), charge))
    };
    let (inflated, held) = tokio::task::spawn_blocking(inflate)
        .await
        .map_err(|e| fail(IngestError::Invalid(format!("inflate task failed: {e}"))))?
        .map_err(fail)?;
    Ok((encoding, inflated, Some(held)))
}

/// Most bytes of an oversize body read and discarded before answering 413.
const DRAIN_LIMIT: u64 = 64 << 20;

async fn drain(body: Body, limit: u64) -> u64 {
    drain_stream(body.into_data_stream(), limit).await
}

/// Longest a refused request's body is read before answering.
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain_stream(mut body: axum::body::BodyDataStream, limit: u64) -> u64 {
    let mut n = 0u64;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        n += chunk.len() as u64;
        if n > limit {
            break;
        }
    }
    n
}

fn success(signal: Signal, encoding: Encoding, a: &Accepted) -> Response {
    with_content_type(
        StatusCode::OK,
        encoding,
        encode_response(signal, encoding, a),
    )
}

fn with_content_type(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let ct = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(ct))],
        body,
    )
        .into_response()
}

/// An OTLP/HTTP error: a `google.rpc.Status` body in the request's encoding, and
/// `Retry-After` when the client should retry.
fn status_response(
    status: StatusCode,
    encoding: Encoding,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let code = grpc_code_for_http(status) as i32;
    let body = match encoding {
        Encoding::Protobuf => tonic_types::Status {
            code,
            message: message.to_string(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&serde_json::json!({
            "code": code,
            "message": message,
        }))
        .unwrap_or_default(),
    };
    let mut r = with_content_type(status, encoding, body);
    if let Some(d) = retry_after {
        let secs = d.as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn grpc_code_for_http(status: StatusCode) -> tonic::Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            tonic::Code::InvalidArgument
        }
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
            tonic::Code::ResourceExhausted
        }
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => tonic::Code::Unimplemented,
        StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
        _ => tonic::Code::Unknown,
    }
}
