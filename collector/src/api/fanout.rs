//! Cluster mode: any node's API answers for the whole cluster. A query is answered from
//! this node's stores and, at the same time, by every other member (asked with the
//! [`LOCAL`] header, so they answer from their own stores only); the answers are merged
//! here, and a member that did not answer is named in the response's warnings.

use axum::http::{HeaderMap, Uri};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::lookup::{blocking, load_trace};
use super::state::ApiState;
pub use crate::cluster::peers::{Peers, LOCAL};

/// The other members to ask too: in cluster mode, unless a member is asking.
pub(crate) fn peers_for(s: &ApiState, headers: &HeaderMap) -> Option<Peers> {
    s.peers.clone().filter(|_| Peers::fans_out(headers))
}

/// The path and query of `uri`, to ask the other members the same question.
pub(crate) fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string())
}

/// Ask `peers` (none outside cluster mode) for `path_and_query`: the answers found
/// (a 404 is left out), and one warning per member that did not answer.
pub(crate) async fn ask_found<T: DeserializeOwned>(
    peers: Option<&Peers>,
    path_and_query: &str,
) -> (Vec<T>, Vec<String>) {
    match peers {
        Some(p) => {
            let (answers, warnings) = p.ask::<T>(path_and_query).await;
            (answers.into_iter().flatten().collect(), warnings)
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// Trace `id` from this node's stores and, with `peers`, from every other member's (each
/// asked for the part it stores): the parts merged by [`merge_trace`], `None` when no
/// one holds it, and one warning per member that did not answer.
pub(crate) async fn find_trace(
    s: &ApiState,
    peers: Option<&Peers>,
    id: [u8; 16],
) -> Result<(Option<lookout_proto::api::TraceResponse>, Vec<String>), ApiError> {
    let path = format!("/api/v1/traces/{}", hex::encode(id));
    let s = s.clone();
    let (mine, (others, unanswered)) = tokio::join!(
        blocking(move || load_trace(&s, &id)),
        ask_found::<lookout_proto::api::TraceResponse>(peers, &path)
    );
    let parts: Vec<_> = mine?.into_iter().chain(others).collect();
    Ok((merge_trace(parts), unanswered))
}

/// Logs of every member: newest first, `limit` of them, totals added.
pub fn merge_logs(
    mut mine: lookout_proto::api::LogsResponse,
    others: Vec<lookout_proto::api::LogsResponse>,
    limit: usize,
) -> lookout_proto::api::LogsResponse {
    for o in others {
        mine.total += o.total;
        mine.logs.extend(o.logs);
        mine.took_ms = mine.took_ms.max(o.took_ms);
    }
    mine.logs
        .sort_by_key(|l| std::cmp::Reverse(l.timestamp_unix_nano));
    mine.logs.truncate(limit);
    mine
}

/// Trace summaries of every member: one per trace (the one with the most spans, when a
/// trace's partition moved while it was open), newest first, `limit` of them.
pub fn merge_traces(
    mut mine: lookout_proto::api::TracesResponse,
    others: Vec<lookout_proto::api::TracesResponse>,
    limit: usize,
) -> lookout_proto::api::TracesResponse {
    for o in others {
        mine.traces.extend(o.traces);
        mine.took_ms = mine.took_ms.max(o.took_ms);
    }
    mine.traces.sort_by(|a, b| {
        a.trace_id
            .cmp(&b.trace_id)
            .then(b.span_count.cmp(&a.span_count))
    });
    mine.traces.dedup_by(|a, b| a.trace_id == b.trace_id);
    mine.traces
        .sort_by_key(|t| std::cmp::Reverse(t.start_unix_nano));
    mine.traces.truncate(limit);
    mine
}

/// One trace from the parts members hold: the one part as it is, or every span
/// (its clock-skew adjustment undone) assembled again.
pub fn merge_trace(
    parts: Vec<lookout_proto::api::TraceResponse>,
) -> Option<lookout_proto::api::TraceResponse> {
    if parts.len() <= 1 {
        return parts.into_iter().next();
    }
    let trace_id = parts[0].trace_id.clone();
    let state = if parts.iter().any(|p| p.state == "open") {
        "open"
    } else {
        parts[0].state.as_str()
    }
    .to_string();
    let spans = parts
        .into_iter()
        .flat_map(|p| p.spans)
        .map(|mut s| {
            let undo = s.skew_adjustment_ns.checked_neg().unwrap_or(i64::MAX);
            s.start_unix_nano = s.start_unix_nano.saturating_add_signed(undo);
            s.start = lookout_ingest::values::rfc3339(s.start_unix_nano);
            s.skew_adjustment_ns = 0;
            s
        })
        .collect();
    Some(crate::traces::assemble::assemble(&trace_id, &state, spans))
}

/// Service graphs of every member: edges by caller and callee, calls and errors added,
/// the mean weighted by calls; the 95th percentile is the highest member's (members keep
/// no histogram per edge), an upper bound.
pub fn merge_dependencies(
    mut mine: lookout_proto::api::DependenciesResponse,
    others: Vec<lookout_proto::api::DependenciesResponse>,
) -> lookout_proto::api::DependenciesResponse {
    for o in others {
        for e in o.edges {
            match mine
                .edges
                .iter_mut()
                .find(|m| m.caller == e.caller && m.callee == e.callee)
            {
                Some(m) => {
                    let calls = m.calls + e.calls;
                    if calls > 0 {
                        m.avg_ms =
                            (m.avg_ms * m.calls as f64 + e.avg_ms * e.calls as f64) / calls as f64;
                    }
                    m.calls = calls;
                    m.errors += e.errors;
                    m.p95_ms = m.p95_ms.max(e.p95_ms);
                    m.inferred &= e.inferred;
                }
                None => mine.edges.push(e),
            }
        }
    }
    mine.edges.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| a.caller.cmp(&b.caller))
            .then_with(|| a.callee.cmp(&b.callee))
    });
    mine
}
