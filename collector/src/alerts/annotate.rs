//! Annotations of alert instances.

use lookout_config::{AlertRule, AlertSignal};

use super::model::{self, Labels};
use super::state::Instance;
use super::time::{ms, rfc3339_ms};

/// Annotations of an instance: summary, description, value, threshold, example trace
/// ids and, for span signals, a query for the traces behind the breach.
pub(super) fn annotations(
    rule: &AlertRule,
    inst: &Instance,
    trace_ids: &[String],
    external_url: &str,
    now: i64,
) -> Labels {
    let value = inst
        .value
        .map(model::human)
        .unwrap_or_else(|| "no data".into());
    let threshold = model::human(rule.threshold);
    let window = rule.window.to_string();
    let service = inst.labels.get("service").cloned().unwrap_or_default();
    let operation = inst.labels.get("operation").cloned().unwrap_or_default();
    let vars = [
        ("service", service.as_str()),
        ("operation", operation.as_str()),
        ("value", value.as_str()),
        ("threshold", threshold.as_str()),
        ("window", window.as_str()),
        ("rule", rule.name.as_str()),
    ];
    let summary = if rule.summary.is_empty() {
        format!(
            "{} of {} is {} ({} {} over {})",
            rule.signal.map_or_else(
                || rule.metric.clone().unwrap_or_default(),
                |s| s.as_str().to_string()
            ),
            if service.is_empty() {
                "all services"
            } else {
                &service
            },
            value,
            rule.op.as_str(),
            threshold,
            window
        )
    } else {
        model::render(&rule.summary, &vars, &inst.labels)
    };
    let mut a = Labels::new();
    a.insert("summary".into(), summary);
    if !rule.description.is_empty() {
        a.insert(
            "description".into(),
            model::render(&rule.description, &vars, &inst.labels),
        );
    }
    a.insert("value".into(), value.clone());
    a.insert("threshold".into(), threshold);
    if !trace_ids.is_empty() {
        a.insert("trace_ids".into(), trace_ids.join(","));
    }
    if let Some(q) = breach_query(rule, &service, &operation, external_url, now) {
        a.insert("query".into(), q);
    }
    a
}

/// The traces behind the breach of a span-signal rule: the service's traces of the
/// window, narrowed to errors or to slow ones as the signal says.
fn breach_query(
    rule: &AlertRule,
    service: &str,
    operation: &str,
    external_url: &str,
    now: i64,
) -> Option<String> {
    if rule.signal.is_none() || service.is_empty() {
        return None;
    }
    let from = now - ms(rule.window.get());
    let mut q = format!(
        "{external_url}/api/v1/traces?service={}&from={}&to={}",
        urlencode(service),
        urlencode(&rfc3339_ms(from)),
        urlencode(&rfc3339_ms(now)),
    );
    if !operation.is_empty() {
        q.push_str(&format!("&operation={}", urlencode(operation)));
    }
    match rule.signal {
        Some(AlertSignal::ErrorRate) => q.push_str("&status=error"),
        Some(
            AlertSignal::LatencyP50
            | AlertSignal::LatencyP90
            | AlertSignal::LatencyP95
            | AlertSignal::LatencyP99,
        ) => q.push_str(&format!(
            "&min_duration={}ms",
            rule.threshold.max(0.0).round()
        )),
        _ => {}
    }
    Some(q)
}

/// Percent-encoding of everything but unreserved characters.
pub(super) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoding() {
        assert_eq!(urlencode("POST /pay"), "POST%20%2Fpay");
    }
}
