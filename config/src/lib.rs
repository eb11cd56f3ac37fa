//! Typed, validated configuration of every Lookout binary.
//!
//! Each binary reads an optional TOML file (`--config FILE`); every key has a default
//! defined once here, unknown keys are refused, and every error names the file, the key
//! and the reason. Command-line flags are applied on top by the binaries, and
//! [`to_toml_masked`] prints the result (`--check-config`) as a config file with its
//! secrets masked.

mod agent;
mod alerts;
mod cluster;
mod collector;
mod host;
mod print;
mod server;
mod tail;
mod units;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use agent::{
    AgentConfig, BufferConfig, Compression, ExportProtocol, ExporterConfig, FsyncPolicy,
    ResourceConfig, WhenFull,
};
pub use alerts::{
    Aggregation, AlertRule, AlertSignal, AlertingConfig, CompareOp, ReceiverConfig, ReceiverKind,
};
pub use cluster::{ClusterConfig, NatsConfig};
pub use collector::{
    ApiConfig, CollectorConfig, IndexConfig, IngestConfig, LimitsConfig, MetricsConfig, OtlpConfig,
    QueryConfig, SpanStoreConfig, TracesConfig, WalConfig,
};
pub use host::HostMetricsConfig;
pub use print::{to_toml_masked, PrintError, MASK};
pub use server::{
    redact_url, validate_token, AuthConfig, ClientTlsConfig, ConnectionLimits, CredentialUrl,
    Headers, Secret, TlsConfig, TokenError,
};
pub use tail::TailConfig;
pub use units::{
    parse_bytes, parse_duration, ByteSize, ByteSizeError, DurationError, HumanDuration,
};

/// Configuration of `lookout-tui`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuiConfig {
    /// Base URL of the collector's query API.
    #[serde(serialize_with = "crate::print::masked_url")]
    pub collector: String,
    /// How often the open view refreshes.
    pub refresh: HumanDuration,
    /// File holding the bearer token of the collector's query API (`api.auth`).
    pub token_file: Option<PathBuf>,
    /// TLS towards an `https://` collector: CA bundle, client certificate.
    pub tls: ClientTlsConfig,
}

impl Default for TuiConfig {
    fn default() -> Self {
        Self {
            collector: "http://127.0.0.1:7070".to_string(),
            refresh: HumanDuration::from_secs(2),
            token_file: None,
            tls: ClientTlsConfig::default(),
        }
    }
}

impl Validate for TuiConfig {
    fn validate(&self) -> Result<(), Violation> {
        if !(self.collector.starts_with("http://") || self.collector.starts_with("https://")) {
            return Err(Violation::new(
                "collector",
                format!(
                    "expected an http:// or https:// URL, got {:?}",
                    self.collector
                ),
            ));
        }
        self.tls.validate_with_prefix("tls")?;
        Ok(())
    }
}

/// A configuration error: which file, which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config file: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key is unknown or has the wrong type.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The file (or `<flags>` / `<inline>` when not from a file).
        file: PathBuf,
        /// Dotted path of the key at fault (empty when the document itself is malformed).
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key named by the error, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } => None,
        }
    }
}

/// A value that parsed but breaks a rule: the dotted key at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {reason}")]
pub struct Violation {
    /// Dotted path of the key at fault, e.g. `exporter.concurrency`.
    pub key: String,
    /// Why the value was refused.
    pub reason: String,
}

impl Violation {
    /// A violation of `key`.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same violation with its key placed under `prefix` (`prefix.key`).
    pub fn under(self, prefix: &str) -> Self {
        Self {
            key: format!("{prefix}.{}", self.key),
            reason: self.reason,
        }
    }
}

/// Semantic checks beyond types.
pub trait Validate {
    /// Check the values; the first broken rule is the error.
    fn validate(&self) -> Result<(), Violation>;
}

/// Load a configuration from `path`, or the defaults when `path` is `None`.
pub fn load<T>(path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Default + Validate,
{
    match path {
        None => Ok(T::default()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                file: p.to_path_buf(),
                source,
            })?;
            parse(&text, p)
        }
    }
}

/// Parse and validate a configuration from TOML text; `origin` names it in errors.
pub fn parse<T>(text: &str, origin: &Path) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Validate,
{
    let de = toml::Deserializer::new(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let mut key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_string();
        // serde reports an unknown key at its parent; name the key itself.
        if let Some(unknown) = unknown_field_name(&message) {
            let already = key == unknown || key.ends_with(&format!(".{unknown}"));
            key = if already {
                key
            } else if key == "." || key.is_empty() {
                unknown.to_string()
            } else {
                format!("{key}.{unknown}")
            };
        }
        if key == "." {
            key.clear();
        }
        let reason = match inner.span() {
            Some(span) => {
                let (line, col) = line_col(text, span.start);
                format!("{message} (line {line}, column {col})")
            }
            None => message,
        };
        ConfigError::Invalid {
            file: origin.to_path_buf(),
            key,
            reason,
        }
    })?;
    value
        .validate()
        .map_err(|Violation { key, reason }| ConfigError::Invalid {
            file: origin.to_path_buf(),
            key,
            reason,
        })?;
    Ok(value)
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// What the tests of every configuration do: parse a document, expect it refused.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;
    use std::path::Path;

    use serde::de::DeserializeOwned;

    use crate::{parse, ConfigError, Validate};

    /// `text` parsed as a `T` from a file called `file`; the test fails if it is refused.
    pub(crate) fn parsed<T: DeserializeOwned + Validate>(file: &str, text: &str) -> T {
        parse(text, Path::new(file)).expect(text)
    }

    /// Why `text`, which must be refused as a `T` from a file called `file`, is refused.
    pub(crate) fn refused<T: DeserializeOwned + Validate + Debug>(
        file: &str,
        text: &str,
    ) -> ConfigError {
        parse::<T>(text, Path::new(file)).expect_err(text)
    }

    /// Asserts that every `(text, key)` is refused naming `key`; returns the errors.
    #[track_caller]
    pub(crate) fn assert_refused_at<T: DeserializeOwned + Validate + Debug>(
        file: &str,
        cases: &[(&str, &str)],
    ) -> Vec<ConfigError> {
        cases
            .iter()
            .map(|(text, key)| {
                let e = refused::<T>(file, text);
                assert_eq!(e.key(), Some(*key), "{text}: {e}");
                e
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{parsed, refused};
    use super::*;

    #[test]
    fn empty_tui_config_equals_defaults() {
        assert_eq!(parsed::<TuiConfig>("t.toml", ""), TuiConfig::default());
    }

    #[test]
    fn tui_refuses_non_http_collector() {
        let e = refused::<TuiConfig>("t.toml", "collector = \"localhost:7070\"");
        assert_eq!(e.key(), Some("collector"));
        assert!(e.to_string().starts_with("t.toml: key `collector`:"), "{e}");
    }
}

/// What a binary's `main` does with the error that ends it: `Error: ...` and a numbered
/// "Caused by" list on stderr, as anyhow prints it, but never a backtrace, even with
/// `RUST_BACKTRACE=1` (a config error is a message for the user, not a crash); exit code 1.
pub fn report_error(e: &(dyn std::error::Error + 'static)) -> std::process::ExitCode {
    use std::fmt::Write as _;
    let mut out = format!("Error: {e}");
    let causes: Vec<String> = std::iter::successors(e.source(), |c| c.source())
        .map(ToString::to_string)
        .collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for (i, c) in causes.iter().enumerate() {
            let _ = write!(out, "\n    {i}: {c}");
        }
    }
    eprintln!("{out}");
    std::process::ExitCode::FAILURE
}
