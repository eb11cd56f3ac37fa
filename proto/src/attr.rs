//! Constructors of OTLP attributes (`KeyValue`), for code that builds requests: the load
//! generator, the agent's enrichment and host metrics, the demo, tests and benches.

use crate::otlp::common::v1::{any_value::Value, AnyValue, KeyValue};

fn with(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute; an owned `String` value is moved in, not copied.
pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    with(key, Value::StringValue(value.into()))
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    with(key, Value::IntValue(value))
}

/// A floating-point attribute.
pub fn double(key: &str, value: f64) -> KeyValue {
    with(key, Value::DoubleValue(value))
}

/// A boolean attribute.
pub fn bool(key: &str, value: bool) -> KeyValue {
    with(key, Value::BoolValue(value))
}
