//! Pieces of the Alertmanager data model: label fingerprints, the webhook (version 4)
//! body, the `/api/v2/alerts` body, and annotation templates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of an alert, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// Alertmanager's fingerprint of a label set: FNV-1a 64 over `name 0xff value 0xff` of
/// the labels in name order, as 16 hex digits (Prometheus `model.LabelsToSignature`).
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Alertmanager's zero time, the `endsAt` of a firing alert.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// One alert of a webhook body: the fields of a [`PostableAlert`] (`endsAt` is
/// [`ZERO_TIME`] while firing) between its status and its fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels, annotations (summary, description, value, threshold, example trace ids,
    /// query link), times and link.
    #[serde(flatten)]
    pub alert: PostableAlert,
    /// [`fingerprint`] of the labels.
    pub fingerprint: String,
}

/// The Alertmanager webhook body, version 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    /// Always `"4"`.
    pub version: String,
    /// Identifies the group: `{}:{label="value",...}` of the group labels.
    pub group_key: String,
    /// Alerts left out of this body (never any: bodies are not truncated).
    pub truncated_alerts: u64,
    /// `firing` when any alert of the body fires, else `resolved`.
    pub status: String,
    /// Receiver name.
    pub receiver: String,
    /// The labels the group is formed by.
    pub group_labels: Labels,
    /// Labels every alert of the body shares.
    pub common_labels: Labels,
    /// Annotations every alert of the body shares.
    pub common_annotations: Labels,
    /// Base URL of the collector.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of Alertmanager's `POST /api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// Identifying labels.
    pub labels: Labels,
    /// Annotations.
    pub annotations: Labels,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339: the resolve time, or a time shortly ahead while firing (Alertmanager
    /// resolves alerts that are not re-sent before it).
    pub ends_at: String,
    /// Link to the rule's state on this collector.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Labels shared by all of `sets`.
pub fn common(sets: &[&Labels]) -> Labels {
    let Some((first, rest)) = sets.split_first() else {
        return Labels::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|s| s.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Alertmanager's group key for group labels.
pub fn group_key(group_labels: &Labels) -> String {
    let inner: Vec<String> = group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{{}}:{{{}}}", inner.join(","))
}

/// Replace `{{name}}` placeholders (spaces inside the braces allowed) with `vars`, and
/// `{{labels.NAME}}` or `{{NAME}}` with label values; unknown placeholders stay as written.
pub fn render(template: &str, vars: &[(&str, &str)], labels: &Labels) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = after[..close].trim();
        let name = name.strip_prefix('.').unwrap_or(name);
        let value = vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .or_else(|| {
                labels
                    .get(name.strip_prefix("labels.").unwrap_or(name))
                    .map(String::as_str)
            });
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// A value for humans: integers without decimals, others with up to 3 significant
/// decimals.
pub fn human(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprint_matches_prometheus() {
        // Prometheus: model.LabelsToSignature(map[string]string{}) == 14695981039346656037
        assert_eq!(fingerprint(&Labels::new()), "cbf29ce484222325");
        // Values from Prometheus' signature_test.go (TestLabelsToSignature).
        assert_eq!(
            fingerprint(&labels(&[
                ("name", "garland, briggs"),
                ("fear", "love is not enough")
            ])),
            format!("{:016x}", 5799056148416392346u64)
        );
    }

    #[test]
    fn templates() {
        let l = labels(&[("service", "checkout"), ("region", "eu")]);
        let out = render(
            "p99 of {{service}} is {{ value }} ms (> {{threshold}}) in {{labels.region}} {{nope}}",
            &[("value", "612.5"), ("threshold", "500")],
            &l,
        );
        assert_eq!(out, "p99 of checkout is 612.5 ms (> 500) in eu {{nope}}");
        assert_eq!(render("unterminated {{x", &[], &l), "unterminated {{x");
        assert_eq!(render("{{ .service }}", &[], &l), "checkout");
    }

    #[test]
    fn human_values() {
        assert_eq!(human(500.0), "500");
        assert_eq!(human(612.456), "612.46");
        assert_eq!(human(0.25), "0.25");
        assert_eq!(human(0.123456), "0.1235");
    }

    #[test]
    fn webhook_alerts_are_postable_alerts_between_status_and_fingerprint() {
        let alert = WebhookAlert {
            status: "firing".into(),
            alert: PostableAlert {
                labels: labels(&[("alertname", "Slow")]),
                annotations: labels(&[("summary", "s")]),
                starts_at: "2024-01-01T00:00:00Z".into(),
                ends_at: ZERO_TIME.into(),
                generator_url: "http://c/api/v1/alerts#Slow".into(),
            },
            fingerprint: "f".into(),
        };
        let json = serde_json::to_string(&alert).unwrap();
        assert_eq!(
            json,
            r#"{"status":"firing","labels":{"alertname":"Slow"},"annotations":{"summary":"s"},"startsAt":"2024-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://c/api/v1/alerts#Slow","fingerprint":"f"}"#
        );
        let back: WebhookAlert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, alert);
    }

    #[test]
    fn group_keys() {
        assert_eq!(
            group_key(&labels(&[("alertname", "Slow"), ("service", "a\"b")])),
            r#"{}:{alertname="Slow",service="a\"b"}"#
        );
    }
}
