//! Alert rules (`[[alerts]]`), receivers (`[receivers.NAME]`) and evaluation settings
//! (`[alerting]`) of the collector.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::HumanDuration;
use crate::Violation;

/// How and how often rules are evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// Every rule is evaluated this often.
    pub evaluation_interval: HumanDuration,
    /// Base URL of this collector as users reach it, for `generatorURL` and the query
    /// links in annotations; empty means `http://` + the API listen address.
    #[serde(serialize_with = "crate::print::masked_url")]
    pub external_url: String,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: HumanDuration::from_secs(5),
            external_url: String::new(),
        }
    }
}

/// A span-derived signal of a service (and operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSignal {
    /// Median latency, ms.
    LatencyP50,
    /// 90th percentile latency, ms.
    LatencyP90,
    /// 95th percentile latency, ms.
    LatencyP95,
    /// 99th percentile latency, ms.
    LatencyP99,
    /// Share of requests with status error, 0..1.
    ErrorRate,
    /// Requests per second.
    RequestRate,
}

impl AlertSignal {
    /// The name used in config and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSignal::LatencyP50 => "latency_p50",
            AlertSignal::LatencyP90 => "latency_p90",
            AlertSignal::LatencyP95 => "latency_p95",
            AlertSignal::LatencyP99 => "latency_p99",
            AlertSignal::ErrorRate => "error_rate",
            AlertSignal::RequestRate => "request_rate",
        }
    }
}

/// How the series of a metric rule are combined into one value per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean of the latest values (gauges, counters).
    Avg,
    /// Sum of the latest values.
    Sum,
    /// Smallest latest value.
    Min,
    /// Largest latest value.
    Max,
    /// Number of matching series.
    Count,
    /// Per-second increase over the window, summed over series (counters, histogram counts).
    Rate,
    /// Increase over the window, summed over series.
    Increase,
    /// Median of the observations in the window (histograms).
    P50,
    /// 90th percentile of the observations in the window (histograms).
    P90,
    /// 95th percentile of the observations in the window (histograms).
    P95,
    /// 99th percentile of the observations in the window (histograms).
    P99,
}

/// Comparison of the value with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, Default)]
pub enum CompareOp {
    /// value > threshold
    #[default]
    #[serde(rename = ">")]
    Gt,
    /// value >= threshold
    #[serde(rename = ">=")]
    Ge,
    /// value < threshold
    #[serde(rename = "<")]
    Lt,
    /// value <= threshold
    #[serde(rename = "<=")]
    Le,
}

impl CompareOp {
    /// Whether `value op threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            CompareOp::Gt => value > threshold,
            CompareOp::Ge => value >= threshold,
            CompareOp::Lt => value < threshold,
            CompareOp::Le => value <= threshold,
        }
    }

    /// The operator as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }
}

/// One alert rule (`[[alerts]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Rule name, the `alertname` label; unique.
    pub name: String,
    /// Service the rule watches; without it, one alert instance per service.
    #[serde(default)]
    pub service: Option<String>,
    /// Operation the rule watches (span-derived signals only); all operations without it.
    #[serde(default)]
    pub operation: Option<String>,
    /// Span-derived signal; exactly one of `signal` and `metric` is set.
    #[serde(default)]
    pub signal: Option<AlertSignal>,
    /// Name of an OTLP metric as exposed on `/metrics` (e.g. `queue_depth` or
    /// `http_server_request_duration_seconds`).
    #[serde(default)]
    pub metric: Option<String>,
    /// Label matchers of a metric rule: only series with these label values count.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    /// How a metric rule combines its series (default `avg`; `p99` etc. need a histogram).
    #[serde(default)]
    pub aggregation: Option<Aggregation>,
    /// Comparison, `>` by default.
    #[serde(default)]
    pub op: CompareOp,
    /// Threshold in the signal's unit (ms for latencies, 0..1 for error_rate, per second
    /// for request_rate).
    pub threshold: f64,
    /// Window the value is computed over.
    #[serde(default = "default_window")]
    pub window: HumanDuration,
    /// The condition must hold this long before the alert fires (pending meanwhile).
    #[serde(default, rename = "for")]
    pub for_: HumanDuration,
    /// A firing alert keeps firing this long after the condition stops holding.
    #[serde(default)]
    pub keep_firing_for: HumanDuration,
    /// The `severity` label.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Summary annotation; `{{service}}`, `{{operation}}`, `{{value}}`, `{{threshold}}`,
    /// `{{window}}` and `{{labels.NAME}}` are replaced.
    #[serde(default)]
    pub summary: String,
    /// Description annotation, templated like `summary`.
    #[serde(default)]
    pub description: String,
    /// Extra labels of every instance.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Names of `[receivers.NAME]` notified.
    #[serde(default)]
    pub receivers: Vec<String>,
}

fn default_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn default_severity() -> String {
    "warning".into()
}

/// How a receiver is talked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// POST of an Alertmanager webhook (version 4) body to `url`.
    #[default]
    Webhook,
    /// POST of the alerts to a real Alertmanager's `/api/v2/alerts` at `url` (its base URL).
    Alertmanager,
}

/// One notification target (`[receivers.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// `webhook` (default) or `alertmanager`.
    #[serde(default)]
    pub kind: ReceiverKind,
    /// Where notifications are posted (http:// or https://); user information in it is
    /// never printed.
    #[serde(serialize_with = "crate::print::masked_credential_url")]
    pub url: crate::server::CredentialUrl,
    /// Extra request headers, e.g. `Authorization`.
    #[serde(default, serialize_with = "crate::print::masked_headers")]
    pub headers: crate::server::Headers,
    /// Time limit of one delivery attempt.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Attempts after the first on 5xx, timeouts and connection errors (4xx is final).
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time (with jitter) up to `max_backoff`.
    #[serde(default = "default_backoff")]
    pub initial_backoff: HumanDuration,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Also notify when alerts resolve.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// A group still firing is notified again after this long.
    #[serde(default = "default_repeat")]
    pub repeat_interval: HumanDuration,
    /// Alerts with equal values of these labels go in one notification.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// Non-public destination ranges this receiver may reach, as CIDRs or addresses
    /// (e.g. `["127.0.0.0/8"]` for a receiver on the same host). Loopback, private,
    /// link-local and other non-public addresses are refused otherwise, whether written
    /// in the URL or resolved from its host name.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_retries() -> u32 {
    8
}
fn default_backoff() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_max_backoff() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn default_repeat() -> HumanDuration {
    HumanDuration::from_secs(4 * 3600)
}
fn default_group_by() -> Vec<String> {
    vec!["alertname".into()]
}

/// Semantic checks of `[alerting]`, `[[alerts]]` and `[receivers]`.
pub(crate) fn validate(
    alerting: &AlertingConfig,
    rules: &[AlertRule],
    receivers: &BTreeMap<String, ReceiverConfig>,
) -> Result<(), Violation> {
    if alerting.evaluation_interval.get() < Duration::from_millis(100) {
        return Err(Violation::new(
            "alerting.evaluation_interval",
            format!(
                "must be at least 100ms, got {}",
                alerting.evaluation_interval
            ),
        ));
    }
    if !alerting.external_url.is_empty() && !is_http_url(&alerting.external_url) {
        return Err(Violation::new(
            "alerting.external_url",
            format!(
                "expected an http:// or https:// URL, got {:?}",
                alerting.external_url
            ),
        ));
    }
    for (name, r) in receivers {
        validate_receiver(r).map_err(|v| v.under(&format!("receivers.{name}")))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let key = format!("alerts[{i}]");
        // A name seen before passed the name checks then: this order reports what the
        // checks in sequence would.
        if !seen.insert(r.name.as_str()) {
            return Err(Violation::new(
                format!("{key}.name"),
                format!("duplicate rule name {:?}", r.name),
            ));
        }
        validate_rule(r, receivers).map_err(|v| v.under(&key))?;
    }
    Ok(())
}

/// Checks of one `[receivers.NAME]`; keys are relative to it.
fn validate_receiver(r: &ReceiverConfig) -> Result<(), Violation> {
    if !is_http_url(&r.url) {
        return Err(Violation::new(
            "url",
            format!("expected an http:// or https:// URL, got {:?}", r.url),
        ));
    }
    if r.timeout.get().is_zero() {
        return Err(Violation::new("timeout", "must be greater than 0"));
    }
    for net in &r.allowed_networks {
        let ok = net.parse::<ipnet::IpNet>().is_ok() || net.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            return Err(Violation::new(
                "allowed_networks",
                format!("expected a CIDR such as \"10.0.0.0/8\" or an IP address, got {net:?}"),
            ));
        }
    }
    if r.initial_backoff.get().is_zero() || r.max_backoff < r.initial_backoff {
        return Err(Violation::new(
            "max_backoff",
            format!(
                "must be at least initial_backoff ({}) and both greater than 0, got {}",
                r.initial_backoff, r.max_backoff
            ),
        ));
    }
    if r.repeat_interval.get() < Duration::from_secs(1) {
        return Err(Violation::new(
            "repeat_interval",
            format!("must be at least 1s, got {}", r.repeat_interval),
        ));
    }
    for (h, v) in &r.headers {
        let valid_name = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(Violation::new(
                "headers",
                format!("invalid header name {h:?}"),
            ));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Violation::new(
                "headers",
                format!("value of header {h:?} contains a control character"),
            ));
        }
    }
    Ok(())
}

/// Checks of one `[[alerts]]` rule; keys are relative to it.
fn validate_rule(
    r: &AlertRule,
    receivers: &BTreeMap<String, ReceiverConfig>,
) -> Result<(), Violation> {
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    {
        return Err(Violation::new(
            "name",
            format!(
                "must be non-empty letters, digits, '_', '-', '.', ':'; got {:?}",
                r.name
            ),
        ));
    }
    match (&r.signal, &r.metric) {
        (None, None) => {
            return Err(Violation::new("signal", "set either `signal` (latency_p50, latency_p90, latency_p95, latency_p99, error_rate, request_rate) or `metric`"))
        }
        (Some(_), Some(_)) => {
            return Err(Violation::new("metric", "`signal` and `metric` are exclusive"))
        }
        (Some(_), None) => {
            if !r.matchers.is_empty() {
                return Err(Violation::new("matchers", "only metric rules take matchers"));
            }
            if r.aggregation.is_some() {
                return Err(Violation::new("aggregation", "only metric rules take an aggregation"));
            }
        }
        (None, Some(m)) => {
            if m.is_empty() {
                return Err(Violation::new("metric", "must not be empty"));
            }
            if r.operation.is_some() {
                return Err(Violation::new("operation", "metric rules select series with `matchers`, not `operation`"));
            }
        }
    }
    if !r.threshold.is_finite() {
        return Err(Violation::new(
            "threshold",
            format!("must be a finite number, got {}", r.threshold),
        ));
    }
    if r.window.get() < Duration::from_secs(1) {
        return Err(Violation::new(
            "window",
            format!("must be at least 1s, got {}", r.window),
        ));
    }
    if r.receivers.is_empty() {
        return Err(Violation::new("receivers", "name at least one receiver"));
    }
    for name in &r.receivers {
        if !receivers.contains_key(name) {
            let known: Vec<&str> = receivers.keys().map(String::as_str).collect();
            return Err(Violation::new(
                "receivers",
                format!("no receiver {name:?} (defined: {known:?}); add [receivers.{name}]"),
            ));
        }
    }
    for l in r.labels.keys() {
        if l.is_empty()
            || l.starts_with(|c: char| c.is_ascii_digit())
            || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Violation::new(
                "labels",
                format!("invalid label name {l:?}"),
            ));
        }
        if matches!(
            l.as_str(),
            "alertname" | "service" | "operation" | "severity"
        ) {
            return Err(Violation::new(
                "labels",
                format!("label {l:?} is set by the rule itself"),
            ));
        }
    }
    Ok(())
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use crate::testing::{parsed, refused};
    use crate::CollectorConfig;

    const RECEIVER: &str = "[receivers.oncall]\nurl = \"http://127.0.0.1:9000/hook\"\n";

    fn rule(body: &str) -> String {
        format!("[[alerts]]\nname = \"Slow\"\nthreshold = 500\nreceivers = [\"oncall\"]\n{body}\n{RECEIVER}")
    }

    fn key_of(text: &str) -> (String, String) {
        let e = refused::<CollectorConfig>("c.toml", text);
        (e.key().unwrap_or_default().to_string(), e.to_string())
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
[[alerts]]
name = "CheckoutSlow"
service = "checkout"
operation = "POST /pay"
signal = "latency_p99"
op = ">"
threshold = 500
window = "1m"
for = "30s"
severity = "critical"
summary = "p99 latency of {{service}} is {{value}} ms"
receivers = ["oncall"]

[receivers.oncall]
url = "http://127.0.0.1:9000/hook"
headers = { Authorization = "Bearer secret" }
"#;
        let c: CollectorConfig = parsed("c.toml", text);
        let r = &c.alerts[0];
        assert_eq!(r.signal, Some(super::AlertSignal::LatencyP99));
        assert_eq!(r.threshold, 500.0);
        assert_eq!(r.for_.get().as_secs(), 30);
        let rc = &c.receivers["oncall"];
        assert!(rc.send_resolved);
        assert_eq!(rc.headers["Authorization"], "Bearer secret");
    }

    #[test]
    fn bad_rules_name_the_key() {
        let (k, msg) = key_of(&rule("signal = \"latency_p98\""));
        assert_eq!(k, "alerts[0].signal", "{msg}");
        assert!(msg.contains("unknown variant `latency_p98`"), "{msg}");
        let (k, msg) = key_of(&rule("signal = \"error_rate\"\nwindow = \"5 fortnights\""));
        assert_eq!(k, "alerts[0].window", "{msg}");
        let (k, msg) = key_of(&format!(
            "[[alerts]]\nname = \"X\"\nsignal = \"error_rate\"\nthreshold = \"high\"\nreceivers = [\"oncall\"]\n{RECEIVER}"
        ));
        assert_eq!(k, "alerts[0].threshold", "{msg}");
        let (k, msg) = key_of(
            "[[alerts]]\nname = \"X\"\nsignal = \"error_rate\"\nthreshold = 0.1\nreceivers = [\"pager\"]\n",
        );
        assert_eq!(k, "alerts[0].receivers", "{msg}");
        assert!(msg.contains("no receiver \"pager\""), "{msg}");
        let (k, _) = key_of(&rule(""));
        assert_eq!(k, "alerts[0].signal");
        let (k, _) = key_of(&rule("signal = \"error_rate\"\nmetric = \"x\""));
        assert_eq!(k, "alerts[0].metric");
        let (k, _) = key_of(&rule("signal = \"error_rate\"\nop = \"=>\""));
        assert_eq!(k, "alerts[0].op");
        let (k, _) = key_of(&rule(
            "signal = \"error_rate\"\nlabels = { severity = \"x\" }",
        ));
        assert_eq!(k, "alerts[0].labels");
        let (k, _) = key_of(&rule("metric = \"q\"\naggregation = \"median\""));
        assert_eq!(k, "alerts[0].aggregation");
        let (k, _) = key_of(&format!("{}\n[[alerts]]\nname = \"Slow\"\nsignal = \"error_rate\"\nthreshold = 1\nreceivers = [\"oncall\"]\n", rule("signal = \"error_rate\"")));
        assert_eq!(k, "alerts[1].name");
    }

    #[test]
    fn debug_output_hides_header_values_and_tokens() {
        let text = format!(
            "[otlp.auth]\ntokens = [\"ingest-0123456789abcdef\"]\n{}",
            rule("signal = \"latency_p99\"")
        )
        .replace(
            "/hook\"\n",
            "/hook\"\nheaders = { Authorization = \"Bearer hook-secret\" }\n",
        );
        let c: CollectorConfig = parsed("c.toml", &text);
        let debug = format!("{c:#?}");
        assert!(debug.contains("Authorization"), "{debug}");
        assert!(!debug.contains("hook-secret"), "{debug}");
        assert!(!debug.contains("ingest-0123456789abcdef"), "{debug}");
    }

    #[test]
    fn bad_receivers_name_the_key() {
        let (k, _) = key_of("[receivers.a]\nurl = \"ftp://x\"\n");
        assert_eq!(k, "receivers.a.url");
        let (k, _) = key_of("[receivers.a]\nurl = \"http://x\"\nretries = 3\n");
        assert_eq!(k, "receivers.a.retries");
        let (k, _) =
            key_of("[receivers.a]\nurl = \"http://x\"\nheaders = { \"Bad Name\" = \"v\" }\n");
        assert_eq!(k, "receivers.a.headers");
        let (k, _) = key_of("[receivers.a]\nurl = \"http://x\"\ntimeout = \"0s\"\n");
        assert_eq!(k, "receivers.a.timeout");
        let (k, msg) =
            key_of("[receivers.a]\nurl = \"http://x\"\nallowed_networks = [\"10.0.0.0/33\"]\n");
        assert_eq!(k, "receivers.a.allowed_networks");
        assert!(msg.contains("\"10.0.0.0/33\""), "{msg}");
    }
}
