//! Delivery of notifications: one task per receiver posts them in order, retrying 5xx,
//! timeouts and connection errors with exponential backoff and jitter; a 4xx is final.

use std::sync::Arc;

use lookout_config::{ReceiverConfig, ReceiverKind};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// A notification waiting for delivery; persisted with the alert state until delivered
/// or given up, so a restart sends it then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outgoing {
    /// Unique id (per collector data directory).
    pub id: u64,
    /// Receiver name.
    pub receiver: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Fingerprints of the alerts it carries.
    pub fingerprints: Vec<String>,
    /// JSON body to post.
    pub body: String,
    /// When it was queued, unix ms.
    pub queued_ms: i64,
}

/// What became of a delivery attempt sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// One attempt failed; another follows.
    Retrying {
        /// Attempts so far.
        attempts: u32,
        /// Why it failed.
        error: String,
    },
    /// The receiver answered 2xx.
    Delivered {
        /// Attempts it took.
        attempts: u32,
    },
    /// Given up: a 4xx, or retries exhausted.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: String,
    },
}

/// Report from a receiver task to the engine.
#[derive(Debug)]
pub struct Report {
    /// [`Outgoing::id`].
    pub id: u64,
    /// Receiver name.
    pub receiver: String,
    /// What happened.
    pub outcome: Outcome,
}

enum Attempt {
    Ok,
    Retry(String),
    Final(String),
}

/// Start the delivery task of receiver `name`; notifications sent to the returned channel
/// are posted in order and every outcome is reported on `reports`.
pub fn spawn_receiver(
    name: String,
    cfg: ReceiverConfig,
    metrics: Arc<Metrics>,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
) -> mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(cfg.timeout.get())
            .user_agent(concat!("lookout-collector/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(receiver = %name, error = %e, "cannot build the HTTP client; notifications to this receiver fail");
                return;
            }
        };
        let url = match cfg.kind {
            ReceiverKind::Webhook => cfg.url.clone(),
            ReceiverKind::Alertmanager => {
                format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'))
            }
        };
        loop {
            let n = tokio::select! {
                n = rx.recv() => match n { Some(n) => n, None => return },
                () = stop.cancelled() => return,
            };
            let mut attempts = 0u32;
            let mut backoff = cfg.initial_backoff.get();
            let outcome = loop {
                attempts += 1;
                let attempt = tokio::select! {
                    a = post(&client, &url, &cfg, &n.body) => a,
                    () = stop.cancelled() => return,
                };
                match attempt {
                    Attempt::Ok => break Outcome::Delivered { attempts },
                    Attempt::Final(error) => break Outcome::Failed { attempts, error },
                    Attempt::Retry(error) if attempts > cfg.max_retries => {
                        break Outcome::Failed { attempts, error }
                    }
                    Attempt::Retry(error) => {
                        tracing::warn!(receiver = %name, attempts, error = %error, "notification failed; retrying");
                        metrics
                            .alert_notifications
                            .with_label_values(&[name.as_str(), "retried"])
                            .inc();
                        let _ = reports.send(Report {
                            id: n.id,
                            receiver: name.clone(),
                            outcome: Outcome::Retrying { attempts, error },
                        });
                        // Full jitter in [backoff/2, backoff] so receivers recovering from
                        // an outage are not hit by every collector at once.
                        let wait = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(cfg.max_backoff.get());
                    }
                }
            };
            let result = match &outcome {
                Outcome::Delivered { .. } => "delivered",
                _ => "failed",
            };
            match &outcome {
                Outcome::Failed { error, attempts } => {
                    tracing::error!(receiver = %name, attempts, error = %error, status = %n.status, "notification given up");
                }
                _ => {
                    tracing::info!(receiver = %name, status = %n.status, alerts = n.fingerprints.len(), "notification delivered")
                }
            }
            metrics
                .alert_notifications
                .with_label_values(&[name.as_str(), result])
                .inc();
            let _ = reports.send(Report {
                id: n.id,
                receiver: name.clone(),
                outcome,
            });
        }
    });
    tx
}

async fn post(client: &reqwest::Client, url: &str, cfg: &ReceiverConfig, body: &str) -> Attempt {
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned());
    for (k, v) in &cfg.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Attempt::Ok
            } else {
                let text = resp.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                let error = format!("HTTP {status}: {text}");
                // 408 and 429 are the client errors worth another try.
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Attempt::Retry(error)
                } else {
                    Attempt::Final(error)
                }
            }
        }
        Err(e) if e.is_builder() => Attempt::Final(format!("bad request: {e}")),
        Err(e) => Attempt::Retry(if e.is_timeout() {
            format!("timed out after {}", cfg.timeout)
        } else {
            format!("{e}")
        }),
    }
}
