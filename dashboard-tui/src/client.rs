//! HTTP client of the collector's query API (`/api/v1`). Views never call it: the
//! background fetcher does, and hands the results back to the app as [`Fetched`] values.

use std::time::{Duration, Instant};

use lookout_proto::api::{
    AlertsResponse, DependenciesResponse, ErrorBody, LogsResponse, ServicesResponse, TraceResponse,
    TracesResponse,
};
use serde::de::DeserializeOwned;

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
    /// The collector answered 2xx with a body we cannot read.
    #[error("unexpected answer from the collector: {0}")]
    Decode(String),
}

impl FetchError {
    /// True when the collector could not be reached at all (as opposed to refusing the
    /// request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Unreachable(_))
    }
}

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
    /// RED figures per service.
    Services,
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
}

/// How a page of logs joins the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsMode {
    /// A new query: replace.
    Replace,
    /// Older records for infinite scroll: append.
    Older,
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
            Fetch::Services => Fetched::Services(self.get("/api/v1/services", &[]).await),
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
        };
        (out, started.elapsed())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<T, FetchError> {
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
            .map_err(|e| FetchError::Unreachable(describe(&e)))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| FetchError::Unreachable(describe(&e)))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| {
                    let text = String::from_utf8_lossy(&body);
                    format!("HTTP {status}: {}", text.trim())
                });
            return Err(FetchError::Api {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| FetchError::Decode(format!("{path}: {e}")))
    }
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
