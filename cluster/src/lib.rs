//! Lookout's scale-out (`docs/CLUSTER.md`): OTLP batches are split by trace id into a fixed
//! number of partitions ([`partition`]) and published to a replicated, durable log
//! ([`Transport`]; NATS JetStream in [`jetstream`]), so that every span of a trace lands
//! on the one collector that owns its partition.

pub mod fit;
pub mod gateway;
pub mod jetstream;
pub mod partition;
pub mod wire;

use std::future::Future;

use bytes::Bytes;
use lookout_ingest::{Batch, Signal};
use prost::Message;

/// Why a batch was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An item of the batch is larger than a message may be: sending it again cannot
    /// help.
    #[error("{0}")]
    TooLarge(String),
    /// The log did not acknowledge the message (unreachable, no quorum, timed out); the
    /// sender keeps the batch and tries again later.
    #[error("partition {partition}: not acknowledged: {reason}")]
    NotAcknowledged {
        /// The partition of the message.
        partition: u32,
        /// What the client said.
        reason: String,
    },
}

/// A replicated log that takes messages by signal and partition. `publish` returns once
/// the message is durable by the log's own rules (for JetStream: stored by a quorum of
/// the stream's replicas).
pub trait Transport: Send + Sync {
    /// Publish one message; `id` lets the log drop a repeat of it (a retried send).
    fn publish(
        &self,
        signal: Signal,
        partition: u32,
        id: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// One message of a split batch: its partition, its id, its protobuf payload.
#[derive(Debug, Clone)]
pub struct Part {
    /// Partition.
    pub partition: u32,
    /// Content hash of partition and payload, so a resent batch is recognised.
    pub id: String,
    /// The `Export*ServiceRequest` of this partition, protobuf-encoded.
    pub payload: Bytes,
}

/// Split `batch` into one message per partition among `partitions`.
pub fn split(batch: Batch, partitions: u32) -> Vec<Part> {
    fn parts<M: Message>(m: std::collections::BTreeMap<u32, M>) -> Vec<Part> {
        m.into_iter()
            .map(|(partition, req)| {
                let payload = Bytes::from(req.encode_to_vec());
                Part {
                    partition,
                    id: message_id(partition, &payload),
                    payload,
                }
            })
            .collect()
    }
    match batch {
        Batch::Traces(r) => parts(partition::split_traces(r, partitions)),
        Batch::Logs(r) => parts(partition::split_logs(r, partitions)),
        Batch::Metrics(r) => parts(partition::split_metrics(r, partitions)),
    }
}

/// The id of a message: SHA-256 of its partition and payload, 128 bits in hex.
pub fn message_id(partition: u32, payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(partition.to_be_bytes());
    h.update(payload);
    hex::encode(&h.finalize()[..16])
}

/// Publish every part of `batch` at once (parts larger than a message cut, [`fit`]) and
/// wait for all acknowledgements: `Ok` only
/// when every partition's message is durable. On an error some parts may be stored; a
/// resend of the same batch is recognised by the message ids and not stored twice.
pub async fn publish_batch<T: Transport>(
    transport: &T,
    batch: Batch,
    partitions: u32,
) -> Result<usize, PublishError> {
    let signal = batch.signal();
    let parts =
        fit::messages(batch, partitions, fit::MAX_MESSAGE_BYTES).map_err(PublishError::TooLarge)?;
    publish_parts(transport, signal, parts).await
}

/// Publish `parts` of a batch of `signal` at once and wait for all acknowledgements, as
/// [`publish_batch`] does.
pub async fn publish_parts<T: Transport>(
    transport: &T,
    signal: Signal,
    parts: Vec<Part>,
) -> Result<usize, PublishError> {
    let n = parts.len();
    let sends = parts
        .into_iter()
        .map(|p| transport.publish(signal, p.partition, p.id, p.payload));
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(n)
}
