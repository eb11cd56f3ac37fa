//! HTTP client of the collector's query API (`/api/v1`). Views never call it: the
//! background fetcher does, and hands the results back to the app as [`Fetched`] values.

use std::time::{Duration, Instant};

use lookout_proto::api::{
    AlertsResponse, ClusterResponse, DependenciesResponse, ErrorBody, LogsResponse,
    ServicesResponse, TraceResponse, TracesResponse,
};
use serde::de::DeserializeOwned;

use crate::state::metrics::{parse_exposition, Exposition};

/// Why a request to the collector failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// No answer: connection refused, DNS, timeout, reset.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// The collector answered with an error status and `{"error": ...}`.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The collector's message.
        message: String,
    },
    /// Something answered, but not as a Lookout query API does: a body that is not the
    /// expected JSON, an error without `{"error": ...}`, or not HTTP/1.1 at all (an OTLP
    /// port, another server).
    #[error("not a Lookout query API: {0}")]
    NotLookout(String),
}

impl FetchError {
    /// True when the collector could not be reached at all (as opposed to refusing the
    /// request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Unreachable(_))
    }

    /// True when the request never got a Lookout answer: nothing answered, or something
    /// else did. The views keep what they show and the header says why.
    pub fn is_connection(&self) -> bool {
        matches!(self, FetchError::Unreachable(_) | FetchError::NotLookout(_))
    }
}

/// Most characters of a foreign answer quoted in an error.
const QUOTE_MAX: usize = 120;

/// A query of `GET /api/v1/logs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsQuery {
    /// Tantivy query text (empty: everything).
    pub q: String,
    /// Only this service.
    pub service: Option<String>,
    /// Relative start (`15m`) or RFC 3339.
    pub from: Option<String>,
    /// End, inclusive (RFC 3339), for paging to older records.
    pub to: Option<String>,
    /// Maximum records.
    pub limit: usize,
}

/// A query of `GET /api/v1/traces`, as query parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracesQuery {
    /// `(name, value)` pairs, already validated by the search parser.
    pub params: Vec<(String, String)>,
}

/// What the app asks the fetcher for.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// RED figures per service over a window (`5m`).
    Services {
        /// The `window` parameter.
        window: String,
    },
    /// A page of logs; `seq` tells answers to an older query apart.
    Logs {
        /// The query.
        query: LogsQuery,
        /// Replace the list or append older records.
        mode: LogsMode,
        /// Sequence number of the query.
        seq: u64,
    },
    /// Trace search.
    Traces {
        /// The query.
        query: TracesQuery,
        /// Sequence number of the query.
        seq: u64,
    },
    /// One assembled trace.
    Trace {
        /// Trace id (hex).
        id: String,
        /// Sequence number.
        seq: u64,
    },
    /// The logs of one span.
    SpanLogs {
        /// Span id (hex).
        span_id: String,
        /// Sequence number.
        seq: u64,
    },
    /// The service graph.
    Dependencies,
    /// Alert rules, instances and receivers.
    Alerts,
    /// The members of the cluster (`GET /api/v1/cluster`).
    Cluster,
    /// The Prometheus exposition of `GET /metrics` on the API port.
    Metrics,
}

/// How a page of logs joins the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsMode {
    /// A new query: replace.
    Replace,
    /// Older records for infinite scroll: append.
    Older,
    /// The newest page on a refresh: records newer than the list's first join it at the
    /// top, the cursor and the rows on screen stay where they were.
    Newer,
}

/// An answer from the fetcher.
#[derive(Debug)]
pub enum Fetched {
    /// Answer to [`Fetch::Services`].
    Services(Result<ServicesResponse, FetchError>),
    /// Answer to [`Fetch::Logs`].
    Logs {
        /// The result.
        result: Result<LogsResponse, FetchError>,
        /// How it joins the list.
        mode: LogsMode,
        /// Sequence number of the query.
        seq: u64,
    },
    /// Answer to [`Fetch::Traces`].
    Traces {
        /// The result.
        result: Result<TracesResponse, FetchError>,
        /// Sequence number.
        seq: u64,
    },
    /// Answer to [`Fetch::Trace`].
    Trace {
        /// The result.
        result: Result<TraceResponse, FetchError>,
        /// Sequence number.
        seq: u64,
    },
    /// Answer to [`Fetch::SpanLogs`].
    SpanLogs {
        /// The result.
        result: Result<LogsResponse, FetchError>,
        /// Sequence number.
        seq: u64,
    },
    /// Answer to [`Fetch::Dependencies`].
    Dependencies(Result<DependenciesResponse, FetchError>),
    /// Answer to [`Fetch::Alerts`].
    Alerts(Result<AlertsResponse, FetchError>),
    /// Answer to [`Fetch::Cluster`].
    Cluster(Result<ClusterResponse, FetchError>),
    /// Answer to [`Fetch::Metrics`].
    Metrics {
        /// The parsed exposition.
        result: Result<Exposition, FetchError>,
        /// When it was scraped (rates divide by the time between scrapes).
        at: Instant,
    },
}

impl Fetched {
    /// The error, if the request failed.
    pub fn error(&self) -> Option<&FetchError> {
        match self {
            Fetched::Services(r) => r.as_ref().err(),
            Fetched::Logs { result, .. } | Fetched::SpanLogs { result, .. } => {
                result.as_ref().err()
            }
            Fetched::Traces { result, .. } => result.as_ref().err(),
            Fetched::Trace { result, .. } => result.as_ref().err(),
            Fetched::Dependencies(r) => r.as_ref().err(),
            Fetched::Alerts(r) => r.as_ref().err(),
            Fetched::Cluster(r) => r.as_ref().err(),
            Fetched::Metrics { result, .. } => result.as_ref().err(),
        }
    }
}

/// Client of one collector's query API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// Credentials towards a secured collector.
#[derive(Default)]
pub struct Security {
    /// Bearer token of the query API.
    pub token: Option<String>,
    /// PEM CA bundle trusted instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain followed by its key (mTLS).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .finish()
    }
}

impl Client {
    /// A client of the collector at `base` (e.g. `http://127.0.0.1:7070`), with a
    /// per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Result<Client, FetchError> {
        Self::with_security(base, timeout, &Security::default())
    }

    /// A client sending a bearer token and trusting a CA bundle, as `security` says.
    pub fn with_security(
        base: &str,
        timeout: Duration,
        security: &Security,
    ) -> Result<Client, FetchError> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .user_agent(concat!("lookout-tui/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &security.token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    FetchError::Unreachable("the token is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, v);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &security.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| FetchError::Unreachable(format!("bad CA file: {e}")))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &security.identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| FetchError::Unreachable(format!("bad client certificate: {e}")))?;
            builder = builder.identity(id);
        }
        let http = builder
            .build()
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Perform one fetch; returns the answer and how long it took.
    pub async fn fetch(&self, f: Fetch) -> (Fetched, Duration) {
        let started = Instant::now();
        let out = match f {
            Fetch::Services { window } => Fetched::Services(
                self.get("/api/v1/services", &[("window".into(), window)])
                    .await,
            ),
            Fetch::Logs { query, mode, seq } => Fetched::Logs {
                result: self.get("/api/v1/logs", &logs_params(&query)).await,
                mode,
                seq,
            },
            Fetch::Traces { query, seq } => Fetched::Traces {
                result: self.get("/api/v1/traces", &query.params).await,
                seq,
            },
            Fetch::Trace { id, seq } => Fetched::Trace {
                result: self.get(&format!("/api/v1/traces/{id}"), &[]).await,
                seq,
            },
            Fetch::SpanLogs { span_id, seq } => {
                let q = LogsQuery {
                    q: format!("span_id:{span_id}"),
                    limit: 200,
                    ..LogsQuery::default()
                };
                Fetched::SpanLogs {
                    result: self.get("/api/v1/logs", &logs_params(&q)).await,
                    seq,
                }
            }
            Fetch::Dependencies => Fetched::Dependencies(
                self.get("/api/v1/dependencies", &[("from".into(), "1h".into())])
                    .await,
            ),
            Fetch::Alerts => Fetched::Alerts(self.get("/api/v1/alerts", &[]).await),
            Fetch::Cluster => Fetched::Cluster(self.get("/api/v1/cluster", &[]).await),
            Fetch::Metrics => {
                let result = self.get_exposition().await;
                Fetched::Metrics {
                    result,
                    at: Instant::now(),
                }
            }
        };
        (out, started.elapsed())
    }

    /// `GET /metrics`, parsed (on the fetcher's task, not the drawing one).
    async fn get_exposition(&self) -> Result<Exposition, FetchError> {
        let path = "/metrics";
        let (status, _, body) = self.get_raw(path, &[]).await?;
        let text = std::str::from_utf8(&body).map_err(|_| {
            FetchError::NotLookout(format!(
                "{}{path} answered {status} with a body that is not UTF-8",
                self.base
            ))
        })?;
        parse_exposition(text).map_err(|e| {
            FetchError::NotLookout(format!("{}{path} answered {status}: {e}", self.base))
        })
    }

    /// A GET answered 2xx: its status, content type and body. Other answers are the
    /// collector's `{"error": ...}`, or something that is not a Lookout API.
    async fn get_raw(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<(reqwest::StatusCode, String, Vec<u8>), FetchError> {
        let url = format!("{}{path}", self.base);
        let url = if params.is_empty() {
            reqwest::Url::parse(&url)
        } else {
            reqwest::Url::parse_with_params(&url, params)
        }
        .map_err(|e| FetchError::Unreachable(format!("bad collector URL {}: {e}", self.base)))?;
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.send_error(&e))?;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.map_err(|e| self.send_error(&e))?;
        let answered = |what: String| {
            FetchError::NotLookout(format!("{}{path} answered {status}{what}", self.base))
        };
        if !status.is_success() {
            // A Lookout collector says what was wrong as `{"error": "..."}`.
            return match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(b) => Err(FetchError::Api {
                    status: status.as_u16(),
                    message: b.error,
                }),
                Err(_) => Err(answered(quote(&body))),
            };
        }
        Ok((status, content_type, body.to_vec()))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<T, FetchError> {
        let (status, content_type, body) = self.get_raw(path, params).await?;
        let answered = |what: String| {
            FetchError::NotLookout(format!("{}{path} answered {status}{what}", self.base))
        };
        serde_json::from_slice(&body).map_err(|e| {
            if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                let ct = if content_type.is_empty() {
                    "no content type".to_string()
                } else {
                    content_type.clone()
                };
                answered(format!(" with {ct}, not JSON{}", quote(&body)))
            } else {
                answered(format!(" with JSON that is not its answer ({e})"))
            }
        })
    }

    /// Why a request got no answer, or got one that is not HTTP.
    fn send_error(&self, e: &reqwest::Error) -> FetchError {
        let text = describe(e);
        // hyper's words for bytes that do not parse as an HTTP/1.1 response: an HTTP/2-only
        // server (an OTLP/gRPC port) or some other protocol.
        if !e.is_connect() && !e.is_timeout() && text.contains("invalid HTTP") {
            return FetchError::NotLookout(format!(
                "{} answered something that is not HTTP/1.1 ({text}; an OTLP/gRPC port?)",
                self.base
            ));
        }
        if e.is_connect() {
            return FetchError::Unreachable(format!("{}: {text}", self.base));
        }
        FetchError::Unreachable(text)
    }
}

/// The start of a foreign answer's body, on one line, for an error message.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return String::new();
    }
    let mut q: String = text.chars().take(QUOTE_MAX).collect();
    if q.len() < text.len() {
        q.push('…');
    }
    format!(": {q}")
}

fn logs_params(q: &LogsQuery) -> Vec<(String, String)> {
    let mut p = vec![("limit".to_string(), q.limit.max(1).to_string())];
    if !q.q.trim().is_empty() {
        p.push(("q".into(), q.q.clone()));
    }
    if let Some(s) = &q.service {
        p.push(("service".into(), s.clone()));
    }
    if let Some(f) = &q.from {
        p.push(("from".into(), f.clone()));
    }
    if let Some(t) = &q.to {
        p.push(("to".into(), t.clone()));
    }
    p
}

/// What went wrong, short: reqwest keeps the cause (e.g. "Connection refused") at the
/// bottom of its `source()` chain.
fn describe(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if e.is_timeout() {
        "no answer in time (timed out)".into()
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        format!("{root}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server on loopback that answers every connection with `answer`, byte for byte.
    async fn server(answer: impl Into<Vec<u8>>) -> String {
        let answer: Vec<u8> = answer.into();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            }
        });
        format!("http://{addr}")
    }

    /// An HTTP/1.1 answer with a body of `content_type`.
    fn http(status: &str, content_type: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    async fn services(base: &str) -> FetchError {
        let c = Client::new(base, Duration::from_secs(5)).unwrap();
        let f = Fetch::Services {
            window: "5m".into(),
        };
        match c.fetch(f).await.0 {
            Fetched::Services(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_otlp_http_port_is_not_a_lookout_api() {
        let base = server(http(
            "404 Not Found",
            "application/json",
            r#"{"code":5,"message":"not found; OTLP/HTTP paths are /v1/traces, /v1/logs and /v1/metrics"}"#,
        ))
        .await;
        let e = services(&base).await;
        assert!(matches!(e, FetchError::NotLookout(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "not a Lookout query API: {base}/api/v1/services answered 404 Not Found: {{\"code\":5"
            )),
            "{text}"
        );
        assert!(e.is_connection() && !e.is_unreachable());
    }

    #[tokio::test]
    async fn a_web_page_is_not_a_lookout_api() {
        let base = server(http("200 OK", "text/html", "<html><body>hi</body></html>")).await;
        let text = services(&base).await.to_string();
        assert!(
            text.contains("answered 200 OK with text/html, not JSON: <html>"),
            "{text}"
        );
        let base = server(http("200 OK", "application/json", "[]")).await;
        let text = services(&base).await.to_string();
        assert!(
            text.contains("answered 200 OK with JSON that is not its answer"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn an_http2_only_port_is_not_a_lookout_api() {
        // What an HTTP/2-only server (tonic's OTLP/gRPC) sends to an HTTP/1.1 request:
        // a SETTINGS frame, then GOAWAY.
        let base = server(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00\x00\x00\x08\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01").await;
        let e = services(&base).await;
        let text = e.to_string();
        assert!(matches!(e, FetchError::NotLookout(_)), "{e:?}");
        assert!(
            text.contains(&format!("{base} answered something that is not HTTP/1.1")),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let base = format!("http://{addr}");
        let e = services(&base).await;
        assert!(e.is_unreachable(), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&base) && text.contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn a_lookout_error_is_the_collectors_message() {
        let base = server(http(
            "400 Bad Request",
            "application/json",
            r#"{"error":"parameter `q`: x"}"#,
        ))
        .await;
        let e = services(&base).await;
        assert_eq!(
            e,
            FetchError::Api {
                status: 400,
                message: "parameter `q`: x".into()
            }
        );
    }
}
