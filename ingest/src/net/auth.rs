//! Bearer-token authentication (RFC 6750) of OTLP and the query API.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use lookout_config::AuthConfig;
use prometheus::IntCounter;

/// Why the tokens of a listener cannot be loaded; names the config key.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens file could not be read.
    #[error("key `{key}`: cannot read {}: {source}", path.display())]
    Read {
        /// Dotted config key.
        key: String,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A token in the file is not acceptable (the token itself is never printed).
    #[error("key `{key}`: {}: line {line}: {reason}", path.display())]
    Invalid {
        /// Dotted config key.
        key: String,
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The accepted tokens of a listener. `Debug` never shows them.
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// The tokens of `cfg` (inline and from `tokens_file`); `None` when auth is off.
    pub fn load(cfg: &AuthConfig, prefix: &str) -> Result<Option<Arc<Self>>, AuthError> {
        let mut tokens: Vec<Vec<u8>> = cfg
            .tokens
            .iter()
            .map(|t| t.expose().as_bytes().to_vec())
            .collect();
        if let Some(path) = &cfg.tokens_file {
            tokens.extend(read_tokens_file(path, &format!("{prefix}.tokens_file"))?);
        }
        Ok((!tokens.is_empty()).then(|| Arc::new(Self(tokens))))
    }

    /// Tokens from a list (tests, embedding).
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Self {
        Self(tokens.into_iter().map(String::into_bytes).collect())
    }

    /// The token a node presents to its peers (cluster mode): the first one configured.
    pub fn first(&self) -> Option<&[u8]> {
        self.0.first().map(Vec::as_slice)
    }

    /// Does `authorization` (the header value) carry an accepted bearer token? Compares in
    /// time independent of where the bytes differ.
    pub fn verify(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some(presented) = bearer(value) else {
            return false;
        };
        // Check every token so the time taken does not say which one nearly matched.
        self.0
            .iter()
            .fold(false, |ok, t| ok | constant_time_eq(t, presented))
    }
}

fn read_tokens_file(path: &Path, key: &str) -> Result<Vec<Vec<u8>>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        lookout_config::validate_token(t).map_err(|reason| AuthError::Invalid {
            key: key.to_string(),
            path: path.to_path_buf(),
            line: i + 1,
            reason: reason.to_string(),
        })?;
        out.push(t.as_bytes().to_vec());
    }
    Ok(out)
}

/// The token of an `Authorization: Bearer TOKEN` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares SHA-256 digests, so that neither where the bytes differ nor the lengths
/// change the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The message of every refusal; says what is missing, never what was sent.
pub const UNAUTHENTICATED: &str =
    "missing or invalid bearer token (send `Authorization: Bearer TOKEN`)";

/// The 401 body of the query API: `{"error": "..."}` like its other errors.
pub fn reject_json(_: &HeaderMap) -> Response {
    let body = serde_json::json!({ "error": UNAUTHENTICATED }).to_string();
    let mut res = Response::new(axum::body::Body::from(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// How an HTTP listener answers a refused request.
pub type Reject = fn(&HeaderMap) -> Response;

/// State of [`require_bearer`].
#[derive(Clone)]
pub struct HttpAuth {
    /// Accepted tokens.
    pub tokens: Arc<Tokens>,
    /// Paths served without a token (health checks).
    pub open_paths: &'static [&'static str],
    /// Builds the 401 response in the listener's error format.
    pub reject: Reject,
    /// Counts refusals.
    pub refused: IntCounter,
}

/// axum middleware: 401 with `WWW-Authenticate: Bearer` unless the request carries an
/// accepted token (or its path is open).
pub async fn require_bearer(State(auth): State<HttpAuth>, req: Request, next: Next) -> Response {
    if auth.open_paths.contains(&req.uri().path())
        || auth.tokens.verify(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
    {
        return next.run(req).await;
    }
    auth.refused.inc();
    let (parts, body) = req.into_parts();
    // Read what the client is sending before answering: an HTTP/1.1 client still
    // writing its body would otherwise see a reset connection instead of the 401.
    drain(body).await;
    let mut res = (auth.reject)(&parts.headers);
    *res.status_mut() = StatusCode::UNAUTHORIZED;
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"lookout\""),
    );
    res
}

/// Most bytes of a refused request's body read before answering, and for how long.
const DRAIN_LIMIT: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn drain(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut n = 0usize;
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            n += chunk.len();
            if n > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// tonic interceptor refusing calls without an accepted token with UNAUTHENTICATED
/// (which OTLP exporters do not retry). `None` lets every call through.
pub fn grpc_interceptor(
    tokens: Option<Arc<Tokens>>,
    refused: IntCounter,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        let Some(tokens) = &tokens else {
            return Ok(req);
        };
        let value = req.metadata().get("authorization").map(|v| v.as_bytes());
        if tokens.verify(value) {
            Ok(req)
        } else {
            refused.inc();
            Err(tonic::Status::unauthenticated(UNAUTHENTICATED))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn bearer_tokens_are_matched_exactly() {
        let t = Tokens::new([
            "0123456789abcdef".to_string(),
            "another-token-xyz1".to_string(),
        ]);
        assert!(t.verify(Some(b"Bearer 0123456789abcdef")));
        assert!(t.verify(Some(b"bearer another-token-xyz1")));
        assert!(t.verify(Some(b"BEARER  0123456789abcdef ")));
        assert!(!t.verify(None));
        assert!(!t.verify(Some(b"Bearer 0123456789abcde")));
        assert!(!t.verify(Some(b"Bearer 0123456789abcdef0")));
        assert!(!t.verify(Some(b"Basic 0123456789abcdef")));
        assert!(!t.verify(Some(b"Bearer0123456789abcdef")));
        assert!(!t.verify(Some(b"Bearer ")));
        assert!(!t.verify(Some(b"")));
    }

    #[test]
    fn a_tokens_file_skips_comments_and_names_bad_lines_without_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ingest\n\n  0123456789abcdef  \nshort\n").unwrap();
        let cfg = AuthConfig {
            tokens: vec![],
            tokens_file: Some(path.clone()),
        };
        let err = Tokens::load(&cfg, "otlp.auth").unwrap_err().to_string();
        assert!(err.contains("key `otlp.auth.tokens_file`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(!err.contains("short"), "the token leaked: {err}");
        std::fs::write(&path, "# ingest\n\n  0123456789abcdef  \n").unwrap();
        let t = Tokens::load(&cfg, "otlp.auth").unwrap().unwrap();
        assert!(t.verify(Some(b"Bearer 0123456789abcdef")));
        assert_eq!(format!("{t:?}"), "Tokens(1 configured)");
        assert!(Tokens::load(&AuthConfig::default(), "x").unwrap().is_none());
    }
}
