//! Limits of the query endpoints: at most `query.max_concurrent` at once and an answer
//! within `query.timeout`, else 503 with a retry hint.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

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
        let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::sync::atomic::Ordering;

    use axum::routing::get;
    use axum::Router;

    use super::*;

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
}
