//! OpenTelemetry → Prometheus naming and labels, after the OpenTelemetry specification
//! "Prometheus and OpenMetrics Compatibility" (OTLP metric points to Prometheus):
//!
//! - metric names: characters outside `[a-zA-Z0-9_:]` become `_`, runs of `_` collapse
//!   to one, leading and trailing `_` are dropped (as the Collector's translator does)
//!   and a leading digit gets a `_` prefix;
//! - the unit becomes a suffix (`ms` → `_milliseconds`, `By` → `_bytes`, `KiBy` →
//!   `_kibibytes`, `By/s` → `_bytes_per_second`; `{packets}` annotations are dropped;
//!   `1` → `_ratio` for gauges only; unknown units are sanitised and appended), unless
//!   the name already ends with it; monotonic sums get `_total` (once);
//! - label names: characters outside `[a-zA-Z0-9_]` become `_`, runs of `_` collapse, a
//!   leading digit gets a `key_` prefix; attributes whose names collide after this are
//!   merged, values joined with `;` in the order of the original keys;
//! - resource: `service.namespace/service.name` → `job`, `service.instance.id` →
//!   `instance`, every other resource attribute goes on `target_info`;
//! - scope name and version → `otel_scope_name` and `otel_scope_version` labels.

use std::collections::BTreeMap;

use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue};

use lookout_ingest::values::to_text;

use super::expo::Kind;

/// The Prometheus type a metric is exposed as; it decides the unit and type suffixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromKind {
    /// OTLP gauge, or non-monotonic sum.
    Gauge,
    /// OTLP monotonic sum.
    Counter,
    /// OTLP histogram or exponential histogram.
    Histogram,
    /// OTLP summary.
    Summary,
}

impl From<PromKind> for Kind {
    fn from(kind: PromKind) -> Self {
        match kind {
            PromKind::Gauge => Kind::Gauge,
            PromKind::Counter => Kind::Counter,
            PromKind::Histogram => Kind::Histogram,
            PromKind::Summary => Kind::Summary,
        }
    }
}

/// A converted metric name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromName {
    /// The family name (OpenMetrics `# TYPE` name): for counters without `_total`.
    pub family: String,
    /// The Prometheus unit word (`seconds`, `bytes_per_second`, `ratio`), empty if none;
    /// when not empty, `family` ends with `_{unit}`.
    pub unit: String,
}

impl PromName {
    /// The name samples are exposed under (without `_bucket`/`_sum`/`_count`): the
    /// family name, plus `_total` for counters.
    pub fn exposed(&self, kind: PromKind) -> String {
        match kind {
            PromKind::Counter => format!("{}_total", self.family),
            _ => self.family.clone(),
        }
    }
}

/// Replace characters outside `[a-zA-Z0-9_:]` (or `[a-zA-Z0-9_]` without `colon`) with
/// `_` and collapse runs of `_`.
fn replace_invalid(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let ok = c.is_ascii_alphanumeric() || (colon && c == ':');
        let c = if ok { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    out
}

/// A valid Prometheus metric name for `name` (see the module docs); `None` when nothing
/// valid is left.
pub fn sanitize_metric_name(name: &str) -> Option<String> {
    let mut s = replace_invalid(name, true).trim_matches('_').to_string();
    if s.is_empty() {
        return None;
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    Some(s)
}

/// A valid Prometheus label name for an attribute key; `None` when nothing valid is left.
pub fn sanitize_label_name(key: &str) -> Option<String> {
    let s = replace_invalid(key, false);
    if s.is_empty() || s == "_" {
        return None;
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        return Some(format!("key_{s}"));
    }
    Some(s)
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// Remove `{...}` annotations (and a stray unmatched brace with what follows it).
fn drop_annotations(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0usize;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn sanitize_unit_part(u: &str) -> String {
    let s = replace_invalid(u, false);
    s.trim_matches('_').to_string()
}

/// The Prometheus unit word of an OTLP (UCUM) unit for a metric exposed as `kind`; empty
/// when the metric is unitless.
pub fn prometheus_unit(unit: &str, kind: PromKind) -> String {
    let unit = unit.trim();
    if unit == "1" {
        return if kind == PromKind::Gauge {
            "ratio".into()
        } else {
            String::new()
        };
    }
    let unit = drop_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (unit.trim(), ""),
    };
    let main = match unit_word(main) {
        Some(w) => w.to_string(),
        None if main == "1" => String::new(),
        None => sanitize_unit_part(main),
    };
    let per = match per_unit_word(per) {
        Some(w) => w.to_string(),
        None => sanitize_unit_part(per),
    };
    match (main.is_empty(), per.is_empty()) {
        (_, true) => main,
        (true, false) => format!("per_{per}"),
        (false, false) => format!("{main}_per_{per}"),
    }
}

/// Convert an OTLP metric name and unit to a Prometheus family name; `None` when the
/// name has no valid character.
pub fn convert_name(name: &str, unit: &str, kind: PromKind) -> Option<PromName> {
    let mut family = sanitize_metric_name(name)?;
    if kind == PromKind::Counter {
        if let Some(base) = family.strip_suffix("_total") {
            if !base.is_empty() {
                family.truncate(base.len());
            }
        }
    }
    let unit = prometheus_unit(unit, kind);
    if !unit.is_empty() && family != unit && !family.ends_with(&format!("_{unit}")) {
        family.push('_');
        family.push_str(&unit);
    }
    Some(PromName { family, unit })
}

/// An attribute value as a label value: strings as they are, other values as JSON (bytes
/// as hex), following the attribute specification's string conversion.
pub fn label_value(v: Option<&AnyValue>) -> String {
    match v {
        None => String::new(),
        Some(AnyValue {
            value: Some(V::StringValue(s)),
        }) => s.clone(),
        Some(v) => to_text(v),
    }
}

/// Labels from attributes: keys sanitised, `reserved` keys (after sanitising) prefixed
/// with `exported_`, keys that collide merged (values joined with `;`, ordered by the
/// original keys). Sorted by label name.
pub fn attribute_labels(attrs: &[KeyValue], reserved: &[&str]) -> Vec<(String, String)> {
    // label -> [(original key, value)]
    let mut by_label: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attrs {
        let Some(mut name) = sanitize_label_name(&kv.key) else {
            continue;
        };
        if reserved.contains(&name.as_str()) {
            name.insert_str(0, "exported_");
        }
        by_label
            .entry(name)
            .or_default()
            .push((kv.key.as_str(), label_value(kv.value.as_ref())));
    }
    by_label
        .into_iter()
        .map(|(name, mut vals)| {
            if vals.len() == 1 {
                let v = vals.pop().map(|(_, v)| v).unwrap_or_default();
                return (name, v);
            }
            vals.sort_by(|a, b| a.0.cmp(b.0));
            let joined: Vec<String> = vals.into_iter().map(|(_, v)| v).collect();
            (name, joined.join(";"))
        })
        .collect()
}

/// Where a resource's metrics come from: `job`, `instance`, and the labels of its
/// `target_info` (other resource attributes, sanitised, without `job` and `instance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `service.namespace/service.name`, or `service.name`; `unknown_service` when the
    /// resource has no name.
    pub job: String,
    /// `service.instance.id`, empty when absent.
    pub instance: String,
    /// Other resource attributes as labels, sorted.
    pub info: Vec<(String, String)>,
}

/// Resource attributes that are turned into `job` and `instance`.
const IDENTITY: [&str; 3] = ["service.name", "service.namespace", "service.instance.id"];

/// The target of a resource.
pub fn target(resource: &[KeyValue]) -> Target {
    let get = |key: &str| {
        resource
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| label_value(kv.value.as_ref()))
            .filter(|v| !v.is_empty())
    };
    let name = get("service.name").unwrap_or_else(|| "unknown_service".into());
    let job = match get("service.namespace") {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    };
    let instance = get("service.instance.id").unwrap_or_default();
    let rest: Vec<KeyValue> = resource
        .iter()
        .filter(|kv| !IDENTITY.contains(&kv.key.as_str()))
        .cloned()
        .collect();
    Target {
        job,
        instance,
        info: attribute_labels(&rest, &["job", "instance"]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn kv(k: &str, v: V) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(k: &str, v: &str) -> KeyValue {
        kv(k, V::StringValue(v.into()))
    }

    /// The naming rules of the specification and the collector's translator, as a table:
    /// OTLP name | unit | kind | exposed Prometheus name.
    #[test]
    fn naming_rules() {
        for case in [
            // Invalid characters, collapsed underscores, leading digit.
            "http.server.request.duration | s | histogram | http_server_request_duration_seconds",
            "(lambda).function.executions(#) |  | counter | lambda_function_executions_total",
            "foo..bar--baz |  | gauge | foo_bar_baz",
            "2xx.responses |  | counter | _2xx_responses_total",
            "ns:recorded |  | gauge | ns:recorded",
            "héllo |  | gauge | h_llo",
            // Units.
            "rpc.duration | ms | histogram | rpc_duration_milliseconds",
            "system.filesystem.usage | By | gauge | system_filesystem_usage_bytes",
            "heap | KiBy | gauge | heap_kibibytes",
            "temp | Cel | gauge | temp_celsius",
            "uptime | d | counter | uptime_days_total",
            "system.network.dropped | {packets} | counter | system_network_dropped_total",
            "system.network.dropped | packets | counter | system_network_dropped_packets_total",
            "system.memory.utilization | 1 | gauge | system_memory_utilization_ratio",
            "hits | 1 | counter | hits_total",
            "ratio.of.x | 1 | gauge | ratio_of_x_ratio",
            "x_ratio | 1 | gauge | x_ratio",
            "net.io | By/s | gauge | net_io_bytes_per_second",
            "speed | m/s | gauge | speed_meters_per_second",
            "queries | {query}/s | gauge | queries_per_second",
            "weird | foo/bar | gauge | weird_foo_per_bar",
            "cpu | % | gauge | cpu_percent",
            // No duplicate suffixes.
            "request_duration_seconds | s | histogram | request_duration_seconds",
            "http.requests.total |  | counter | http_requests_total",
            "io_bytes_total | By | counter | io_bytes_total",
            "io_total | By | counter | io_bytes_total",
            "queue.length_total |  | gauge | queue_length_total",
            "seconds_before_x | s | gauge | seconds_before_x_seconds",
            "total |  | counter | total_total",
        ] {
            let [name, unit, kind, want] = case.split('|').map(str::trim).collect::<Vec<_>>()[..]
            else {
                panic!("bad case {case:?}")
            };
            let kind = match kind {
                "counter" => PromKind::Counter,
                "gauge" => PromKind::Gauge,
                "histogram" => PromKind::Histogram,
                other => panic!("unknown kind {other:?}"),
            };
            let n = convert_name(name, unit, kind).unwrap();
            assert_eq!(n.exposed(kind), want, "{name} [{unit}] {kind:?}");
            if !n.unit.is_empty() {
                assert!(n.family.ends_with(&format!("_{}", n.unit)), "{n:?}");
            }
        }
        assert_eq!(convert_name("...", "s", PromKind::Gauge), None);
        assert_eq!(convert_name("", "", PromKind::Gauge), None);
    }

    #[test]
    fn labels() {
        assert_eq!(
            sanitize_label_name("http.method").as_deref(),
            Some("http_method")
        );
        assert_eq!(sanitize_label_name("a..b").as_deref(), Some("a_b"));
        assert_eq!(sanitize_label_name("1st").as_deref(), Some("key_1st"));
        assert_eq!(sanitize_label_name("_x").as_deref(), Some("_x"));
        assert_eq!(sanitize_label_name("__x").as_deref(), Some("_x"));
        assert_eq!(sanitize_label_name(".."), None);
        let got = attribute_labels(
            &[
                s("foo.bar", "2"),
                s("foo_bar", "1"),
                kv("n", V::IntValue(7)),
                kv("ok", V::BoolValue(true)),
                kv("d", V::DoubleValue(1.5)),
                s("le", "x"),
                s("job", "j"),
            ],
            &["le", "job", "instance"],
        );
        assert_eq!(
            got,
            [
                ("d", "1.5"),
                ("exported_job", "j"),
                ("exported_le", "x"),
                ("foo_bar", "2;1"),
                ("n", "7"),
                ("ok", "true"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn targets() {
        let t = target(&[
            s("service.name", "checkout"),
            s("service.namespace", "shop"),
            s("service.instance.id", "pod-1"),
            s("host.name", "h1"),
            s("telemetry.sdk.language", "rust"),
        ]);
        assert_eq!(t.job, "shop/checkout");
        assert_eq!(t.instance, "pod-1");
        assert_eq!(
            t.info,
            [("host_name", "h1"), ("telemetry_sdk_language", "rust")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        let t = target(&[]);
        assert_eq!(
            (t.job.as_str(), t.instance.as_str()),
            ("unknown_service", "")
        );
        assert!(t.info.is_empty());
    }
}
