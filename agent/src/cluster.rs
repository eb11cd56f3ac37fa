//! Cluster mode (`[cluster]`, `--nats`): the shipper publishes buffered records to the
//! cluster's NATS JetStream stream instead of exporting OTLP (`docs/CLUSTER.md`).
//!
//! The stream is connected in the background, retried with backoff, so the agent starts
//! and buffers while NATS is down; until then every publish is a retryable failure. Each
//! buffer record is split by partition on the wire and published as one message per
//! partition; the message ids are content hashes, so a record sent again after a crash
//! or a lost acknowledgement splits into the same messages with the same ids and
//! JetStream stores none of them twice (within its duplicate window).
//!
//! A partition's part larger than a message may be (NATS servers refuse more than
//! `max_payload`, 1 MiB by default, and close the connection) is cut in halves until
//! each fits: a tailed file's 4 MiB record of one service's lines all falls into one
//! partition.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lookout_cluster::fit::{messages_of_encoded, SplitError, MAX_MESSAGE_BYTES};
use lookout_cluster::jetstream::{ConnectError, JetStream, JetStreamOptions};
use lookout_cluster::Transport;
use lookout_config::NatsConfig;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sink::Signal;

/// Self-metrics of cluster mode, beside the exporter's (requests, retries, sent items).
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 while the stream is connected and the last publish was acknowledged.
    pub connected: IntGauge,
    /// Messages (one per partition of a record) acknowledged by the stream, by signal.
    pub published_messages: IntCounterVec,
}

impl ClusterMetrics {
    /// Create and register on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let connected = IntGauge::new(
            "lookout_agent_cluster_connected",
            "1 when the cluster's stream is connected and the last publish was acknowledged, else 0.",
        )?;
        registry.register(Box::new(connected.clone()))?;
        let published_messages = IntCounterVec::new(
            Opts::new(
                "lookout_agent_cluster_published_messages_total",
                "Messages (one per partition of a buffered record) acknowledged by the cluster's stream, by signal.",
            ),
            &["signal"],
        )?;
        registry.register(Box::new(published_messages.clone()))?;
        Ok(Self {
            connected,
            published_messages,
        })
    }
}

/// What [`StreamLink::spawn`] needs.
pub struct ClusterSetup {
    /// `[cluster]`.
    pub nats: NatsConfig,
    /// Self-metrics.
    pub metrics: ClusterMetrics,
}

/// How one publish of a buffered record went.
#[derive(Debug)]
pub enum Published {
    /// Every partition's message was acknowledged.
    Ok {
        /// Messages published (partitions the record touched).
        messages: usize,
    },
    /// Not connected yet; the record stays in the buffer.
    NotConnected(String),
    /// Some message was not acknowledged in time (or refused); resend the record.
    NotAcknowledged(String),
    /// A message is larger than the servers take (`max_payload`): it never will be.
    TooLarge(String),
    /// The record is not a valid export request: it never will be.
    Undecodable(String),
}

enum State {
    /// Not connected; the last connection error.
    Connecting(String),
    Ready(Arc<JetStream>),
}

/// The shipper's handle on the stream, connected in the background.
pub struct StreamLink {
    state: watch::Receiver<State>,
    partitions: u32,
    timeout: Duration,
    metrics: ClusterMetrics,
}

impl StreamLink {
    /// Start connecting to the stream of `setup.nats` in the background, retrying with
    /// exponential backoff between `initial` and `max` until `shutdown`.
    pub fn spawn(
        setup: ClusterSetup,
        initial: Duration,
        max: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let mut opts = JetStreamOptions::from(&setup.nats);
        opts.name = format!("lookout-agent {}", crate::server::host_name());
        let (tx, rx) = watch::channel(State::Connecting("not connected yet".into()));
        setup.metrics.connected.set(0);
        tokio::spawn(connect(
            opts,
            initial,
            max,
            tx,
            setup.metrics.clone(),
            shutdown,
        ));
        Self {
            state: rx,
            partitions: setup.nats.partitions,
            timeout: setup.nats.timeout.get(),
            metrics: setup.metrics,
        }
    }

    /// Whether the stream is connected.
    pub fn is_connected(&self) -> bool {
        matches!(*self.state.borrow(), State::Ready(_))
    }

    /// Resolves once the stream is connected (never, if the connecting task ended first).
    pub async fn connected(&self) {
        let mut rx = self.state.clone();
        if rx.wait_for(|s| matches!(s, State::Ready(_))).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Publish one buffered record (`body`, a protobuf export request of `signal`): one
    /// message per partition it touches, each acknowledged by the stream.
    pub async fn publish(&self, signal: Signal, body: Bytes) -> Published {
        let js = match &*self.state.borrow() {
            State::Ready(js) => js.clone(),
            State::Connecting(why) => {
                return Published::NotConnected(format!("stream not reachable: {why}"))
            }
        };
        // Split on the wire (spans and log records are copied, not decoded): off the
        // reactor, as a record may be megabytes.
        let partitions = self.partitions;
        let parts = tokio::task::spawn_blocking(move || {
            messages_of_encoded(signal, &body, partitions, MAX_MESSAGE_BYTES).map_err(|e| match e {
                SplitError::Malformed(e) => Published::Undecodable(e),
                SplitError::TooLarge(e) => Published::TooLarge(e),
            })
        })
        .await;
        let parts = match parts {
            Ok(Ok(parts)) => parts,
            Ok(Err(refused)) => return refused,
            Err(e) => return Published::NotAcknowledged(format!("split task failed: {e}")),
        };
        let messages = parts.len();
        let sends = parts
            .into_iter()
            .map(|p| js.publish(signal, p.partition, p.id, p.payload));
        // The client waits `timeout` for each acknowledgement; this bounds the rest (a
        // send queued while the client reconnects).
        let limit = self.timeout + Duration::from_secs(1);
        let results = match tokio::time::timeout(limit, futures::future::join_all(sends)).await {
            Ok(r) => r,
            Err(_) => {
                self.metrics.connected.set(0);
                return Published::NotAcknowledged(format!("no acknowledgement within {limit:?}"));
            }
        };
        let acked = results.iter().filter(|r| r.is_ok()).count();
        self.metrics
            .published_messages
            .with_label_values(&[signal.as_str()])
            .inc_by(acked as u64);
        let failed = results.into_iter().find_map(Result::err);
        match failed {
            None => {
                self.metrics.connected.set(1);
                Published::Ok { messages }
            }
            Some(e) => {
                self.metrics.connected.set(0);
                Published::NotAcknowledged(e.to_string())
            }
        }
    }
}

/// Exponential backoff with jitter: `initial` doubled per attempt, at most `max`.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    use rand::Rng;
    let base = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    base.mul_f64(jitter).min(max)
}

/// Connect until it works or `shutdown`; publish the stream on `tx`.
async fn connect(
    opts: JetStreamOptions,
    initial: Duration,
    max: Duration,
    tx: watch::Sender<State>,
    metrics: ClusterMetrics,
    shutdown: CancellationToken,
) {
    let urls = opts.redacted_urls();
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            r = JetStream::connect(opts.clone()) => r,
            _ = shutdown.cancelled() => return,
        };
        match result {
            Ok(js) => {
                tracing::info!(
                    stream = %opts.stream,
                    partitions = opts.partitions,
                    nats = %urls,
                    "connected to the cluster's stream; publishing buffered data to it"
                );
                metrics.connected.set(1);
                tx.send_replace(State::Ready(Arc::new(js)));
                return;
            }
            Err(e) => {
                let delay = backoff(initial, max, attempt);
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                // A wrong partition count or an unreadable credentials file needs the
                // operator; an unreachable server may come back by itself.
                if matches!(
                    e,
                    ConnectError::Partitions { .. } | ConnectError::File { .. }
                ) {
                    tracing::error!(error = %e, attempt, delay_ms, "cannot use the cluster's stream; the data stays in the buffer (check [cluster])");
                } else {
                    tracing::warn!(error = %e, attempt, delay_ms, "cannot reach the cluster's stream; the data stays in the buffer and the connection is retried");
                }
                tx.send_replace(State::Connecting(e.to_string()));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_commented_cluster_section_of_the_example_is_the_defaults() {
        let example = include_str!("../../config/examples/agent.toml");
        let start = example.find("# [cluster]\n").unwrap();
        let section: String = example[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let c: lookout_config::AgentConfig =
            lookout_config::parse(&section, std::path::Path::new("agent.toml")).unwrap();
        assert_eq!(c.cluster, Some(NatsConfig::default()), "{section}");
    }

    #[test]
    fn backoff_grows_and_stays_under_the_maximum() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..40 {
            let d = backoff(initial, max, attempt);
            assert!(d <= max, "{attempt}: {d:?}");
            let base = initial.saturating_mul(1 << attempt.min(20)).min(max);
            assert!(d >= base / 2, "{attempt}: {d:?}");
        }
    }

    #[tokio::test]
    async fn until_connected_a_publish_is_retryable_and_says_why() {
        let registry = Registry::new();
        let metrics = ClusterMetrics::new(&registry).unwrap();
        // Nothing listens on port 1.
        let nats = NatsConfig {
            urls: vec![lookout_config::CredentialUrl("nats://127.0.0.1:1".into())],
            timeout: lookout_config::HumanDuration::from_millis(200),
            ..NatsConfig::default()
        };
        let shutdown = CancellationToken::new();
        let link = StreamLink::spawn(
            ClusterSetup {
                nats,
                metrics: metrics.clone(),
            },
            Duration::from_millis(10),
            Duration::from_millis(50),
            shutdown.clone(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let why = loop {
            match link.publish(Signal::Logs, Bytes::new()).await {
                Published::NotConnected(why) if why.contains("cannot connect") => break why,
                Published::NotConnected(_) => {}
                p => panic!("expected NotConnected, got {p:?}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "no connect attempt");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(why.starts_with("stream not reachable: "), "{why}");
        assert!(why.contains("127.0.0.1:1"), "{why}");
        assert!(!link.is_connected());
        assert_eq!(metrics.connected.get(), 0);
        shutdown.cancel();
    }
}
