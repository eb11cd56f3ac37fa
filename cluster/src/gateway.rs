//! A collector's receivers in cluster mode: each request is split by partition and
//! published, and the client is answered only once every part is acknowledged by the
//! stream; until then, and when the stream refuses, it gets 503 / `UNAVAILABLE` with a
//! retry hint and nothing is stored.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lookout_ingest::{IngestError, IngestSink, SinkRequest};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::fit::{messages_of_encoded, SplitError, MAX_MESSAGE_BYTES};
use crate::jetstream::{JetStream, JetStreamOptions};
use crate::publish_parts;

/// Requests up to this size are split on the reactor; larger ones on the blocking pool.
const INLINE_SPLIT_BYTES: usize = 64 * 1024;

/// The connection to the stream, made in the background: empty until the servers answer.
#[derive(Clone, Default)]
pub struct Link(Arc<OnceLock<Arc<JetStream>>>);

impl Link {
    /// The stream, once connected.
    pub fn get(&self) -> Option<&Arc<JetStream>> {
        self.0.get()
    }

    /// Connect to the stream, retrying with backoff until it answers or `stop` is
    /// cancelled. A refusal that no retry cures (another partition count) ends it with
    /// an error.
    pub async fn connect(
        &self,
        opts: JetStreamOptions,
        connected: IntGauge,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::jetstream::ConnectError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match JetStream::connect(opts.clone()).await {
                Ok(js) => {
                    let _ = self.0.set(Arc::new(js));
                    connected.set(1);
                    return Ok(());
                }
                Err(e @ crate::jetstream::ConnectError::Partitions { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cluster stream not reachable; retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

/// Self-metrics of publishing.
#[derive(Clone)]
pub struct PublishMetrics {
    /// Messages acknowledged by the stream, by signal.
    pub messages: IntCounterVec,
    /// Batches not accepted (not connected, refused, timed out), by signal.
    pub failures: IntCounterVec,
    /// Time from the start of a publish to the last part's acknowledgement.
    pub seconds: Histogram,
    /// 1 once connected to the stream.
    pub connected: IntGauge,
}

impl PublishMetrics {
    /// Create and register on `registry` with names starting with `prefix` (`lookout`,
    /// `lookout_agent`).
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let messages = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_cluster_published_messages_total"),
                "Messages published to the cluster's stream and acknowledged, by signal.",
            ),
            &["signal"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_cluster_publish_failures_total"),
                "Batches the cluster's stream did not accept (not connected, refused, timed out), by signal.",
            ),
            &["signal"],
        )?;
        let seconds = Histogram::with_opts(
            HistogramOpts::new(
                format!("{prefix}_cluster_publish_seconds"),
                "Time to publish a batch: from its split to the last part's acknowledgement.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )?;
        let connected = IntGauge::new(
            format!("{prefix}_cluster_connected"),
            "1 once connected to the cluster's stream.",
        )?;
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        Ok(Self {
            messages,
            failures,
            seconds,
            connected,
        })
    }
}

/// The receivers' sink in cluster mode: publish, answer once acknowledged.
pub struct PublishSink {
    link: Link,
    partitions: u32,
    retry_after: Duration,
    metrics: PublishMetrics,
}

impl PublishSink {
    /// A sink publishing over `link` into `partitions` partitions.
    pub fn new(
        link: Link,
        partitions: u32,
        retry_after: Duration,
        metrics: PublishMetrics,
    ) -> Self {
        Self {
            link,
            partitions,
            retry_after,
            metrics,
        }
    }
}

impl IngestSink for PublishSink {
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError> {
        let retry_after = self.retry_after;
        let signal = req.signal.as_str();
        let Some(js) = self.link.get().cloned() else {
            self.metrics.failures.with_label_values(&[signal]).inc();
            return Err(IngestError::Unavailable {
                message: "not connected to the cluster's NATS servers yet".into(),
                retry_after,
            });
        };
        let (partitions, metrics) = (self.partitions, self.metrics.clone());
        let SinkRequest {
            signal: sig,
            payload,
            batch,
            charge,
            ..
        } = req;
        // The encoded request is split on the wire; the decoded one is not needed.
        drop(batch);
        Ok(Box::pin(async move {
            let started = Instant::now();
            // The charge is held until the parts are acknowledged: what waits for the
            // stream counts against the ingest budget.
            let _charge = charge;
            let small = payload.len() <= INLINE_SPLIT_BYTES;
            let split = move || messages_of_encoded(sig, &payload, partitions, MAX_MESSAGE_BYTES);
            let parts = if small {
                split()
            } else {
                match tokio::task::spawn_blocking(split).await {
                    Ok(r) => r,
                    Err(e) => Err(SplitError::Malformed(format!("split task failed: {e}"))),
                }
            };
            let published = match parts {
                Ok(parts) => publish_parts(&*js, sig, parts).await,
                Err(SplitError::TooLarge(e)) => Err(crate::PublishError::TooLarge(e)),
                // The receivers decoded it already: not seen unless they let one through.
                Err(SplitError::Malformed(e)) => {
                    metrics.failures.with_label_values(&[signal]).inc();
                    return Err(IngestError::Invalid(e));
                }
            };
            match published {
                Ok(n) => {
                    metrics.seconds.observe(started.elapsed().as_secs_f64());
                    metrics
                        .messages
                        .with_label_values(&[signal])
                        .inc_by(n as u64);
                    Ok(())
                }
                Err(crate::PublishError::TooLarge(e)) => {
                    metrics.failures.with_label_values(&[signal]).inc();
                    Err(IngestError::TooLarge(e))
                }
                Err(e) => {
                    metrics.failures.with_label_values(&[signal]).inc();
                    Err(IngestError::Unavailable {
                        message: format!("the cluster's stream did not accept the batch: {e}"),
                        retry_after,
                    })
                }
            }
        }))
    }
}
