//! Settings shared by every listener: TLS, bearer-token auth and connection limits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;
use crate::Violation;

/// A secret string (a bearer token): never printed by `Debug`, so a logged config does
/// not leak it. Not `Serialize` on purpose: a config field of this type names a masking
/// serializer (`--check-config` prints `"<secret>"`), or the config does not compile.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A URL that may carry credentials (`https://user:pass@host/...`): `Debug` and
/// [`CredentialUrl::redacted`] show `***` in their place. Not `Serialize` on purpose, like
/// [`Secret`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CredentialUrl(pub String);

impl CredentialUrl {
    /// The URL with its user information replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// `url` with the user information of its authority (`user:pass@`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    replace_userinfo(url, "***")
}

/// `url` with the user information of its authority (`user:pass@`) replaced by `with`.
pub(crate) fn replace_userinfo(url: &str, with: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let host = &authority[at + 1..];
    match scheme {
        Some(s) => format!("{s}://{with}@{host}{path}"),
        None => format!("{with}@{host}{path}"),
    }
}

impl std::fmt::Debug for CredentialUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::ops::Deref for CredentialUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Extra request headers of an outgoing client (webhooks, the agent's exporter). Their
/// values often carry credentials, so `Debug` shows only the names. Not `Serialize` on
/// purpose, like [`Secret`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Headers(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "***")))
            .finish()
    }
}

impl std::ops::Deref for Headers {
    type Target = std::collections::BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// TLS of a listener (rustls; TLS 1.2 and 1.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Lowest protocol version accepted: `"1.2"` or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// How often the files are checked for changes; changed files are loaded without a
    /// restart (also on SIGHUP). A broken new file is logged and the old one kept.
    #[serde(default = "default_reload_interval")]
    pub reload_interval: HumanDuration,
}

fn default_min_version() -> String {
    "1.2".into()
}
fn default_reload_interval() -> HumanDuration {
    HumanDuration::from_secs(60)
}

impl TlsConfig {
    /// Check the settings; keys in errors are `PREFIX.key`.
    pub fn validate_with_prefix(&self, prefix: &str) -> Result<(), Violation> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.cert_file.as_os_str().is_empty() {
            return Err(Violation::new(key("cert_file"), "must not be empty"));
        }
        if self.key_file.as_os_str().is_empty() {
            return Err(Violation::new(key("key_file"), "must not be empty"));
        }
        if !matches!(self.min_version.as_str(), "1.2" | "1.3") {
            return Err(Violation::new(
                key("min_version"),
                format!("expected \"1.2\" or \"1.3\", got {:?}", self.min_version),
            ));
        }
        if self.reload_interval.get() < std::time::Duration::from_secs(1) {
            return Err(Violation::new(
                key("reload_interval"),
                format!("must be at least 1s, got {}", self.reload_interval),
            ));
        }
        Ok(())
    }
}

/// Bearer-token authentication of a listener: enabled when any token is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted tokens (`Authorization: Bearer TOKEN`).
    #[serde(serialize_with = "crate::print::masked_secrets")]
    pub tokens: Vec<Secret>,
    /// A file with more accepted tokens, one per line (`#` comments and blank lines
    /// skipped), so secrets stay out of the config file.
    pub tokens_file: Option<PathBuf>,
}

impl AuthConfig {
    /// Check the settings; keys in errors are `PREFIX.key`.
    pub fn validate_with_prefix(&self, prefix: &str) -> Result<(), Violation> {
        for (i, t) in self.tokens.iter().enumerate() {
            validate_token(t.expose())
                .map_err(|r| Violation::new(format!("{prefix}.tokens[{i}]"), r.to_string()))?;
        }
        if self
            .tokens_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(Violation::new(
                format!("{prefix}.tokens_file"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// Why a string cannot be a bearer token (the token itself is never part of the message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than 16 characters.
    #[error("a token must be at least 16 characters, got {0}")]
    TooShort(usize),
    /// A character outside RFC 6750's `b64token` set.
    #[error("a token may contain only letters, digits and -._~+/=")]
    BadCharacter,
}

/// Checks that `token` can be a bearer token (RFC 6750 `b64token` characters, 16+ long).
pub fn validate_token(token: &str) -> Result<(), TokenError> {
    if token.len() < 16 {
        return Err(TokenError::TooShort(token.len()));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
    {
        return Err(TokenError::BadCharacter);
    }
    Ok(())
}

/// Connection handling of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Most connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; more are closed as they are
    /// accepted, so that one client cannot take every slot.
    pub max_connections_per_address: usize,
    /// Time a client has to complete the TLS handshake and send its first bytes, and, on
    /// HTTP/1.1 its request headers, on HTTP/2 each frame and each header block, once
    /// begun (slowloris protection).
    pub header_read_timeout: HumanDuration,
    /// Time an OTLP request has from its headers to the end of its body (gRPC: to its
    /// answer), however steadily the body trickles in.
    pub request_timeout: HumanDuration,
    /// Most concurrent HTTP/2 streams (gRPC calls) per connection.
    pub max_concurrent_streams: u32,
    /// A connection with no bytes in either direction for this long is closed, so idle
    /// clients cannot hold the connection slots.
    pub idle_timeout: HumanDuration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_address: 256,
            header_read_timeout: HumanDuration::from_secs(10),
            request_timeout: HumanDuration::from_secs(60),
            max_concurrent_streams: 100,
            idle_timeout: HumanDuration::from_secs(120),
        }
    }
}

impl ConnectionLimits {
    /// Check the settings; keys in errors are `PREFIX.key`.
    pub fn validate_with_prefix(&self, prefix: &str) -> Result<(), Violation> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.max_connections == 0 {
            return Err(Violation::new(key("max_connections"), "must be at least 1"));
        }
        if self.max_connections_per_address == 0 {
            return Err(Violation::new(
                key("max_connections_per_address"),
                "must be at least 1",
            ));
        }
        if self.request_timeout.get() < std::time::Duration::from_secs(1) {
            return Err(Violation::new(
                key("request_timeout"),
                format!("must be at least 1s, got {}", self.request_timeout),
            ));
        }
        if self.header_read_timeout.get() < std::time::Duration::from_millis(100) {
            return Err(Violation::new(
                key("header_read_timeout"),
                format!("must be at least 100ms, got {}", self.header_read_timeout),
            ));
        }
        if self.idle_timeout < self.header_read_timeout {
            return Err(Violation::new(
                key("idle_timeout"),
                format!(
                    "must be at least header_read_timeout ({}), got {}",
                    self.header_read_timeout, self.idle_timeout
                ),
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(Violation::new(
                key("max_concurrent_streams"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// TLS towards a server (the agent's exporter, the dashboard): trust and identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// PEM CA bundle trusted for the server's certificate (instead of the system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require mTLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name checked against the server certificate, when it differs from the URL's host.
    pub server_name: Option<String>,
}

impl ClientTlsConfig {
    /// Check the settings; keys in errors are `PREFIX.key`.
    pub fn validate_with_prefix(&self, prefix: &str) -> Result<(), Violation> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Violation::new(
                format!("{prefix}.key_file"),
                "cert_file and key_file go together",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_never_shown() {
        for (url, shown) in [
            (
                "https://user:pass@hooks.example.com/a?b=c",
                "https://***@hooks.example.com/a?b=c",
            ),
            ("http://token@10.0.0.1:9000", "http://***@10.0.0.1:9000"),
            (
                "http://hooks.example.com/x@y",
                "http://hooks.example.com/x@y",
            ),
            ("http://a:b@c@host/", "http://***@host/"),
            ("user:pw@host", "***@host"),
            (
                "https://plain.example.com/hook",
                "https://plain.example.com/hook",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let u = CredentialUrl("https://u:secret@h/".into());
        assert!(!format!("{u:?}").contains("secret"));
        assert_eq!(&*u, "https://u:secret@h/");
    }
}
