//! Query API (`/api/v1/...`), `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lookout_proto::api::ErrorBody;

use crate::ingest::now_unix_nano;
use crate::metrics::Metrics;
use crate::store::logs::{self, severity_floor, LogFields, LogQuery, SearchError};
use crate::store::partition::PartitionedIndex;
use crate::store::spans::{self, SpanFields};
use crate::store::traces::{self as trace_store, TraceFields, TraceQuery};
use crate::traces::assemble::assemble;
use crate::traces::tracker::TracesShared;

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
            SearchError::Index(e) => {
                tracing::error!(error = %e, "search failed");
                ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!("search failed: {e}"),
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
    let (from_ns, to_ns) = p.time_range()?;
    let limit = p.limit()?;
    p.finish()?;
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
    let (from_ns, to_ns) = p.time_range()?;
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
    let spans = spans::get_spans(&s.spans, &s.span_fields, id)?;
    if spans.is_empty() {
        return Ok(None);
    }
    let state = if s.shared.open.lock().contains(id) {
        "open"
    } else {
        match trace_store::latest(&s.traces, &s.trace_fields, id)? {
            Some(d) => d.state.as_str(),
            // Indexed spans the tracker has not summarised yet.
            None => "open",
        }
    };
    let t = assemble(&hex::encode(id), state, spans);
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
    let (from_ns, to_ns) = p.time_range()?;
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
}
