//! Query API (`/api/v1/...`), `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lookout_proto::api::ErrorBody;

use crate::metrics::Metrics;
use crate::store::logs::{self, severity_floor, LogFields, LogQuery, SearchError};
use crate::store::partition::PartitionedIndex;
use crate::store::spans::{self, SpanFields};
use crate::store::traces::{self as trace_store, TraceFields, TraceQuery};
use crate::traces::assemble::assemble;
use crate::traces::tracker::TracesShared;
use lookout_ingest::clock::now_unix_nano;

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// What the API reads.
#[derive(Clone)]
pub struct ApiState {
    /// Set once WAL replay is done.
    pub ready: Arc<AtomicBool>,
    /// Self-metrics.
    pub metrics: Arc<Metrics>,
    /// Log partitions.
    pub logs: Arc<PartitionedIndex>,
    /// Log schema.
    pub log_fields: LogFields,
    /// Span partitions.
    pub spans: Arc<PartitionedIndex>,
    /// Span schema.
    pub span_fields: SpanFields,
    /// Trace summary partitions.
    pub traces: Arc<PartitionedIndex>,
    /// Trace summary schema.
    pub trace_fields: TraceFields,
    /// Open traces, RED metrics and the service graph.
    pub shared: Arc<TracesShared>,
    /// Longest RED window that can be asked for.
    pub red_window: std::time::Duration,
    /// OTLP metrics received from services, exposed on `/metrics`.
    pub metric_store: Arc<parking_lot::Mutex<crate::prom::MetricStore>>,
    /// Alert rules and their instances.
    pub alerts: crate::alerts::AlertsHandle,
    /// Query limits.
    pub query: lookout_config::QueryConfig,
    /// Concurrency and time limits of the query endpoints.
    pub query_guard: QueryGuard,
}

/// An API error: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::BadQuery(m) => ApiError::bad_request(format!("parameter `q`: {m}")),
            e @ (SearchError::Index(_) | SearchError::Partition(_)) => {
                tracing::error!(error = %e, "search failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: e.to_string(),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/logs", get(get_logs))
        .route("/api/v1/traces", get(get_traces))
        .route("/api/v1/traces/{trace_id}", get(get_trace))
        .route("/api/v1/services", get(get_services))
        .route("/api/v1/dependencies", get(get_dependencies))
        .merge(crate::jaeger::router())
        .route("/api/v1/alerts", get(get_alerts))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such endpoint; see /api/v1/logs, /api/v1/traces, /api/v1/traces/{trace_id}, /api/v1/services, /api/v1/dependencies, /api/v1/alerts, /jaeger/api/..., /metrics, /healthz, /readyz".into(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.query_guard.clone(),
            guard_queries,
        ))
        .with_state(state)
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "replaying the write-ahead log\n",
        )
            .into_response()
    }
}

async fn get_alerts(State(s): State<ApiState>) -> Response {
    Json(s.alerts.status()).into_response()
}

/// Self-metrics, RED, service graph and OTLP metrics, in the Prometheus text format or,
/// when `Accept` asks for it, OpenMetrics.
async fn get_metrics(State(s): State<ApiState>, headers: header::HeaderMap) -> Response {
    let format =
        crate::prom::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = blocking(move || {
        let mut w = crate::prom::Writer::new(format);
        s.metrics.render(&mut w);
        s.shared.red.lock().render_prometheus(&mut w);
        s.shared.graph.lock().render_prometheus(&mut w);
        s.metric_store.lock().render(&mut w, now_unix_nano());
        if !w.skipped().is_empty() {
            tracing::debug!(families = ?w.skipped(), "metric families skipped: names already exposed");
        }
        Ok(w.finish())
    })
    .await;
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => e.into_response(),
    }
}

type Params = Query<Vec<(String, String)>>;

/// Query parameters, each read at most once; leftovers are refused by name.
pub(crate) struct ParamReader(pub(crate) Vec<(String, String)>);

impl ParamReader {
    pub(crate) fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found: Option<String> = None;
        let mut dup = false;
        self.0.retain(|(k, v)| {
            if k == name {
                dup |= found.is_some();
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        if dup {
            return Err(ApiError::bad_request(format!(
                "parameter `{name}` given more than once"
            )));
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    pub(crate) fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.0.retain(|(k, v)| match k.strip_prefix(prefix) {
            Some(rest) => {
                out.push((rest.to_string(), v.clone()));
                false
            }
            None => true,
        });
        out
    }

    pub(crate) fn finish(self) -> Result<(), ApiError> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::bad_request(format!("unknown parameter `{k}`"))),
        }
    }

    pub(crate) fn limit(&mut self) -> Result<usize, ApiError> {
        match self.take("limit")? {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "parameter `limit`: expected an integer from 1 to {MAX_LIMIT}, got {v:?}"
                ))),
            },
        }
    }

    /// [`Self::time_range`] no wider than `max`: without `from`, the last `max` before
    /// `to` (or now); an explicit wider range is refused.
    pub(crate) fn time_range_within(
        &mut self,
        max: std::time::Duration,
    ) -> Result<(u64, u64), ApiError> {
        let explicit_from = self.0.iter().any(|(k, v)| k == "from" && !v.is_empty());
        let (from, to) = self.time_range()?;
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let end = if to == u64::MAX { now_unix_nano() } else { to };
        if !explicit_from {
            return Ok((from.max(end.saturating_sub(max_ns)), to));
        }
        if end.saturating_sub(from) > max_ns {
            return Err(ApiError::bad_request(format!(
                "time range from..to is wider than query.max_range ({}); narrow it",
                humantime::format_duration(max)
            )));
        }
        Ok((from, to))
    }

    pub(crate) fn time_range(&mut self) -> Result<(u64, u64), ApiError> {
        let now = now_unix_nano();
        let from = match self.take("from")? {
            Some(v) => parse_time(&v, now)
                .map_err(|e| ApiError::bad_request(format!("parameter `from`: {e}")))?,
            None => 0,
        };
        let to = match self.take("to")? {
            Some(v) => parse_time(&v, now)
                .map_err(|e| ApiError::bad_request(format!("parameter `to`: {e}")))?,
            None => u64::MAX,
        };
        if from > to {
            return Err(ApiError::bad_request("parameter `from` is after `to`"));
        }
        Ok((from, to))
    }

    pub(crate) fn duration(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        self.take(name)?
            .map(|v| {
                lookout_config::parse_duration(&v)
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    .map_err(|e| ApiError::bad_request(format!("parameter `{name}`: {e}")))
            })
            .transpose()
    }
}

/// A time: RFC 3339, or relative to now (`15m` means 15 minutes ago), or `now`.
pub fn parse_time(v: &str, now_ns: u64) -> Result<u64, String> {
    let v = v.trim();
    if v == "now" {
        return Ok(now_ns);
    }
    if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        let ns = t.unix_timestamp_nanos();
        return u64::try_from(ns).map_err(|_| format!("time {v:?} is before 1970"));
    }
    if v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains('-') && !v.contains(':') {
        if let Ok(d) = lookout_config::parse_duration(v) {
            return Ok(now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        }
    }
    Err(format!(
        "expected RFC 3339 (2026-01-02T15:04:05Z) or a relative time (15m, 2h, 7d), got {v:?}"
    ))
}

/// Refuse a log query longer or with more clauses than `cfg` allows, before tantivy
/// expands it.
fn check_log_query(text: &str, cfg: &lookout_config::QueryConfig) -> Result<(), ApiError> {
    use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
    fn clauses(ast: &UserInputAst) -> usize {
        match ast {
            UserInputAst::Clause(c) => c.iter().map(|(_, a)| clauses(a)).sum(),
            UserInputAst::Boost(a, _) => clauses(a),
            UserInputAst::Leaf(leaf) => match leaf.as_ref() {
                UserInputLeaf::Set { elements, .. } => elements.len().max(1),
                _ => 1,
            },
        }
    }
    let max_len = cfg.max_query_length.as_usize();
    if text.len() > max_len {
        return Err(ApiError::bad_request(format!(
            "parameter `q`: {} bytes, longer than query.max_query_length ({})",
            text.len(),
            cfg.max_query_length
        )));
    }
    // Malformed text is reported by the search itself, with tantivy's message.
    if let Ok(ast) = tantivy::query_grammar::parse_query(text) {
        let n = clauses(&ast);
        if n > cfg.max_query_clauses {
            return Err(ApiError::bad_request(format!(
                "parameter `q`: {n} clauses, more than query.max_query_clauses ({})",
                cfg.max_query_clauses
            )));
        }
    }
    Ok(())
}

/// Middleware of the query endpoints: at most `max_concurrent` at once (waiting for a
/// slot counts against the timeout) and an answer within `timeout`, else 503.
pub async fn guard_queries(
    axum::extract::State(guard): axum::extract::State<QueryGuard>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if !(path.starts_with("/api/") || path.starts_with("/jaeger/")) {
        return next.run(req).await;
    }
    let deadline = tokio::time::Instant::now() + guard.timeout;
    let unavailable = |message: String| {
        let mut r = ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
        }
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        r
    };
    let permit = match tokio::time::timeout_at(deadline, guard.slots.clone().acquire_owned()).await
    {
        Ok(Ok(p)) => p,
        _ => {
            guard.refused.inc();
            return unavailable(format!(
                "too many queries in flight (query.max_concurrent = {}); retry",
                guard.max_concurrent
            ));
        }
    };
    let res = tokio::time::timeout_at(deadline, next.run(req)).await;
    drop(permit);
    match res {
        Ok(r) => r,
        Err(_) => {
            guard.refused.inc();
            unavailable(format!(
                "query timed out after {} (query.timeout); narrow the time range or the query",
                humantime::format_duration(guard.timeout)
            ))
        }
    }
}

/// State of [`guard_queries`].
#[derive(Clone)]
pub struct QueryGuard {
    slots: Arc<tokio::sync::Semaphore>,
    max_concurrent: usize,
    timeout: std::time::Duration,
    refused: prometheus::IntCounter,
}

impl QueryGuard {
    /// The guard of `cfg`, counting refusals in `refused`.
    pub fn new(cfg: &lookout_config::QueryConfig, refused: prometheus::IntCounter) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent)),
            max_concurrent: cfg.max_concurrent,
            timeout: cfg.timeout.get(),
            refused,
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("query task failed: {e}"),
    })?
}

async fn get_logs(State(s): State<ApiState>, Query(params): Params) -> Result<Response, ApiError> {
    let mut p = ParamReader(params);
    let q = p.take("q")?;
    let service = p.take("service")?;
    let min_severity = match p.take("severity")? {
        None => None,
        Some(v) => Some(severity_floor(&v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter `severity`: expected trace, debug, info, warn, error or fatal, got {v:?}"
            ))
        })?),
    };
    let (from_ns, to_ns) = p.time_range_within(s.query.max_range.get())?;
    let limit = p.limit()?;
    p.finish()?;
    if let Some(text) = &q {
        check_log_query(text, &s.query)?;
    }
    let query = LogQuery {
        q,
        service,
        min_severity,
        from_ns,
        to_ns,
        limit,
    };
    let timer = s
        .metrics
        .query_seconds
        .with_label_values(&["logs"])
        .start_timer();
    let res = blocking(move || Ok(logs::search(&s.logs, &s.log_fields, &query)?)).await?;
    timer.observe_duration();
    Ok(Json(res).into_response())
}

async fn get_traces(
    State(s): State<ApiState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader(params);
    let service = p.take("service")?;
    let operation = p.take("operation")?;
    let min_duration_ns = p.duration("min_duration")?;
    let max_duration_ns = p.duration("max_duration")?;
    let errors_only = match p.take("status")?.as_deref() {
        None => false,
        Some("error") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "parameter `status`: only `error` is supported, got {other:?}"
            )))
        }
    };
    let mut attributes = Vec::new();
    for (key, v) in p.take_prefixed("attr.") {
        if key.is_empty() {
            return Err(ApiError::bad_request(
                "parameter `attr.`: missing attribute key",
            ));
        }
        attributes.push((key, v));
    }
    let (from_ns, to_ns) = p.time_range_within(s.query.max_range.get())?;
    let limit = p.limit()?.min(1000);
    p.finish()?;
    let query = TraceQuery {
        service,
        operation,
        min_duration_ns,
        max_duration_ns,
        errors_only,
        attributes,
        from_ns,
        to_ns,
        limit,
    };
    let timer = s
        .metrics
        .query_seconds
        .with_label_values(&["traces"])
        .start_timer();
    let started = std::time::Instant::now();
    let docs =
        blocking(move || Ok(trace_store::search(&s.traces, &s.trace_fields, &query)?)).await?;
    timer.observe_duration();
    Ok(Json(lookout_proto::api::TracesResponse {
        traces: docs.iter().map(|d| d.summary()).collect(),
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
    .into_response())
}

/// Parse a 32-hex-digit trace id.
pub(crate) fn parse_trace_id(v: &str) -> Result<[u8; 16], ApiError> {
    let mut id = [0u8; 16];
    match hex::decode_to_slice(v, &mut id) {
        Ok(()) if v.len() == 32 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "trace id must be 32 hex characters, got {v:?}"
        ))),
    }
}

/// Assemble the stored spans of `id`, with its completeness state; `None` when unknown.
pub(crate) fn load_trace(
    s: &ApiState,
    id: &[u8; 16],
) -> Result<Option<lookout_proto::api::TraceResponse>, ApiError> {
    let mut found = spans::get_spans(&s.spans, &s.span_fields, id)?;
    if found.found.is_empty() {
        // Not found, unless it is in a partition that could not be read.
        return match found.unreadable.pop() {
            Some(e) => Err(SearchError::Partition(e).into()),
            None => Ok(None),
        };
    }
    let mut unreadable: Vec<_> = found
        .unreadable
        .into_iter()
        .map(|e| (e, "spans stored there are missing"))
        .collect();
    let state = if s.shared.open.lock().contains(id) {
        "open"
    } else {
        let stored = trace_store::latest(&s.traces, &s.trace_fields, id)?;
        unreadable.extend(
            stored
                .unreadable
                .into_iter()
                .map(|e| (e, "the trace's state may be out of date")),
        );
        match stored.found {
            Some(d) => d.state.as_str(),
            // Indexed spans the tracker has not summarised yet.
            None => "open",
        }
    };
    let mut t = assemble(&hex::encode(id), state, found.found);
    for (e, consequence) in unreadable {
        tracing::warn!(error = %e, trace_id = %hex::encode(id), "trace lookup left out a partition that cannot be read");
        t.warnings.push(lookout_proto::api::TraceWarning {
            kind: "unreadable_partition".to_string(),
            span_id: None,
            message: format!("{e}: {consequence}"),
        });
    }
    for w in &t.warnings {
        s.metrics
            .traces_warnings
            .with_label_values(&[w.kind.as_str()])
            .inc();
    }
    Ok(Some(t))
}

async fn get_trace(
    State(s): State<ApiState>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_trace_id(&trace_id.to_ascii_lowercase())?;
    let timer = s
        .metrics
        .query_seconds
        .with_label_values(&["trace"])
        .start_timer();
    let found = blocking(move || load_trace(&s, &id)).await?;
    timer.observe_duration();
    match found {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(ApiError::not_found(format!("trace {trace_id} not found"))),
    }
}

async fn get_services(
    State(s): State<ApiState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader(params);
    let window = p.duration("window")?.map_or(
        std::time::Duration::from_secs(300),
        std::time::Duration::from_nanos,
    );
    p.finish()?;
    if window.is_zero() || window > s.red_window {
        return Err(ApiError::bad_request(format!(
            "parameter `window`: must be more than 0 and at most traces.red_window ({}s)",
            s.red_window.as_secs()
        )));
    }
    let now_s = now_unix_nano() / 1_000_000_000;
    let res = s.shared.red.lock().services(now_s, window);
    Ok(Json(res).into_response())
}

async fn get_dependencies(
    State(s): State<ApiState>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader(params);
    let (from_ns, to_ns) = p.time_range_within(s.query.max_range.get())?;
    p.finish()?;
    let now = now_unix_nano();
    let from_s = if from_ns == 0 {
        now.saturating_sub(3_600_000_000_000)
    } else {
        from_ns
    } / 1_000_000_000;
    let to_s = to_ns.min(now) / 1_000_000_000;
    let res = s.shared.graph.lock().dependencies(from_s, to_s);
    Ok(Json(res).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn times() {
        let now = 10_000_000_000_000u64;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("15m", now), Ok(now - 900_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("1969-12-31T23:59:59Z", now).is_err());
    }

    fn guarded(timeout_ms: u64, max_concurrent: usize) -> (Router, prometheus::IntCounter) {
        let cfg = lookout_config::QueryConfig {
            timeout: lookout_config::HumanDuration(std::time::Duration::from_millis(timeout_ms)),
            max_concurrent,
            ..Default::default()
        };
        let refused = prometheus::IntCounter::new("refused", "test").expect("counter");
        let router = Router::new()
            .route(
                "/api/v1/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
                    "done"
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                QueryGuard::new(&cfg, refused.clone()),
                guard_queries,
            ));
        (router, refused)
    }

    async fn call(router: Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let res = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_slow_query_gets_503_and_others_are_served() {
        let (router, refused) = guarded(100, 4);
        let (status, body) = call(router.clone(), "/api/v1/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("query timed out after 100ms"), "{body}");
        // Health checks are not queries.
        assert_eq!(call(router, "/healthz").await.0, StatusCode::OK);
        assert_eq!(refused.get(), 1);
    }

    #[tokio::test]
    async fn at_most_max_concurrent_queries_run_at_once() {
        use std::sync::atomic::AtomicUsize;
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let cfg = lookout_config::QueryConfig {
            max_concurrent: 2,
            ..Default::default()
        };
        let (r, p) = (running.clone(), peak.clone());
        let router = Router::new()
            .route(
                "/api/v1/q",
                get(move || {
                    let (r, p) = (r.clone(), p.clone());
                    async move {
                        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        r.fetch_sub(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                QueryGuard::new(&cfg, prometheus::IntCounter::new("r", "t").unwrap()),
                guard_queries,
            ));
        let calls: Vec<_> = (0..6)
            .map(|_| tokio::spawn(call(router.clone(), "/api/v1/q")))
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().0, StatusCode::OK);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn long_or_wide_log_queries_are_refused() {
        let cfg = lookout_config::QueryConfig {
            max_query_length: lookout_config::ByteSize(64),
            max_query_clauses: 3,
            ..Default::default()
        };
        assert!(check_log_query("error AND service:shop", &cfg).is_ok());
        let e = check_log_query(&"a".repeat(65), &cfg).unwrap_err();
        assert!(e.message.contains("65 bytes, longer than"), "{}", e.message);
        let e = check_log_query("a b c d", &cfg).unwrap_err();
        assert!(e.message.contains("4 clauses"), "{}", e.message);
        let e = check_log_query("service: IN [a b c d]", &cfg).unwrap_err();
        assert!(e.message.contains("4 clauses"), "{}", e.message);
    }
}
