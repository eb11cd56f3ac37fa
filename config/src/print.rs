//! `--check-config`: the effective configuration as a TOML config file, secrets masked.
//!
//! Every config type derives `Serialize`; durations and sizes print as they are written
//! (`"7d"`, `"4MiB"`), and each field that can hold a secret names one of the masking
//! serializers below. [`Secret`], [`Headers`] and [`CredentialUrl`] are not `Serialize`
//! themselves, so a new field of those types cannot be printed unmasked by mistake.

use std::path::Path;

use serde::{Serialize, Serializer};

use crate::server::{replace_userinfo, CredentialUrl, Headers, Secret};

/// What a masked value is printed as.
pub const MASK: &str = "<secret>";

/// Why a configuration could not be printed as TOML.
#[derive(Debug, thiserror::Error)]
#[error("cannot print the configuration as toml")]
pub struct PrintError(#[source] toml::ser::Error);

/// `cfg` as a TOML config file, for `--check-config`: read back, it gives the same
/// configuration, except that bearer tokens, header values and the user information of
/// URLs read [`MASK`]. The first line is a comment naming `file` (the defaults when
/// `None`) and saying that secrets are masked. Keys whose value is unset (`None`, e.g.
/// `otlp.tls`) are left out, as in a config file that does not set them.
pub fn to_toml_masked<T: Serialize>(cfg: &T, file: Option<&Path>) -> Result<String, PrintError> {
    let body = toml::to_string(cfg).map_err(PrintError)?;
    let origin = match file {
        // A control character in the name would end the comment line.
        Some(f) => f.display().to_string().replace(char::is_control, "?"),
        None => "the defaults (no config file)".to_string(),
    };
    Ok(format!(
        "# Effective configuration of {origin}, command-line flags applied; secrets masked.\n\
         # Each \"{MASK}\" stands for a masked value: put the real one back before using this \
         as a config file.\n\n{body}"
    ))
}

/// `[otlp.auth] tokens` and the like: one [`MASK`] per token.
pub(crate) fn masked_secrets<S: Serializer>(tokens: &[Secret], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(tokens.iter().map(|_| MASK))
}

/// Request headers: the names, each with the value [`MASK`].
pub(crate) fn masked_headers<S: Serializer>(headers: &Headers, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(headers.keys().map(|name| (name, MASK)))
}

/// A URL with its user information (`user:pass@`), if any, replaced by [`MASK`].
pub(crate) fn masked_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&replace_userinfo(url, MASK))
}

/// [`masked_url`] of a [`CredentialUrl`].
pub(crate) fn masked_credential_url<S: Serializer>(
    url: &CredentialUrl,
    s: S,
) -> Result<S::Ok, S::Error> {
    masked_url(url, s)
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::path::PathBuf;

    use serde::de::DeserializeOwned;

    use super::*;
    use crate::testing::{parsed, refused};
    use crate::{AgentConfig, CollectorConfig, TuiConfig, Validate};

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    /// `cfg` printed, then read back as a config file (and validated).
    fn printed_and_read_back<T>(cfg: &T) -> (String, T)
    where
        T: Serialize + DeserializeOwned + Validate,
    {
        let text = to_toml_masked(cfg, Some(Path::new("c.toml"))).expect("prints");
        let back = parsed::<T>("printed.toml", &text);
        (text, back)
    }

    /// What the config reads back as once printed: its secrets replaced by [`MASK`].
    fn collector_masked(mut c: CollectorConfig) -> CollectorConfig {
        for auth in [&mut c.otlp.auth, &mut c.api.auth] {
            for t in &mut auth.tokens {
                *t = Secret(MASK.into());
            }
        }
        c.alerting.external_url = replace_userinfo(&c.alerting.external_url, MASK);
        for r in c.receivers.values_mut() {
            r.url = CredentialUrl(replace_userinfo(&r.url, MASK));
            r.headers.0.values_mut().for_each(|v| *v = MASK.into());
        }
        c
    }

    fn agent_masked(mut c: AgentConfig) -> AgentConfig {
        c.collector = replace_userinfo(&c.collector, MASK);
        c.exporter
            .headers
            .0
            .values_mut()
            .for_each(|v| *v = MASK.into());
        c
    }

    /// No Rust debug forms: every value is written as a config file writes it.
    fn assert_no_debug_forms(text: &str) {
        for debug in [
            "HumanDuration",
            "ByteSize",
            "Secret(",
            "secs",
            "nanos",
            "{\n",
        ] {
            assert!(!text.contains(debug), "{debug:?} in:\n{text}");
        }
    }

    #[test]
    fn defaults_round_trip() {
        let (text, back) = printed_and_read_back(&CollectorConfig::default());
        assert_eq!(back, CollectorConfig::default());
        assert_no_debug_forms(&text);
        assert!(text.contains("\nretention = \"7d\"\n"), "{text}");
        assert!(text.contains("\nmax_request_size = \"4MiB\"\n"), "{text}");
        let (text, back) = printed_and_read_back(&AgentConfig::default());
        assert_eq!(back, AgentConfig::default());
        assert_no_debug_forms(&text);
        assert!(text.contains("\nbatch_timeout = \"200ms\"\n"), "{text}");
        let (_, back) = printed_and_read_back(&TuiConfig::default());
        assert_eq!(back, TuiConfig::default());
    }

    fn example_round_trips<T>(name: &str, masked: impl Fn(T) -> T)
    where
        T: Serialize + DeserializeOwned + Validate + Default + Clone + PartialEq + Debug,
    {
        let c: T = crate::load(Some(&example(name))).expect("example parses");
        let (text, back) = printed_and_read_back(&c);
        assert_eq!(back, masked(c), "{name} printed as:\n{text}");
        assert_no_debug_forms(&text);
    }

    #[test]
    fn every_example_round_trips() {
        example_round_trips::<CollectorConfig>("collector.toml", collector_masked);
        example_round_trips::<AgentConfig>("agent.toml", agent_masked);
        example_round_trips::<TuiConfig>("tui.toml", |c| c);
        let mut names: Vec<String> = std::fs::read_dir(example(""))
            .expect("examples dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["agent.toml", "collector.toml", "tui.toml"]);
    }

    /// Every optional key set, every secret-bearing field holding a secret.
    const COLLECTOR: &str = r#"
data_dir = "/var/lib/lookout"
retention = "30d"
[otlp]
grpc = "0.0.0.0:4317"
[otlp.tls]
cert_file = "/etc/lookout/tls/collector.pem"
key_file = "/etc/lookout/tls/collector-key.pem"
client_ca_file = "/etc/lookout/tls/agents-ca.pem"
min_version = "1.3"
reload_interval = "90s"
[otlp.auth]
tokens = ["ingest-token-0123456789", "ingest-token-abcdefghij"]
tokens_file = "/etc/lookout/ingest-tokens"
[api.tls]
cert_file = "/etc/lookout/tls/api.pem"
key_file = "/etc/lookout/tls/api-key.pem"
[api.auth]
tokens = ["api-token-0123456789abc"]
[wal]
reserve = "1GiB"
segment_size = "50MB"
[ingest]
admission_wait = "1500ms"
[alerting]
external_url = "https://viewer:alert-link-pass@lookout.example.com"
[[alerts]]
name = "Errors"
signal = "error_rate"
threshold = 0.05
window = "5m"
receivers = ["oncall", "am"]
[receivers.oncall]
url = "https://hook-user:hook-url-pass@hooks.example.com/x"
headers = { Authorization = "Bearer hook-header-secret", "X-Api-Key" = "hook-api-key" }
[receivers.am]
kind = "alertmanager"
url = "http://am.example.com:9093"
"#;

    const AGENT: &str = r#"
collector = "https://agent-user:collector-url-pass@collector.example.com:4317"
[resource]
service_name = "shop"
attributes = { "deployment.environment.name" = "prod" }
[exporter]
protocol = "http"
compression = "zstd"
headers = { "x-tenant" = "shop-tenant-secret", authorization = "Bearer exporter-secret" }
[exporter.tls]
ca_file = "/etc/lookout/tls/ca.pem"
cert_file = "/etc/lookout/tls/agent.pem"
key_file = "/etc/lookout/tls/agent-key.pem"
server_name = "collector.internal"
[host_metrics]
pid_file = "/run/shop.pid"
[[tail]]
paths = ["/var/log/shop/*.log"]
exclude = ["*.gz"]
attributes = { team = "payments" }
format = "json"
[tail.multiline]
start_pattern = '^\d{4}-'
"#;

    const SECRETS: [&str; 12] = [
        "ingest-token-0123456789",
        "ingest-token-abcdefghij",
        "api-token-0123456789abc",
        "alert-link-pass",
        "hook-url-pass",
        "hook-header-secret",
        "hook-api-key",
        "collector-url-pass",
        "shop-tenant-secret",
        "exporter-secret",
        // User names are masked with the passwords.
        "hook-user",
        "agent-user",
    ];

    fn assert_masked(text: &str) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} shown in:\n{text}");
        }
        assert!(text.contains(MASK), "{text}");
        assert_no_debug_forms(text);
    }

    #[test]
    fn every_key_round_trips_with_secrets_masked() {
        let c: CollectorConfig = parsed("c.toml", COLLECTOR);
        let text = to_toml_masked(&c, None).expect("prints");
        assert_masked(&text);
        for shown in [
            "tokens = [\"<secret>\", \"<secret>\"]",
            "url = \"https://<secret>@hooks.example.com/x\"",
            "external_url = \"https://<secret>@lookout.example.com\"",
            "Authorization = \"<secret>\"",
            // Key files are paths, not keys: shown.
            "key_file = \"/etc/lookout/tls/collector-key.pem\"",
            "tokens_file = \"/etc/lookout/ingest-tokens\"",
            "reserve = \"1GiB\"",
            "segment_size = \"50000000B\"",
            "admission_wait = \"1500ms\"",
        ] {
            assert!(text.contains(shown), "{shown} missing from:\n{text}");
        }
        // Masked tokens are not tokens: pasted back unchanged, the file is refused there.
        let e = refused::<CollectorConfig>("printed.toml", &text);
        assert_eq!(e.key(), Some("otlp.auth.tokens[0]"), "{e}");
        // Otherwise it reads back as the same configuration, the secrets masked.
        let back: CollectorConfig = toml::from_str(&text).expect("reads back");
        assert_eq!(back, collector_masked(c));

        let c: AgentConfig = parsed("a.toml", AGENT);
        let (text, back) = printed_and_read_back(&c);
        assert_masked(&text);
        for shown in [
            "collector = \"https://<secret>@collector.example.com:4317\"",
            "x-tenant = \"<secret>\"",
            "key_file = \"/etc/lookout/tls/agent-key.pem\"",
            "start_pattern = '^\\d{4}-'",
        ] {
            assert!(text.contains(shown), "{shown} missing from:\n{text}");
        }
        assert_eq!(back, agent_masked(c));
    }

    #[test]
    fn first_line_names_the_file_and_the_masking() {
        let c = TuiConfig::default();
        let text = to_toml_masked(&c, Some(Path::new("/etc/lookout/tui.toml"))).expect("prints");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "# Effective configuration of /etc/lookout/tui.toml, command-line flags applied; \
             secrets masked."
        );
        let text = to_toml_masked(&c, None).expect("prints");
        assert!(
            text.starts_with("# Effective configuration of the defaults"),
            "{text}"
        );
        assert!(
            text.contains("\"<secret>\" stands for a masked value"),
            "{text}"
        );
        // A file name cannot end the comment and inject keys.
        let text =
            to_toml_masked(&c, Some(Path::new("a\nrefresh = \"1s\"\n.toml"))).expect("prints");
        assert_eq!(parsed::<TuiConfig>("printed.toml", &text), c);
    }
}
