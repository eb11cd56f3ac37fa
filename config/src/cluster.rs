//! `[cluster]`: scale-out on NATS JetStream (`docs/CLUSTER.md`). Absent, a binary runs
//! alone; present, the agent publishes to the stream instead of shipping OTLP, and a
//! collector publishes what it receives and consumes the partitions it owns.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::server::{ClientTlsConfig, CredentialUrl};
use crate::units::HumanDuration;
use crate::Violation;

/// How to reach the cluster's stream: servers, credentials, the stream's shape. The
/// agent's `[cluster]` is this; the collector's adds its node's identity
/// ([`ClusterConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// NATS servers (`nats://host:4222`, `tls://host:4222`); any one that answers is
    /// enough, the client learns the others from it.
    #[serde(serialize_with = "masked_urls")]
    pub urls: Vec<CredentialUrl>,
    /// NATS credentials file (`.creds`: a user JWT and its NKey seed).
    pub creds_file: Option<PathBuf>,
    /// File holding a NATS authentication token.
    pub token_file: Option<PathBuf>,
    /// TLS towards the servers: CA bundle, client certificate. Used with `tls://` URLs or
    /// when a file is set here.
    pub tls: ClientTlsConfig,
    /// JetStream stream holding every signal; created by the first node that finds it
    /// missing.
    pub stream: String,
    /// Subject prefix: messages go to `PREFIX.<signal>.<partition>`.
    pub subject_prefix: String,
    /// Partitions, fixed when the stream is created; every node must say the same.
    pub partitions: u32,
    /// Copies of every message (1, 3 or 5), on that many servers.
    pub replicas: u32,
    /// Longest wait for a publish acknowledgement, and for the stream at start-up.
    pub timeout: HumanDuration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: vec![CredentialUrl("nats://127.0.0.1:4222".into())],
            creds_file: None,
            token_file: None,
            tls: ClientTlsConfig::default(),
            stream: "LOOKOUT".into(),
            subject_prefix: "lookout".into(),
            partitions: 16,
            replicas: 3,
            timeout: HumanDuration::from_secs(10),
        }
    }
}

fn masked_urls<S: serde::Serializer>(urls: &[CredentialUrl], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        urls.iter()
            .map(|u| crate::server::replace_userinfo(u, crate::MASK)),
    )
}

/// A NATS name token (stream, subject part): no whitespace, `.`, `*`, `>`, `/` or `\`.
fn check_name(key: &str, what: &str, v: &str) -> Result<(), Violation> {
    if v.is_empty() {
        return Err(Violation::new(key, format!("{what} must not be empty")));
    }
    if let Some(c) = v
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(Violation::new(
            key,
            format!("{what} may not contain {c:?}, got {v:?}"),
        ));
    }
    Ok(())
}

impl NatsConfig {
    /// Check the values; keys in errors are relative to `[cluster]`.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.urls.is_empty() {
            return err("urls", "must name at least one NATS server".into());
        }
        for (i, u) in self.urls.iter().enumerate() {
            let ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| u.starts_with(s) && u.len() > s.len());
            if !ok {
                return err(
                    &format!("urls[{i}]"),
                    format!(
                        "expected a nats:// or tls:// URL (nats://host:4222), got {:?}",
                        u.redacted()
                    ),
                );
            }
        }
        if self.creds_file.is_some() && self.token_file.is_some() {
            return err(
                "token_file",
                "creds_file and token_file are two ways to authenticate; set one".into(),
            );
        }
        self.tls.validate_with_prefix("tls")?;
        if self.tls.server_name.is_some() {
            return err(
                "tls.server_name",
                "not supported towards NATS: the certificate is checked against each URL's host; use URLs with the certificate's host name".into(),
            );
        }
        check_name("stream", "a stream name", &self.stream)?;
        check_name("subject_prefix", "a subject prefix", &self.subject_prefix)?;
        if !(1..=4096).contains(&self.partitions) {
            return err(
                "partitions",
                format!("must be between 1 and 4096, got {}", self.partitions),
            );
        }
        if ![1, 3, 5].contains(&self.replicas) {
            return err(
                "replicas",
                format!(
                    "must be 1, 3 or 5 (JetStream keeps an odd number of copies for its quorum), got {}",
                    self.replicas
                ),
            );
        }
        if self.timeout.get() < std::time::Duration::from_millis(100) {
            return err(
                "timeout",
                format!("must be at least 100ms, got {}", self.timeout),
            );
        }
        Ok(())
    }
}

/// The collector's `[cluster]`: the stream ([`NatsConfig`]'s keys) and this node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// See [`NatsConfig::urls`].
    #[serde(serialize_with = "masked_urls")]
    pub urls: Vec<CredentialUrl>,
    /// See [`NatsConfig::creds_file`].
    pub creds_file: Option<PathBuf>,
    /// See [`NatsConfig::token_file`].
    pub token_file: Option<PathBuf>,
    /// See [`NatsConfig::tls`].
    pub tls: ClientTlsConfig,
    /// See [`NatsConfig::stream`].
    pub stream: String,
    /// See [`NatsConfig::subject_prefix`].
    pub subject_prefix: String,
    /// See [`NatsConfig::partitions`].
    pub partitions: u32,
    /// See [`NatsConfig::replicas`].
    pub replicas: u32,
    /// See [`NatsConfig::timeout`].
    pub timeout: HumanDuration,
    /// This node's name, unique in the cluster; it holds partition leases under it.
    /// Default: the host name and the API port (`host-7070`).
    pub node: Option<String>,
    /// The URL other nodes reach this node's query API at. Default: `http://` and the
    /// API's listen address (which must then not be a wildcard address).
    pub advertise_api: Option<String>,
    /// Whether this node owns partitions and stores them. `false` makes a gateway that
    /// only publishes what it receives.
    pub consume: bool,
    /// A partition lease not renewed for this long is taken over by another node.
    pub lease_ttl: HumanDuration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        let n = NatsConfig::default();
        Self {
            urls: n.urls,
            creds_file: n.creds_file,
            token_file: n.token_file,
            tls: n.tls,
            stream: n.stream,
            subject_prefix: n.subject_prefix,
            partitions: n.partitions,
            replicas: n.replicas,
            timeout: n.timeout,
            node: None,
            advertise_api: None,
            consume: true,
            lease_ttl: HumanDuration::from_secs(10),
        }
    }
}

impl ClusterConfig {
    /// The stream's part of the settings.
    pub fn nats(&self) -> NatsConfig {
        NatsConfig {
            urls: self.urls.clone(),
            creds_file: self.creds_file.clone(),
            token_file: self.token_file.clone(),
            tls: self.tls.clone(),
            stream: self.stream.clone(),
            subject_prefix: self.subject_prefix.clone(),
            partitions: self.partitions,
            replicas: self.replicas,
            timeout: self.timeout,
        }
    }

    /// Check the values; keys in errors are relative to `[cluster]`.
    pub fn validate(&self) -> Result<(), Violation> {
        self.nats().validate()?;
        if let Some(node) = &self.node {
            check_name("node", "a node name", node)?;
        }
        if let Some(url) = &self.advertise_api {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Violation::new(
                    "advertise_api",
                    format!("expected an http:// or https:// URL, got {url:?}"),
                ));
            }
        }
        if self.lease_ttl.get() < std::time::Duration::from_secs(1) {
            return Err(Violation::new(
                "lease_ttl",
                format!("must be at least 1s, got {}", self.lease_ttl),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_refused_at, parsed};
    use crate::{AgentConfig, CollectorConfig};

    #[test]
    fn a_cluster_section_turns_cluster_mode_on_with_defaults() {
        let c = parsed::<CollectorConfig>("c.toml", "[cluster]\n");
        assert_eq!(c.cluster, Some(ClusterConfig::default()));
        assert_eq!(parsed::<CollectorConfig>("c.toml", "").cluster, None);
        let a = parsed::<AgentConfig>("a.toml", "[cluster]\nurls = [\"nats://n1:4222\"]\n");
        assert_eq!(a.cluster.map(|c| c.urls.len()), Some(1));
    }

    #[test]
    fn bad_cluster_values_name_their_key() {
        let cases = [
            ("[cluster]\nurls = []\n", "cluster.urls"),
            (
                "[cluster]\nurls = [\"http://n1:4222\"]\n",
                "cluster.urls[0]",
            ),
            ("[cluster]\npartitions = 0\n", "cluster.partitions"),
            ("[cluster]\nreplicas = 2\n", "cluster.replicas"),
            ("[cluster]\nstream = \"a.b\"\n", "cluster.stream"),
            (
                "[cluster]\nsubject_prefix = \"a b\"\n",
                "cluster.subject_prefix",
            ),
            ("[cluster]\nnode = \"n>1\"\n", "cluster.node"),
            (
                "[cluster]\nadvertise_api = \"n1:7070\"\n",
                "cluster.advertise_api",
            ),
            ("[cluster]\nlease_ttl = \"100ms\"\n", "cluster.lease_ttl"),
            (
                "[cluster]\ncreds_file = \"a\"\ntoken_file = \"b\"\n",
                "cluster.token_file",
            ),
            ("[cluster]\nconsume = 1\n", "cluster.consume"),
            (
                "[cluster]\ntls = { server_name = \"nats.internal\" }\n",
                "cluster.tls.server_name",
            ),
        ];
        for e in assert_refused_at::<CollectorConfig>("c.toml", &cases) {
            assert!(e.to_string().starts_with("c.toml: key `cluster."), "{e}");
        }
        assert_refused_at::<AgentConfig>(
            "a.toml",
            &[
                ("[cluster]\nnode = \"n1\"\n", "cluster.node"),
                ("[cluster]\nreplicas = 4\n", "cluster.replicas"),
            ],
        );
    }

    #[test]
    fn credentials_in_nats_urls_are_masked_when_printed() {
        let c =
            parsed::<CollectorConfig>("c.toml", "[cluster]\nurls = [\"nats://user:pw@n1:4222\"]\n");
        let text = crate::to_toml_masked(&c, None).unwrap_or_default();
        assert!(!text.contains("pw@"), "{text}");
        assert!(text.contains("nats://<secret>@n1:4222"), "{text}");
    }
}
