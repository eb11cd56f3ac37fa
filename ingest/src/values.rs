//! Conversions of OTLP values for indexing and for the query API.

use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue};
use lookout_proto::otlp::resource::v1::Resource;
use serde_json::{Map, Value};

/// The attributes of a resource; none when the resource is absent.
pub fn resource_attributes(resource: Option<&Resource>) -> &[KeyValue] {
    resource.map_or(&[], |r| r.attributes.as_slice())
}

/// `service.name` of a resource, `unknown_service` when absent.
pub fn service_name(attrs: &[KeyValue]) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(V::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "unknown_service".to_string())
}

/// An OTLP value as JSON (bytes as hex).
pub fn to_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(to_json).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(attrs_to_map(&kv.values)),
        Some(V::BytesValue(b)) => Value::String(hex::encode(b)),
        // An index into a profiles dictionary; meaningless outside profiles.
        Some(V::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// Attributes as a JSON object.
pub fn attrs_to_map(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, to_json),
            )
        })
        .collect()
}

/// A value as plain text: strings as they are, everything else as JSON.
pub fn to_text(v: &AnyValue) -> String {
    match &v.value {
        Some(V::StringValue(s)) => s.clone(),
        None => String::new(),
        _ => to_json(v).to_string(),
    }
}

/// RFC 3339 with nanoseconds, UTC.
pub fn rfc3339(unix_nano: u64) -> String {
    let nanos = i128::from(unix_nano);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_nano.to_string())
}

/// Lowercase hex of an id, `None` when empty.
pub fn hex_id(id: &[u8]) -> Option<String> {
    (!id.is_empty()).then(|| hex::encode(id))
}
