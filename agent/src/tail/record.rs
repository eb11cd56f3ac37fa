//! Turning a line (or multi-line record) into an OTLP `LogRecord`.

use lookout_proto::otlp::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, SeverityNumber};
use serde_json::{Map, Value};

/// Field names of the message (body) of a JSON line, first present wins.
const MESSAGE_KEYS: &[&str] = &["message", "msg", "body", "log"];
/// Field names of the severity.
const LEVEL_KEYS: &[&str] = &[
    "level",
    "severity",
    "lvl",
    "loglevel",
    "log_level",
    "log.level",
    "levelname",
    "severity_text",
];
/// Field names of the event time.
const TIME_KEYS: &[&str] = &["timestamp", "time", "ts", "@timestamp"];
/// Field names of the trace id (32 hex digits).
const TRACE_KEYS: &[&str] = &["trace_id", "traceId", "traceid", "trace.id"];
/// Field names of the span id (16 hex digits).
const SPAN_KEYS: &[&str] = &["span_id", "spanId", "spanid", "span.id"];
/// Most attributes taken from one JSON line; the rest are counted as dropped.
const MAX_ATTRIBUTES: usize = 128;
/// Deepest nesting flattened into dotted keys; deeper values are kept as JSON text.
const MAX_DEPTH: usize = 8;

/// A string `AnyValue`.
pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

/// Build the record of `raw` (a line or joined lines, terminators removed). Returns the
/// record and whether `json` was asked for but the text was not a JSON object.
pub fn build(raw: &[u8], json: bool, file_attrs: &[KeyValue], observed: u64) -> (LogRecord, bool) {
    let text = String::from_utf8_lossy(raw);
    let mut rec = LogRecord {
        observed_time_unix_nano: observed,
        ..LogRecord::default()
    };
    let mut non_json = false;
    if json {
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => fill_from_json(&mut rec, map, &text),
            _ => non_json = true,
        }
    }
    if rec.body.is_none() {
        rec.body = Some(string_value(text.into_owned()));
    }
    rec.attributes.extend(file_attrs.iter().cloned());
    (rec, non_json)
}

fn take_first(map: &mut Map<String, Value>, keys: &[&str]) -> Option<(String, Value)> {
    keys.iter().find_map(|k| map.remove_entry(*k))
}

fn fill_from_json(rec: &mut LogRecord, mut map: Map<String, Value>, text: &str) {
    rec.body = Some(match take_first(&mut map, MESSAGE_KEYS) {
        Some((_, Value::String(s))) => string_value(s),
        Some((_, v)) => to_any(v, 0),
        // No message field: the whole line is the body; the fields are still attributes.
        None => string_value(text),
    });
    if let Some((key, v)) = take_first(&mut map, LEVEL_KEYS) {
        match severity(&v) {
            Some((text, number)) => {
                rec.severity_text = text;
                rec.severity_number = number as i32;
            }
            None => {
                map.insert(key, v);
            }
        }
    }
    if let Some((key, v)) = take_first(&mut map, TIME_KEYS) {
        match timestamp(&v) {
            Some(ns) => rec.time_unix_nano = ns,
            None => {
                map.insert(key, v);
            }
        }
    }
    if let Some((key, v)) = take_first(&mut map, TRACE_KEYS) {
        match v.as_str().and_then(hex_id::<16>) {
            Some(id) => rec.trace_id = id.to_vec(),
            None => {
                map.insert(key, v);
            }
        }
    }
    if let Some((key, v)) = take_first(&mut map, SPAN_KEYS) {
        match v.as_str().and_then(hex_id::<8>) {
            Some(id) => rec.span_id = id.to_vec(),
            None => {
                map.insert(key, v);
            }
        }
    }
    let mut attrs = Vec::new();
    let mut dropped = 0u32;
    flatten("", map, 0, &mut attrs, &mut dropped);
    rec.attributes = attrs;
    rec.dropped_attributes_count = dropped;
}

fn flatten(
    prefix: &str,
    map: Map<String, Value>,
    depth: usize,
    out: &mut Vec<KeyValue>,
    dropped: &mut u32,
) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Null => {}
            Value::Object(inner) if depth < MAX_DEPTH => {
                flatten(&key, inner, depth + 1, out, dropped)
            }
            v if out.len() >= MAX_ATTRIBUTES => {
                let _ = v;
                *dropped += 1;
            }
            v => out.push(KeyValue {
                key,
                value: Some(to_any(v, depth)),
                ..KeyValue::default()
            }),
        }
    }
}

fn to_any(v: Value, depth: usize) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Some(V::IntValue(i)),
            None => n.as_f64().map(V::DoubleValue),
        },
        Value::String(s) => Some(V::StringValue(s)),
        Value::Array(items) if depth < MAX_DEPTH => Some(V::ArrayValue(ArrayValue {
            values: items.into_iter().map(|i| to_any(i, depth + 1)).collect(),
        })),
        other => Some(V::StringValue(other.to_string())),
    };
    AnyValue { value }
}

/// Severity text and number of a level field.
fn severity(v: &Value) -> Option<(String, SeverityNumber)> {
    use SeverityNumber as S;
    match v {
        Value::String(s) => {
            let n = match s.trim().to_ascii_lowercase().as_str() {
                "trace" | "trc" | "finest" => S::Trace,
                "debug" | "dbg" | "fine" | "finer" => S::Debug,
                "info" | "information" | "informational" | "inf" | "notice" => S::Info,
                "warn" | "warning" | "wrn" => S::Warn,
                "error" | "err" | "eror" | "severe" => S::Error,
                "fatal" | "critical" | "crit" | "panic" | "alert" | "emerg" | "emergency" => {
                    S::Fatal
                }
                _ => S::Unspecified,
            };
            Some((s.clone(), n))
        }
        Value::Number(n) => {
            // pino/bunyan levels: 10 trace ... 60 fatal; otherwise an OTel number 1-24.
            let n = n.as_u64()?;
            let num = match n {
                10 => S::Trace,
                20 => S::Debug,
                30 => S::Info,
                40 => S::Warn,
                50 => S::Error,
                60 => S::Fatal,
                1..=24 => S::try_from(i32::try_from(n).ok()?).ok()?,
                _ => return None,
            };
            let text = num.as_str_name().trim_start_matches("SEVERITY_NUMBER_");
            Some((text.to_string(), num))
        }
        _ => None,
    }
}

/// Nanoseconds since the epoch of an RFC 3339 string or a number of seconds, millis,
/// micros or nanos (guessed from the magnitude).
fn timestamp(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => {
            let t = time::OffsetDateTime::parse(
                s.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            u64::try_from(t.unix_timestamp_nanos()).ok()
        }
        Value::Number(n) => {
            let f = n.as_f64()?;
            if !f.is_finite() || f <= 0.0 {
                return None;
            }
            let mult: u64 = if f < 1e11 {
                1_000_000_000
            } else if f < 1e14 {
                1_000_000
            } else if f < 1e17 {
                1_000
            } else {
                1
            };
            if let Some(i) = n.as_u64() {
                return i.checked_mul(mult);
            }
            let whole = f.trunc();
            if whole >= u64::MAX as f64 {
                return None;
            }
            (whole as u64)
                .checked_mul(mult)?
                .checked_add((f.fract() * mult as f64).round() as u64)
        }
        _ => None,
    }
}

/// `N` bytes from `2N` hex digits, not all zero.
fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    (out != [0u8; N]).then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lookout_proto::attr;

    fn attr<'a>(r: &'a LogRecord, k: &str) -> Option<&'a any_value::Value> {
        r.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn json_fields_are_picked() {
        let line = br#"{"ts":"2024-05-01T10:00:00.5Z","level":"WARNING","msg":"disk low","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","http":{"status":503,"ok":false},"ratio":0.5,"tags":["a"],"nothing":null}"#;
        let (r, non_json) = build(line, true, &[attr::string("log.file.name", "a.log")], 7);
        assert!(!non_json);
        assert_eq!(r.body, Some(string_value("disk low")));
        assert_eq!(r.severity_text, "WARNING");
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.time_unix_nano, 1_714_557_600_500_000_000);
        assert_eq!(r.observed_time_unix_nano, 7);
        assert_eq!(r.trace_id.len(), 16);
        assert_eq!(r.trace_id[0], 0x4b);
        assert_eq!(r.span_id, vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(
            attr(&r, "http.status"),
            Some(&any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr(&r, "http.ok"),
            Some(&any_value::Value::BoolValue(false))
        );
        assert_eq!(attr(&r, "ratio"), Some(&any_value::Value::DoubleValue(0.5)));
        assert!(matches!(
            attr(&r, "tags"),
            Some(any_value::Value::ArrayValue(_))
        ));
        assert!(attr(&r, "nothing").is_none());
        assert!(attr(&r, "msg").is_none());
        assert!(attr(&r, "log.file.name").is_some());
    }

    #[test]
    fn epoch_numbers_by_magnitude() {
        let s = 1_714_557_600u64;
        for (v, want) in [
            (serde_json::json!(s), s * 1_000_000_000),
            (serde_json::json!(s * 1000), s * 1_000_000_000),
            (serde_json::json!(s * 1_000_000), s * 1_000_000_000),
            (
                serde_json::json!(s * 1_000_000_000 + 1),
                s * 1_000_000_000 + 1,
            ),
            (
                serde_json::json!(1_714_557_600.25),
                s * 1_000_000_000 + 250_000_000,
            ),
        ] {
            assert_eq!(timestamp(&v), Some(want), "{v}");
        }
        assert_eq!(timestamp(&serde_json::json!("yesterday")), None);
    }

    #[test]
    fn invalid_ids_and_levels_stay_attributes() {
        let (r, _) = build(
            br#"{"message":"m","trace_id":"xyz","level":{"a":1},"severity":"x"}"#,
            true,
            &[],
            0,
        );
        assert!(r.trace_id.is_empty());
        assert!(attr(&r, "trace_id").is_some());
        assert!(attr(&r, "level.a").is_some());
        let (r, _) = build(br#"{"level":30}"#, true, &[], 0);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert_eq!(r.body, Some(string_value(r#"{"level":30}"#)));
    }

    #[test]
    fn non_json_is_text() {
        let (r, non_json) = build(b"plain \xff text", true, &[], 0);
        assert!(non_json);
        assert_eq!(r.body, Some(string_value("plain \u{fffd} text")));
        let (_, non_json) = build(b"[1,2]", true, &[], 0);
        assert!(non_json);
        let (_, non_json) = build(b"plain", false, &[], 0);
        assert!(!non_json);
    }
}
