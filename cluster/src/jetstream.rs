//! The [`Transport`] on NATS JetStream: one stream holding every signal, subjects
//! `<prefix>.<signal>.<partition>` (one pull consumer takes every signal of a partition
//! with the filter `<prefix>.*.<partition>`: a 2.9 server takes a single filter subject
//! per consumer, wildcards allowed), replicated `replicas` times, file storage. The partition count is fixed when
//! the stream is created and written in its description; a node configured with another
//! count refuses to start. Publishes carry `Nats-Msg-Id`, so a resent message within the
//! stream's duplicate window (2 minutes) is not stored twice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use lookout_ingest::Signal;

use crate::{PublishError, Transport};

/// How to reach the stream and what it looks like.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// NATS server URLs (`nats://host:4222`); any one that answers is enough.
    pub urls: Vec<String>,
    /// Stream name.
    pub stream: String,
    /// Subject prefix.
    pub prefix: String,
    /// Partitions, fixed at creation.
    pub partitions: u32,
    /// Replicas of the stream (1, 3 or 5).
    pub replicas: usize,
    /// Longest wait for a publish acknowledgement, and for the stream at start.
    pub timeout: Duration,
    /// NATS credentials file (user JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// File holding an authentication token.
    pub token_file: Option<PathBuf>,
    /// TLS towards the servers.
    pub tls: lookout_config::ClientTlsConfig,
    /// The client's name, shown by the servers (`nats server report connections`).
    pub name: String,
}

impl JetStreamOptions {
    /// The server URLs, comma-separated, credentials masked: for logs and messages.
    pub fn redacted_urls(&self) -> String {
        self.urls
            .iter()
            .map(|u| lookout_config::redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl From<&lookout_config::NatsConfig> for JetStreamOptions {
    fn from(c: &lookout_config::NatsConfig) -> Self {
        Self {
            urls: c.urls.iter().map(|u| u.0.clone()).collect(),
            stream: c.stream.clone(),
            prefix: c.subject_prefix.clone(),
            partitions: c.partitions,
            replicas: c.replicas as usize,
            timeout: c.timeout.get(),
            creds_file: c.creds_file.clone(),
            token_file: c.token_file.clone(),
            tls: c.tls.clone(),
            name: "lookout".into(),
        }
    }
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".into()],
            stream: "LOOKOUT".into(),
            prefix: "lookout".into(),
            partitions: 16,
            replicas: 3,
            timeout: Duration::from_secs(10),
            creds_file: None,
            token_file: None,
            tls: Default::default(),
            name: "lookout".into(),
        }
    }
}

/// Why the stream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A credentials, token or TLS file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No server answered.
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// What the client said.
        reason: String,
    },
    /// The stream could not be created or read within the timeout.
    #[error("stream {stream}: {reason}")]
    Stream {
        /// Stream name.
        stream: String,
        /// The last error.
        reason: String,
    },
    /// The stream was created with another partition count.
    #[error("stream {stream} has {found} partitions, this node is configured with {configured}; the count is fixed when the stream is created")]
    Partitions {
        /// Stream name.
        stream: String,
        /// From the stream's description.
        found: u32,
        /// From the options.
        configured: u32,
    },
}

/// A connected JetStream stream.
pub struct JetStream {
    js: jetstream::Context,
    opts: JetStreamOptions,
}

/// Connection options from `opts`: name, timeout, credentials, TLS.
async fn client_options(
    opts: &JetStreamOptions,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let file_err = |path: &PathBuf| {
        let path = path.clone();
        move |e: std::io::Error| ConnectError::File {
            path,
            reason: e.to_string(),
        }
    };
    let mut o = async_nats::ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(opts.timeout);
    if let Some(path) = &opts.creds_file {
        o = o.credentials_file(path).await.map_err(file_err(path))?;
    }
    if let Some(path) = &opts.token_file {
        let token = std::fs::read_to_string(path).map_err(file_err(path))?;
        o = o.token(token.trim().to_string());
    }
    let tls = &opts.tls;
    if let Some(ca) = &tls.ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        o = o
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(o)
}

fn description(partitions: u32) -> String {
    format!("lookout partitions={partitions}")
}

fn partitions_of(description: Option<&str>) -> Option<u32> {
    description?
        .strip_prefix("lookout partitions=")?
        .parse()
        .ok()
}

impl JetStream {
    /// Connect and create the stream, or check the one there. JetStream elects its meta
    /// leader a few seconds after a cluster starts: stream requests are retried until
    /// `timeout`.
    pub async fn connect(opts: JetStreamOptions) -> Result<Self, ConnectError> {
        let urls = opts.redacted_urls();
        let client = client_options(&opts)
            .await?
            .connect(opts.urls.clone())
            .await
            .map_err(|e| ConnectError::Connect {
                urls: urls.clone(),
                reason: e.to_string(),
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(opts.timeout);
        let config = stream::Config {
            name: opts.stream.clone(),
            description: Some(description(opts.partitions)),
            subjects: vec![format!("{}.>", opts.prefix)],
            num_replicas: opts.replicas,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let started = Instant::now();
        let mut stream = loop {
            match js.get_or_create_stream(config.clone()).await {
                Ok(s) => break s,
                Err(e) if started.elapsed() < opts.timeout => {
                    tracing::debug!(error = %e, "stream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(ConnectError::Stream {
                        stream: opts.stream.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        };
        let info = stream.info().await.map_err(|e| ConnectError::Stream {
            stream: opts.stream.clone(),
            reason: e.to_string(),
        })?;
        let found = partitions_of(info.config.description.as_deref());
        if found != Some(opts.partitions) {
            return Err(ConnectError::Partitions {
                stream: opts.stream.clone(),
                found: found.unwrap_or(0),
                configured: opts.partitions,
            });
        }
        tracing::info!(stream = %opts.stream, partitions = opts.partitions, replicas = opts.replicas, "JetStream stream ready");
        Ok(Self { js, opts })
    }

    /// The subject of `signal` in `partition`.
    pub fn subject(&self, signal: Signal, partition: u32) -> String {
        format!("{}.{}.{partition}", self.opts.prefix, signal.as_str())
    }

    /// The filter subject of every signal of `partition`.
    pub fn partition_filter(&self, partition: u32) -> String {
        format!("{}.*.{partition}", self.opts.prefix)
    }

    /// The options it was connected with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.opts
    }

    /// The JetStream context, for consumers.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }
}

impl Transport for JetStream {
    async fn publish(
        &self,
        signal: Signal,
        partition: u32,
        id: String,
        payload: Bytes,
    ) -> Result<(), PublishError> {
        let fail = |reason: String| PublishError::NotAcknowledged { partition, reason };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = self
            .js
            .publish_with_headers(self.subject(signal, partition), headers, payload)
            .await
            .map_err(|e| fail(e.to_string()))?;
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == PublishErrorKind::TimedOut => Err(fail(format!(
                "no acknowledgement within {:?}",
                self.opts.timeout
            ))),
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_count_reads_back_from_the_description() {
        assert_eq!(partitions_of(Some(&description(16))), Some(16));
        assert_eq!(partitions_of(Some("something else")), None);
        assert_eq!(partitions_of(None), None);
    }
}
