//! The query API (`/api/v1/...`), the Jaeger query API (`/jaeger/api/...`), `/metrics`,
//! `/healthz` and `/readyz`.
//!
//! [`state::ApiState`] holds what the handlers read: the store handles, the trace tracker's
//! shared state, the OTLP metrics store and the alerts. Every query endpoint runs behind
//! [`guard`] (concurrency and time limits) and does its searching on the blocking pool.

pub mod error;
pub mod fanout;
pub mod guard;
pub mod jaeger;
pub mod lookup;
pub mod native;
pub mod ops;
pub mod params;
pub mod state;

use axum::http::StatusCode;
use axum::Router;

pub use error::ApiError;
pub use state::{ApiMetrics, ApiState};

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(native::router())
        .merge(jaeger::router())
        .merge(ops::router())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/logs, /api/v1/traces, /api/v1/traces/{trace_id}, /api/v1/services, /api/v1/dependencies, /api/v1/alerts, /jaeger/api/..., /metrics, /healthz, /readyz",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            guard::guard_queries,
        ))
        .with_state(state)
}
