//! Consuming one owned partition: a durable pull consumer shared by every node (so its
//! acknowledged position moves with the partition's lease) feeds the WAL; a message is
//! acknowledged only once its record is durable, and a message the WAL already holds (a
//! redelivery after an acknowledgement lost in a crash) is acknowledged without being
//! written again. Acknowledgements wait for the server's confirmation and are tried
//! again, so a message is delivered again only when this node stopped between its write
//! and its acknowledgement.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use lookout_ingest::{Batch, Budget, Signal};
use tokio_util::sync::CancellationToken;

use super::metrics::ClusterMetrics;
use crate::wal::{Origin, Wal};

/// Most messages applied (written, then acknowledged) together.
const MAX_BATCH: usize = 256;
/// How long an unacknowledged message waits before it is delivered again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What a partition's consumer needs.
pub(super) struct Partition {
    pub status: Arc<super::status::ClusterStatus>,
    pub partition: u32,
    pub js: jetstream::Context,
    pub stream: String,
    pub prefix: String,
    pub wal: Wal,
    pub budget: Arc<Budget>,
    pub metrics: ClusterMetrics,
}

/// The durable consumer's name of `partition`.
fn consumer_name(stream: &str, partition: u32) -> String {
    format!("{stream}-p{partition}")
}

/// The signal of a subject `PREFIX.<signal>.<partition>`.
fn signal_of(subject: &str) -> Option<Signal> {
    let mut parts = subject.rsplit('.');
    let _partition = parts.next()?;
    Signal::ALL
        .into_iter()
        .find(|s| Some(s.as_str()) == parts.clone().next())
}

impl Partition {
    /// Consume until `stop` is cancelled; returns once every message taken is written and
    /// acknowledged (or left for redelivery).
    pub async fn run(self, stop: CancellationToken) {
        let p = self.partition;
        let Some(consumer) = self.consumer(&stop).await else {
            return;
        };
        tracing::info!(partition = p, "consuming partition");
        let mut backoff = Duration::from_millis(250);
        while !stop.is_cancelled() {
            let messages = tokio::select! {
                () = stop.cancelled() => break,
                m = consumer.stream().max_messages_per_batch(MAX_BATCH).heartbeat(Duration::from_secs(5)).expires(Duration::from_secs(30)).messages() => m,
            };
            let mut chunks = match messages {
                Ok(m) => m.ready_chunks(MAX_BATCH),
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot read the partition; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            loop {
                let chunk = tokio::select! {
                    () = stop.cancelled() => break,
                    c = chunks.next() => c,
                };
                let Some(chunk) = chunk else { break };
                let (ok, errors): (Vec<_>, Vec<_>) = chunk.into_iter().partition(Result::is_ok);
                self.apply(ok.into_iter().filter_map(Result::ok).collect(), &stop)
                    .await;
                if let Some(Err(e)) = errors.into_iter().next() {
                    tracing::debug!(partition = p, error = %e, "partition stream ended; reopening");
                    break;
                }
            }
        }
        tracing::info!(partition = p, "stopped consuming partition");
    }

    /// The partition's durable consumer, created by the first node that reads it. The
    /// JetStream API may time out while a meta leader is elected: retried until `stop`.
    async fn consumer(
        &self,
        stop: &CancellationToken,
    ) -> Option<jetstream::consumer::Consumer<pull::Config>> {
        let name = consumer_name(&self.stream, self.partition);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{}.*.{}", self.prefix, self.partition),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        let mut delay = Duration::from_millis(250);
        loop {
            let r = async {
                let stream = self.js.get_stream(&self.stream).await?;
                stream
                    .get_or_create_consumer(&name, config.clone())
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
            }
            .await;
            match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "cannot open the partition's consumer; retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Write `messages` to the WAL (skipping what it holds already), wait until durable,
    /// then acknowledge them. A write refused (a full disk) is tried again until it
    /// succeeds or `stop`; its message is then left for redelivery.
    async fn apply(&self, messages: Vec<Message>, stop: &CancellationToken) {
        let p = self.partition;
        let m = &self.metrics;
        let mut done: Vec<Message> = Vec::with_capacity(messages.len());
        let mut waiting = Vec::new();
        for msg in messages {
            let Ok(info) = msg.info() else {
                m.poison.inc();
                done.push(msg);
                continue;
            };
            let sequence = info.stream_sequence;
            if info.delivered > 1 {
                m.redelivered.inc();
                self.status.redelivered.fetch_add(1, Ordering::Relaxed);
            }
            m.lag
                .with_label_values(&[&p.to_string()])
                .set(i64::try_from(info.pending).unwrap_or(i64::MAX));
            self.status.set_lag(p, info.pending);
            let origin = Origin {
                partition: p,
                sequence,
            };
            if self.wal.origins().holds(origin) {
                m.skipped.inc();
                done.push(msg);
                continue;
            }
            let Some((signal, batch)) = signal_of(&msg.subject)
                .and_then(|s| Batch::decode_protobuf(s, &msg.payload).ok().map(|b| (s, b)))
            else {
                tracing::error!(partition = p, sequence, subject = %msg.subject, "message is not an OTLP export request; acknowledged and dropped");
                m.poison.inc();
                done.push(msg);
                continue;
            };
            waiting.push((msg, signal, batch, origin));
        }
        // Written in order; a refusal is tried again before anything after it is
        // acknowledged.
        let mut pending = Vec::with_capacity(waiting.len());
        for (msg, signal, batch, origin) in waiting {
            let items = batch.item_count();
            let charge = self.charge(batch.heap_size(), stop).await;
            let payload = msg.payload.clone();
            let fut =
                self.wal
                    .submit_from(signal, payload.clone(), Some(batch), charge, Some(origin));
            pending.push((msg, signal, payload, origin, items, fut));
        }
        for (msg, signal, payload, origin, items, fut) in pending {
            let mut result = match fut {
                Ok(f) => f.await.map(|_| ()),
                Err(e) => Err(e),
            };
            let mut delay = Duration::from_millis(100);
            while let Err(e) = &result {
                if stop.is_cancelled() {
                    tracing::warn!(partition = p, sequence = origin.sequence, error = %e, "stopping with a message not written; it is delivered again");
                    self.ack(done).await;
                    return;
                }
                tracing::warn!(partition = p, sequence = origin.sequence, error = %e, "cannot write a consumed message to the WAL; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                let batch = match Batch::decode_protobuf(signal, &payload) {
                    Ok(b) => b,
                    Err(_) => break,
                };
                result = match self.wal.submit_from(
                    signal,
                    payload.clone(),
                    Some(batch),
                    None,
                    Some(origin),
                ) {
                    Ok(f) => f.await.map(|_| ()),
                    Err(e) => Err(e),
                };
            }
            m.consumed
                .with_label_values(&[signal.as_str()])
                .inc_by(items);
            self.status.consumed.fetch_add(1, Ordering::Relaxed);
            done.push(msg);
        }
        self.ack(done).await;
    }

    /// Acknowledge `done`, each confirmed by the server, tried three times; one not
    /// confirmed is delivered again after [`ACK_WAIT`] (and skipped, when to this node).
    async fn ack(&self, done: Vec<Message>) {
        let acks = done.iter().map(|m| async move {
            let mut r = m.double_ack().await;
            for _ in 0..2 {
                if r.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                r = m.double_ack().await;
            }
            r
        });
        for r in futures::future::join_all(acks).await {
            if let Err(e) = r {
                tracing::debug!(partition = self.partition, error = %e, "acknowledgement not confirmed; the message is delivered again");
            }
        }
    }

    /// `n` bytes of the ingest budget: consuming waits while the stores are behind.
    async fn charge(&self, n: u64, stop: &CancellationToken) -> Option<lookout_ingest::Charge> {
        loop {
            if let Some(c) = self
                .budget
                .charge_within(n.min(self.budget.max()), Duration::from_secs(1))
                .await
            {
                return Some(c);
            }
            if stop.is_cancelled() {
                return None;
            }
            self.metrics.budget_waits.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_signal() {
        assert_eq!(signal_of("lookout.traces.3"), Some(Signal::Traces));
        assert_eq!(signal_of("x.y.logs.12"), Some(Signal::Logs));
        assert_eq!(signal_of("lookout.metrics.0"), Some(Signal::Metrics));
        assert_eq!(signal_of("lookout.spans.0"), None);
        assert_eq!(signal_of("lookout"), None);
        assert_eq!(consumer_name("LOOKOUT", 7), "LOOKOUT-p7");
    }
}
