//! Asking the other members of the cluster (for the query API's fan-out and the alert
//! leader's RED figures): every member at once, each answering from its own stores.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::de::DeserializeOwned;

use super::status::ClusterStatus;

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

    /// Ask member `node` (by the API it announced) for `path_and_query`: its answer,
    /// `None` for a 404.
    pub async fn ask_member<T: DeserializeOwned>(
        &self,
        node: &str,
        path_and_query: &str,
    ) -> Result<Option<T>, String> {
        let members = self.status.members();
        let m = members
            .get(node)
            .ok_or_else(|| format!("node {node} is not a member now"))?;
        self.request(&m.api, path_and_query).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        api: &str,
        path_and_query: &str,
    ) -> Result<Option<T>, String> {
        let url = format!("{}{path_and_query}", api.trim_end_matches('/'));
        let mut req = self.client.get(&url).header(LOCAL, "local");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
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

    /// Ask every other member for `path_and_query`: the answers that came (404 is
    /// `None`), and one warning per member that did not answer.
    pub async fn ask<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> (Vec<Option<T>>, Vec<String>) {
        let me = &self.status.me.node;
        let members = self.status.members();
        let asks = members.values().filter(|m| &m.node != me).map(|m| {
            let node = m.node.clone();
            async move { (node, self.request::<T>(&m.api, path_and_query).await) }
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
