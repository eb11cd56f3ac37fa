//! Delivery of notifications: one task per receiver posts them in order, retrying 5xx,
//! timeouts and connection errors with exponential backoff and jitter; a 4xx is final.
//! Destinations are guarded against request forgery ([`super::guard`]): redirects are
//! not followed and non-public addresses are refused unless allowed.

use std::sync::Arc;

use lookout_config::{redact_url, ReceiverConfig, ReceiverKind};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::guard::{check_url, GuardedResolver, NetPolicy, UrlRefused};
use super::metrics::AlertMetrics;

/// Upper bound on connecting, below the whole-attempt `timeout`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    metrics: AlertMetrics,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
) -> mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    tokio::spawn(async move {
        let Some(delivery) = Delivery::new(name, cfg, metrics, reports) else {
            return;
        };
        loop {
            let n = tokio::select! {
                n = rx.recv() => match n { Some(n) => n, None => return },
                () = stop.cancelled() => return,
            };
            let outcome = tokio::select! {
                outcome = delivery.deliver(&n) => outcome,
                () = stop.cancelled() => return,
            };
            delivery.finish(&n, outcome);
        }
    });
    tx
}

/// The delivery side of one receiver: settings, HTTP client, counting and reports.
struct Delivery {
    name: String,
    cfg: ReceiverConfig,
    metrics: AlertMetrics,
    reports: mpsc::UnboundedSender<Report>,
    client: reqwest::Client,
    url: String,
    /// Why the URL itself is refused; then every notification fails at once.
    refused: Option<UrlRefused>,
}

impl Delivery {
    /// `None` (logged) when the HTTP client cannot be built.
    fn new(
        name: String,
        cfg: ReceiverConfig,
        metrics: AlertMetrics,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Option<Self> {
        let policy = Arc::new(NetPolicy::new(&cfg.allowed_networks));
        let client = match reqwest::Client::builder()
            .timeout(cfg.timeout.get())
            .connect_timeout(cfg.timeout.get().min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .user_agent(concat!("lookout-collector/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(receiver = %name, error = %e, "cannot build the HTTP client; notifications to this receiver fail");
                return None;
            }
        };
        let url = match cfg.kind {
            ReceiverKind::Webhook => cfg.url.0.clone(),
            ReceiverKind::Alertmanager => {
                format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'))
            }
        };
        let refused = check_url(&url, &policy).err();
        if let Some(reason) = &refused {
            tracing::warn!(receiver = %name, url = %redact_url(&url), reason = %reason, "receiver URL refused; its notifications will fail");
        }
        Some(Self {
            name,
            cfg,
            metrics,
            reports,
            client,
            url,
            refused,
        })
    }

    /// Post `n` until it is delivered, refused or out of retries, reporting each retry.
    async fn deliver(&self, n: &Outgoing) -> Outcome {
        let mut attempts = 0u32;
        let mut backoff = self.cfg.initial_backoff.get();
        loop {
            attempts += 1;
            let attempt = match &self.refused {
                Some(reason) => Attempt::Final(format!("refused: {reason}")),
                None => post(&self.client, &self.url, &self.cfg, &n.body).await,
            };
            let error = match attempt {
                Attempt::Ok => return Outcome::Delivered { attempts },
                Attempt::Final(error) => return Outcome::Failed { attempts, error },
                Attempt::Retry(error) if attempts > self.cfg.max_retries => {
                    return Outcome::Failed { attempts, error }
                }
                Attempt::Retry(error) => error,
            };
            tracing::warn!(receiver = %self.name, attempts, error = %error, "notification failed; retrying");
            self.count("retried");
            self.report(n, Outcome::Retrying { attempts, error });
            // Full jitter in [backoff/2, backoff] so receivers recovering from an outage
            // are not hit by every collector at once.
            let wait = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.cfg.max_backoff.get());
        }
    }

    /// Log, count and report the final outcome of `n`.
    fn finish(&self, n: &Outgoing, outcome: Outcome) {
        let name = &self.name;
        match &outcome {
            Outcome::Failed { error, attempts } => {
                tracing::error!(receiver = %name, attempts, error = %error, status = %n.status, "notification given up");
            }
            _ => {
                tracing::info!(receiver = %name, status = %n.status, alerts = n.fingerprints.len(), "notification delivered")
            }
        }
        self.count(match &outcome {
            Outcome::Delivered { .. } => "delivered",
            _ => "failed",
        });
        self.report(n, outcome);
    }

    fn count(&self, result: &str) {
        self.metrics
            .notifications
            .with_label_values(&[self.name.as_str(), result])
            .inc();
    }

    fn report(&self, n: &Outgoing, outcome: Outcome) {
        let _ = self.reports.send(Report {
            id: n.id,
            receiver: self.name.clone(),
            outcome,
        });
    }
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
            } else if status.is_redirection() {
                let to = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>();
                Attempt::Final(format!(
                    "HTTP {status}: redirect to {to:?} refused (receivers must answer directly)"
                ))
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
        // Without the URL: it may carry credentials (`user:pass@`).
        Err(e) if e.is_builder() => Attempt::Final(format!("bad request: {}", e.without_url())),
        Err(e) => {
            let e = e.without_url();
            if let Some(r) = super::guard::refusal(&e) {
                return Attempt::Final(format!("refused: {r}"));
            }
            Attempt::Retry(if e.is_timeout() {
                format!("timed out after {}", cfg.timeout)
            } else {
                error_chain(&e)
            })
        }
    }
}

/// `e` with its causes, since reqwest's own message omits them ("error sending request").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback HTTP server answering every request with `response`; counts connections.
    async fn server(response: String) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                h.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(response.as_bytes()).await;
                });
            }
        });
        (addr, hits)
    }

    fn receiver(url: String, allowed: &[&str]) -> ReceiverConfig {
        let toml = format!(
            "url = {url:?}\nmax_retries = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"20ms\"\ntimeout = \"2s\"\nallowed_networks = {:?}\n",
            allowed
        );
        toml::from_str(&toml).unwrap()
    }

    async fn deliver(cfg: ReceiverConfig) -> Outcome {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let tx = spawn_receiver(
            "hook".into(),
            cfg,
            AlertMetrics::register(&prometheus::Registry::new()).unwrap(),
            reports_tx,
            stop.clone(),
        );
        tx.send(Outgoing {
            id: 1,
            receiver: "hook".into(),
            status: "firing".into(),
            fingerprints: vec!["f".into()],
            body: "{}".into(),
            queued_ms: 0,
        })
        .unwrap();
        let outcome = loop {
            let r = tokio::time::timeout(Duration::from_secs(20), reports.recv())
                .await
                .expect("a report")
                .expect("the task runs");
            if !matches!(r.outcome, Outcome::Retrying { .. }) {
                break r.outcome;
            }
        };
        stop.cancel();
        outcome
    }

    fn failed_with(outcome: &Outcome, needle: &str) {
        match outcome {
            Outcome::Failed { attempts, error } => {
                assert_eq!(*attempts, 1, "a refusal is final: {error}");
                assert!(error.contains(needle), "{error}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    #[tokio::test]
    async fn loopback_is_refused_without_connecting_unless_allowed() {
        let (addr, hits) = server(OK.into()).await;
        let outcome = deliver(receiver(format!("http://{addr}/hook"), &[])).await;
        failed_with(&outcome, "127.0.0.1 is in a loopback range");
        let outcome = deliver(receiver(
            format!("http://localhost:{}/hook", addr.port()),
            &[],
        ))
        .await;
        failed_with(&outcome, "localhost resolves to");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing may connect");

        let outcome = deliver(receiver(format!("http://{addr}/hook"), &["127.0.0.0/8"])).await;
        assert_eq!(outcome, Outcome::Delivered { attempts: 1 });
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn metadata_and_private_addresses_are_refused() {
        for (url, needle) in [
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254 is in a link-local range",
            ),
            (
                "http://10.0.0.1:9000/hook",
                "10.0.0.1 is in a private range",
            ),
            ("http://10.255.1.2/hook", "private range"),
            ("http://[fd00::1]/hook", "unique local"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
        ] {
            // Allowing loopback must not open the other ranges.
            let outcome = deliver(receiver(url.into(), &["127.0.0.0/8"])).await;
            failed_with(&outcome, needle);
        }
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_hits) = server(OK.into()).await;
        let (addr, hits) = server(format!(
            "HTTP/1.1 302 Found\r\nlocation: http://{target}/stolen\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        let outcome = deliver(receiver(format!("http://{addr}/hook"), &["127.0.0.0/8"])).await;
        failed_with(&outcome, "redirect to");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(target_hits.load(Ordering::SeqCst), 0, "redirect followed");
    }
}
