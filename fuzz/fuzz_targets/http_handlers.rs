//! The collector's OTLP/HTTP router (`ingest::http::router`), driven in-process with
//! `tower::ServiceExt::oneshot`: arbitrary method, path, `Content-Type`,
//! `Content-Encoding` (gzip, zstd, ...), `Content-Length` and body, over the real ingest
//! path with an in-memory sink.
//!
//! Input: four header bytes, optional custom strings, then the body.
//! - byte 0, path: `/v1/traces`, `/v1/logs`, `/v1/metrics`, near misses, or a custom
//!   path (a length byte and that many bytes);
//! - byte 1, `Content-Type`: the OTLP ones, variants with parameters and case, none,
//!   a wrong one, or custom;
//! - byte 2, `Content-Encoding`: none, gzip, zstd, identity, variants, unknown, custom;
//! - byte 3, flags: bit 0 compress the body with the declared encoding (otherwise it is
//!   sent as is), bit 1 a correct `Content-Length`, bit 2 a bogus one, bit 3 small size
//!   limits (1 KiB wire, 4 KiB inflated), bit 4 send the body in chunks, bits 5-6 the
//!   method (POST, POST, GET, DELETE), bit 7 agent-style enrichment.
//!
//! Checks: no panic, only the statuses the receiver documents, and a 200 answer carries
//! an export response in the request's encoding.
#![no_main]

use std::convert::Infallible;
use std::io::Write;
use std::sync::OnceLock;

use axum::body::Body;
use axum::Router;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use lookout_fuzz::{ingest, runtime, Input, Variant};
use lookout_ingest::http::router;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceResponse;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceResponse;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tower::ServiceExt;

/// Routers by `[small limits][enrichment]`.
fn routers() -> &'static [[Router; 2]; 2] {
    static R: OnceLock<[[Router; 2]; 2]> = OnceLock::new();
    R.get_or_init(|| {
        let cfg = lookout_config::CollectorConfig::default();
        let make = |small: bool, enrich: bool| {
            let ingest = ingest(Variant {
                enrich,
                tight_limits: false,
            });
            if small {
                router(ingest, 1 << 10, 4 << 10, std::time::Duration::from_secs(10))
            } else {
                router(
                    ingest,
                    cfg.limits.max_request_size.as_usize(),
                    cfg.limits.max_decompressed_size.as_usize(),
                    cfg.otlp.connections.request_timeout.get(),
                )
            }
        };
        [
            [make(false, false), make(false, true)],
            [make(true, false), make(true, true)],
        ]
    })
}

fn custom<'a>(input: &mut Input<'a>) -> &'a [u8] {
    let n = usize::from(input.byte() % 64);
    input.take(n)
}

fn compress(encoding: &str, body: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).expect("gzip");
            enc.finish().expect("gzip")
        }
        "zstd" => zstd::encode_all(body, 1).expect("zstd"),
        _ => body.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (path_sel, ct_sel, ce_sel, flags) =
        (input.byte(), input.byte(), input.byte(), input.byte());

    let path: Vec<u8> = match path_sel % 8 {
        0 => b"/v1/traces".to_vec(),
        1 => b"/v1/logs".to_vec(),
        2 => b"/v1/metrics".to_vec(),
        3 => b"/v1/traces/".to_vec(),
        4 => b"/".to_vec(),
        5 => b"/v1/Logs?x=1".to_vec(),
        _ => custom(&mut input).to_vec(),
    };
    let content_type: Option<Vec<u8>> = match ct_sel % 8 {
        0 => Some(b"application/x-protobuf".to_vec()),
        1 => Some(b"application/json".to_vec()),
        2 => Some(b"application/protobuf".to_vec()),
        3 => Some(b"application/json; charset=utf-8".to_vec()),
        4 => Some(b" Application/X-Protobuf ; x=y".to_vec()),
        5 => None,
        6 => Some(b"text/plain".to_vec()),
        _ => Some(custom(&mut input).to_vec()),
    };
    let content_encoding: Option<Vec<u8>> = match ce_sel % 8 {
        0 => None,
        1 => Some(b"gzip".to_vec()),
        2 => Some(b"zstd".to_vec()),
        3 => Some(b"identity".to_vec()),
        4 => Some(b" GZIP ".to_vec()),
        5 => Some(b"br".to_vec()),
        6 => Some(Vec::new()),
        _ => Some(custom(&mut input).to_vec()),
    };
    let chunk = usize::from(input.byte()) + 1;
    let raw_body = input.rest();

    let declared = content_encoding
        .as_deref()
        .map(|e| String::from_utf8_lossy(e).trim().to_ascii_lowercase())
        .unwrap_or_default();
    let body = if flags & 1 != 0 {
        compress(&declared, raw_body)
    } else {
        raw_body.to_vec()
    };
    let method = match (flags >> 5) & 3 {
        2 => Method::GET,
        3 => Method::DELETE,
        _ => Method::POST,
    };

    let Ok(uri) = http::Uri::try_from(path) else {
        return;
    };
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if let Some(ce) = content_encoding.and_then(|v| HeaderValue::from_bytes(&v).ok()) {
        req = req.header(header::CONTENT_ENCODING, ce);
    }
    if flags & 2 != 0 {
        req = req.header(header::CONTENT_LENGTH, body.len());
    } else if flags & 4 != 0 {
        req = req.header(header::CONTENT_LENGTH, u64::MAX - body.len() as u64);
    }
    let body = if flags & 0x10 != 0 {
        let chunks: Vec<Result<bytes::Bytes, Infallible>> = body
            .chunks(chunk)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures::stream::iter(chunks))
    } else {
        Body::from(body)
    };
    let Ok(req) = req.body(body) else {
        return;
    };
    let request_path = req.uri().path().to_string();

    let small = usize::from(flags & 8 != 0);
    let enrich = usize::from(flags & 0x80 != 0);
    let app = routers()[small][enrich].clone();
    let (status, content_type, body) = runtime().block_on(async move {
        let resp = app.oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        (status, ct, body)
    });

    assert!(
        matches!(
            status,
            StatusCode::OK
                | StatusCode::BAD_REQUEST
                | StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::UNSUPPORTED_MEDIA_TYPE
        ),
        "unexpected status {status} for {request_path}: {}",
        String::from_utf8_lossy(&body)
    );
    if status == StatusCode::OK {
        match content_type.as_deref() {
            Some("application/x-protobuf") => {
                let ok = match request_path.as_str() {
                    "/v1/traces" => ExportTraceServiceResponse::decode(body.as_ref()).is_ok(),
                    "/v1/logs" => ExportLogsServiceResponse::decode(body.as_ref()).is_ok(),
                    "/v1/metrics" => ExportMetricsServiceResponse::decode(body.as_ref()).is_ok(),
                    other => panic!("200 from {other}"),
                };
                assert!(ok, "undecodable protobuf response");
            }
            Some("application/json") => {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).expect("the JSON response parses");
                assert!(v.is_object(), "not a JSON object: {v}");
            }
            other => panic!("200 with content type {other:?}"),
        }
    }
});
