//! Operational endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lookout_ingest::clock::now_unix_nano;

use super::lookup::blocking;
use super::state::ApiState;

/// Routes of the operational endpoints.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
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

/// Self-metrics, RED, service graph and OTLP metrics, in the Prometheus text format or,
/// when `Accept` asks for it, OpenMetrics.
async fn get_metrics(State(s): State<ApiState>, headers: header::HeaderMap) -> Response {
    let format =
        crate::prom::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let body = blocking(move || {
        let mut w = crate::prom::Exposition::new(format);
        crate::metrics::render(&s.registry, &mut w);
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
