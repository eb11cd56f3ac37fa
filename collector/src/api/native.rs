//! The native query API under `/api/v1`.

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lookout_ingest::clock::now_unix_nano;

use super::error::ApiError;
use super::fanout::{self, path_and_query, peers_for, Peers};
use super::lookup::{blocking, load_trace, parse_trace_id};
use super::params::{ParamReader, Params};
use super::state::ApiState;
use crate::store::logs::{severity_floor, LogQuery};
use crate::store::traces::{api_summary, TraceQuery};

/// Most trace summaries one search returns (each is confirmed as its trace's newest
/// version, so a search costs in proportion).
const MAX_TRACE_LIMIT: usize = 1000;

/// Routes under `/api/v1`.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/logs", get(get_logs))
        .route("/api/v1/traces", get(get_traces))
        .route("/api/v1/traces/{trace_id}", get(get_trace))
        .route("/api/v1/services", get(get_services))
        .route("/api/v1/dependencies", get(get_dependencies))
        .route("/api/v1/alerts", get(get_alerts))
        .route("/api/v1/cluster", get(get_cluster))
}

/// The cluster as this node sees it; unless a member asks, each other member's own
/// figures (lag, consumed, redelivered) are asked for and filled in.
async fn get_cluster(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let Some(p) = &s.peers else {
        return Json(lookout_proto::api::ClusterResponse::default()).into_response();
    };
    let mut view = p.status().view();
    if Peers::fans_out(&headers) {
        let (answers, warnings) = p
            .ask::<lookout_proto::api::ClusterResponse>("/api/v1/cluster")
            .await;
        crate::cluster::fill_member_figures(&mut view, answers.into_iter().flatten());
        view.warnings = warnings;
    }
    Json(view).into_response()
}

/// The alert rules' state. In cluster mode one member (the leader) evaluates them: any
/// other answers with the leader's state, or, when the leader does not answer, with its
/// own and a warning saying so.
async fn get_alerts(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let mut warnings = Vec::new();
    if let Some(p) = peers_for(&s, &headers) {
        let st = p.status();
        match st.alerts_leader() {
            Some(leader) if !st.is_alert_leader() && leader != st.me.node => {
                match p
                    .ask_member::<lookout_proto::api::AlertsResponse>(&leader, "/api/v1/alerts")
                    .await
                {
                    Ok(Some(r)) => return Json(r).into_response(),
                    Ok(None) => warnings.push(format!(
                        "the alert leader {leader} has no alerts API; this is node {}'s own state, not the cluster's",
                        st.me.node
                    )),
                    Err(e) => warnings.push(format!(
                        "the alert leader {leader} did not answer: {e}; this is node {}'s own state, not the cluster's",
                        st.me.node
                    )),
                }
            }
            None if !st.is_alert_leader() => warnings.push(format!(
                "no member leads the alert evaluation yet; this is node {}'s own state",
                st.me.node
            )),
            _ => {}
        }
    }
    let mut r = s.alerts.status();
    r.warnings = warnings;
    Json(r).into_response()
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

async fn get_logs(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader::new(params);
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
    let peers = peers_for(&s, &headers);
    let others = async {
        match &peers {
            Some(p) => {
                p.ask::<lookout_proto::api::LogsResponse>(&path_and_query(&uri))
                    .await
            }
            None => (Vec::new(), Vec::new()),
        }
    };
    let (mine, (others, warnings)) =
        tokio::join!(blocking(move || Ok(s.logs.search(&query)?)), others);
    let mut res = fanout::merge_logs(mine?, others.into_iter().flatten().collect(), limit);
    res.warnings.extend(warnings);
    timer.observe_duration();
    Ok(Json(res).into_response())
}

async fn get_traces(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader::new(params);
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
    let limit = p.limit_within(MAX_TRACE_LIMIT)?;
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
    let peers = peers_for(&s, &headers);
    let others = async {
        match &peers {
            Some(p) => {
                p.ask::<lookout_proto::api::TracesResponse>(&path_and_query(&uri))
                    .await
            }
            None => (Vec::new(), Vec::new()),
        }
    };
    let (docs, (others, warnings)) =
        tokio::join!(blocking(move || Ok(s.traces.search(&query)?)), others);
    let mine = lookout_proto::api::TracesResponse {
        traces: docs?.iter().map(api_summary).collect(),
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        warnings: Vec::new(),
    };
    let mut res = fanout::merge_traces(mine, others.into_iter().flatten().collect(), limit);
    res.warnings.extend(warnings);
    timer.observe_duration();
    Ok(Json(res).into_response())
}

async fn get_trace(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_trace_id(&trace_id.to_ascii_lowercase())?;
    let timer = s
        .metrics
        .query_seconds
        .with_label_values(&["trace"])
        .start_timer();
    // In cluster mode every member is asked: the owner of the trace's partition holds it,
    // and a previous owner may hold its first spans.
    let peers = peers_for(&s, &headers);
    let path = format!("/api/v1/traces/{}", hex::encode(id));
    let others = async {
        match &peers {
            Some(p) => p.ask::<lookout_proto::api::TraceResponse>(&path).await,
            None => (Vec::new(), Vec::new()),
        }
    };
    let (mine, (others, unanswered)) = tokio::join!(blocking(move || load_trace(&s, &id)), others);
    let parts: Vec<_> = mine?
        .into_iter()
        .chain(others.into_iter().flatten())
        .collect();
    timer.observe_duration();
    match fanout::merge_trace(parts) {
        Some(mut t) => {
            t.warnings.extend(unanswered.into_iter().map(|message| {
                lookout_proto::api::TraceWarning {
                    kind: "node_unavailable".to_string(),
                    span_id: None,
                    message,
                }
            }));
            Ok(Json(t).into_response())
        }
        None if unanswered.is_empty() => {
            Err(ApiError::not_found(format!("trace {trace_id} not found")))
        }
        None => Err(ApiError::not_found(format!(
            "trace {trace_id} not found; {}",
            unanswered.join("; ")
        ))),
    }
}

async fn get_services(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader::new(params);
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
    let mut res = s.shared.red.lock().services(now_s, window);
    let seen = s.shared.services.all();
    let idle = s.shared.red.lock().idle_stats(now_s, window);
    list_every_service(&mut res, &seen, &idle);
    let member_asks = s.peers.is_some() && !Peers::fans_out(&headers);
    if let Some(p) = peers_for(&s, &headers) {
        let (others, warnings) = p
            .ask::<lookout_proto::api::ServicesResponse>(&path_and_query(&uri))
            .await;
        for o in others.into_iter().flatten() {
            crate::traces::red::merge_services(&mut res, o);
        }
        res.warnings = warnings;
    }
    if !member_asks {
        crate::traces::red::strip_histograms(&mut res);
    }
    Ok(Json(res).into_response())
}

/// Add the signals and last-seen time of each service with RED figures, and list every
/// other service that sent a signal with `idle` (zero) figures.
fn list_every_service(
    res: &mut lookout_proto::api::ServicesResponse,
    seen: &[(String, crate::services::Seen)],
    idle: &lookout_proto::api::RedStats,
) {
    let mut extra = Vec::new();
    for (name, s) in seen {
        let signals: Vec<String> = s.signals().map(|x| x.as_str().to_string()).collect();
        let last = s.last().saturating_mul(1_000_000_000);
        match res
            .services
            .binary_search_by(|x| x.service.as_str().cmp(name))
        {
            Ok(i) => {
                res.services[i].signals = signals;
                res.services[i].last_seen_unix_nano = last;
            }
            Err(_) => extra.push(lookout_proto::api::ServiceStats {
                service: name.clone(),
                stats: idle.clone(),
                operations: Vec::new(),
                signals,
                last_seen_unix_nano: last,
            }),
        }
    }
    res.services.extend(extra);
    res.services.sort_by(|a, b| a.service.cmp(&b.service));
}

async fn get_dependencies(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let mut p = ParamReader::new(params);
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
    let Some(p) = peers_for(&s, &headers) else {
        return Ok(Json(res).into_response());
    };
    let (others, warnings) = p
        .ask::<lookout_proto::api::DependenciesResponse>(&path_and_query(&uri))
        .await;
    let mut res = fanout::merge_dependencies(res, others.into_iter().flatten().collect());
    res.warnings = warnings;
    Ok(Json(res).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn long_or_wide_log_queries_are_refused() {
        let cfg = lookout_config::QueryConfig {
            max_query_length: lookout_config::ByteSize(64),
            max_query_clauses: 3,
            ..Default::default()
        };
        assert!(check_log_query("error AND service:shop", &cfg).is_ok());
        let e = check_log_query(&"a".repeat(65), &cfg).unwrap_err();
        assert!(
            e.message().contains("65 bytes, longer than"),
            "{}",
            e.message()
        );
        let e = check_log_query("a b c d", &cfg).unwrap_err();
        assert!(e.message().contains("4 clauses"), "{}", e.message());
        let e = check_log_query("service: IN [a b c d]", &cfg).unwrap_err();
        assert!(e.message().contains("4 clauses"), "{}", e.message());
    }
}
