//! Cluster mode: any node's API answers for the whole cluster. A query is answered from
//! this node's stores and, at the same time, by every other member (asked with the
//! [`LOCAL`] header, so they answer from their own stores only); the answers are merged
//! here, and a member that did not answer is named in the response's warnings.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use crate::cluster::ClusterStatus;

/// Header of a request one member sends another: answer from your own stores.
pub const LOCAL: &str = "x-lookout-scope";

/// How long a member's answer is waited for.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The other members, and how to ask them.
#[derive(Clone)]
pub struct Peers {
    status: Arc<ClusterStatus>,
    client: reqwest::Client,
    token: Option<String>,
}

impl Peers {
    /// Peers as `status` sees them, asked with `token` (this node's first API token:
    /// members share `api.auth`).
    pub fn new(status: Arc<ClusterStatus>, token: Option<String>) -> Self {
        Self {
            status,
            client: reqwest::Client::builder()
                .timeout(PEER_TIMEOUT)
                .build()
                .unwrap_or_default(),
            token,
        }
    }

    /// What this node knows of the cluster.
    pub fn status(&self) -> &ClusterStatus {
        &self.status
    }

    /// Whether this request is to be fanned out: not when a member asked.
    pub fn fans_out(headers: &HeaderMap) -> bool {
        headers.get(LOCAL).is_none()
    }

    /// Ask every other member for `path_and_query`: the answers that came (404 is
    /// `None`), and one warning per member that did not answer.
    pub async fn ask<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> (Vec<Option<T>>, Vec<String>) {
        let me = &self.status.me.node;
        let members = self.status.members();
        let asks = members.values().filter(|m| &m.node != me).map(|m| {
            let url = format!("{}{path_and_query}", m.api.trim_end_matches('/'));
            let mut req = self.client.get(&url).header(LOCAL, "local");
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let node = m.node.clone();
            async move {
                let r = async {
                    let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
                    match resp.status().as_u16() {
                        200 => resp
                            .json::<T>()
                            .await
                            .map(Some)
                            .map_err(|e| e.without_url().to_string()),
                        404 => Ok(None),
                        code => {
                            let body = resp.text().await.unwrap_or_default();
                            Err(format!(
                                "answered {code}: {}",
                                body.chars().take(200).collect::<String>()
                            ))
                        }
                    }
                }
                .await;
                (node, r)
            }
        });
        let mut answers = Vec::new();
        let mut warnings = Vec::new();
        for (node, r) in futures::future::join_all(asks).await {
            match r {
                Ok(a) => answers.push(a),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "cluster member did not answer a query");
                    warnings.push(format!(
                        "node {node} did not answer: {e}; its data is missing from this answer"
                    ));
                }
            }
        }
        (answers, warnings)
    }
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
