//! OTLP/JSON decoding, streamed from the parser straight into the prost messages.
//!
//! No `serde_json::Value` tree of the document is built: objects and arrays are walked
//! as they are parsed, only scalars become (leaf) `Value`s, and unknown members are
//! skipped without being allocated. Every heap byte the decoded message takes (strings,
//! ids, the element arrays of repeated fields) is counted as it is allocated and
//! reported to the caller's `grow` callback in steps, so that a caller can stop a
//! request whose decoded form would not fit its memory budget before it is built.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::marker::PhantomData;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::path::Path;
use super::{Grow, JsonError, MAX_ANY_VALUE_DEPTH, MAX_JSON_DEPTH};
use crate::otlp::collector::logs::v1::ExportLogsServiceRequest;
use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::collector::trace::v1::ExportTraceServiceRequest;
use crate::otlp::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use crate::otlp::metrics::v1::{
    exemplar, exponential_histogram_data_point::Buckets, metric, number_data_point,
    summary_data_point::ValueAtQuantile, AggregationTemporality, Exemplar, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use crate::otlp::resource::v1::Resource;
use crate::otlp::trace::v1::span::{Event, Link, SpanKind};
use crate::otlp::trace::v1::status::StatusCode;
use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// What every decoding step returns: the decoded value or the fault with its field path.
type DecodeResult<T> = Result<T, JsonError>;

/// `grow` is called each time this many more bytes have been counted.
const GROW_STEP: u64 = 64 << 10;

fn err(p: &Path<'_>, reason: impl Into<String>) -> JsonError {
    JsonError {
        path: p.render(),
        reason: reason.into(),
    }
}

/// Decodes the message `T` from `body`, reporting its growing heap size to `grow`.
pub(super) fn decode<T: Message>(body: &[u8], grow: Grow<'_>) -> DecodeResult<T> {
    let root = Path::root();
    check_depth(body)?;
    let cx = Cx {
        fault: RefCell::new(None),
        used: Cell::new(0),
        reported: Cell::new(0),
        grow: RefCell::new(grow),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    // `check_depth` bounds the nesting, so the parser's own limit (128) can go: it would
    // reject legitimate `AnyValue`s nested 40 levels deep.
    de.disable_recursion_limit();
    let seed = MessageSeed::<T> {
        cx: &cx,
        path: &root,
        depth: 0,
        null_ok: false,
        _t: PhantomData,
    };
    let decoded = seed
        .deserialize(&mut de)
        .and_then(|msg| de.end().map(|()| msg));
    match decoded {
        Ok(msg) => Ok(msg.unwrap_or_default()),
        // A fault of ours travels through the parser as an opaque error; the parser's own
        // (syntax, UTF-8, trailing characters) are about the document as a whole.
        Err(e) => Err(cx
            .fault
            .into_inner()
            .unwrap_or_else(|| err(&root, e.to_string()))),
    }
}

/// Fails when arrays and objects nest deeper than `MAX_JSON_DEPTH`, in one linear scan
/// that skips string contents. Syntax errors are left to the parser.
fn check_depth(body: &[u8]) -> DecodeResult<()> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(err(
                        &Path::root(),
                        format!(
                            "json nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
                        ),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Streaming

/// State shared by every step of one decode.
pub(super) struct Cx<'g> {
    /// The first fault found; the parser carries only an opaque error up to `decode`.
    fault: RefCell<Option<JsonError>>,
    /// Heap bytes of the message decoded so far.
    used: Cell<u64>,
    /// `used` when `grow` was last told.
    reported: Cell<u64>,
    grow: RefCell<Grow<'g>>,
}

impl Cx<'_> {
    /// Records `e` (the first fault wins) and returns the error that unwinds the parser.
    fn fail<E: de::Error>(&self, e: JsonError) -> E {
        let mut fault = self.fault.borrow_mut();
        if fault.is_none() {
            *fault = Some(e);
        }
        E::custom("invalid OTLP/JSON")
    }

    /// Counts `bytes` about to be (or just) allocated at `p`.
    fn count<E: de::Error>(&self, bytes: usize, p: &Path<'_>) -> Result<(), E> {
        let used = self.used.get().saturating_add(bytes as u64);
        self.used.set(used);
        if used < self.reported.get().saturating_add(GROW_STEP) {
            return Ok(());
        }
        self.reported.set(used);
        let told = (self.grow.borrow_mut())(used);
        told.map_err(|reason| self.fail(err(p, reason)))
    }
}

/// Heap bytes of a decoded scalar.
pub(super) trait Heap {
    fn heap(&self) -> usize {
        0
    }
}

impl Heap for String {
    fn heap(&self) -> usize {
        self.capacity()
    }
}

impl Heap for Vec<u8> {
    fn heap(&self) -> usize {
        self.capacity()
    }
}

impl Heap for u64 {}
impl Heap for i64 {}
impl Heap for u32 {}
impl Heap for i32 {}
impl Heap for f64 {}
impl Heap for bool {}

/// An OTLP message decoded from a JSON object, member by member.
pub(super) trait Message: Default {
    /// Decodes the member `m.key` into `self`. A member it does not read is skipped.
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error>;

    /// Checked before the first member is read.
    fn enter(_p: &Path<'_>, _depth: usize) -> DecodeResult<()> {
        Ok(())
    }
}

/// One member of an object being decoded: its key, its path, and its value still in the
/// parser, to be read once by one of the methods below.
pub(super) struct Member<'a, 'g, 'de, A> {
    map: &'a mut A,
    cx: &'a Cx<'g>,
    /// The object's path (for faults about the object, such as a second oneof member).
    obj: &'a Path<'a>,
    /// The member's path.
    path: &'a Path<'a>,
    key: &'a str,
    /// Nesting of `AnyValue`s at the object: 0 outside attributes and bodies.
    depth: usize,
    read: bool,
    _de: PhantomData<&'de ()>,
}

impl<'de, A: MapAccess<'de>> Member<'_, '_, 'de, A> {
    fn fail(&self, e: JsonError) -> A::Error {
        self.cx.fail(e)
    }

    /// The value as a leaf `Value` (objects and arrays are skipped and stand as empty
    /// ones, for the type fault); `None` for `null`, which is the default value.
    fn scalar(&mut self) -> Result<Option<Value>, A::Error> {
        self.read = true;
        let v = self.map.next_value_seed(ScalarSeed)?;
        Ok((!v.is_null()).then_some(v))
    }

    /// A scalar through `f`, or `None` for `null`.
    fn take<T: Heap>(
        &mut self,
        f: impl FnOnce(Value, &Path<'_>) -> DecodeResult<T>,
    ) -> Result<Option<T>, A::Error> {
        let Some(v) = self.scalar()? else {
            return Ok(None);
        };
        let x = f(v, self.path).map_err(|e| self.fail(e))?;
        self.cx.count(x.heap(), self.path)?;
        Ok(Some(x))
    }

    /// Sets `dst` to a scalar read by `f` (by reference), unless the value is `null`.
    fn set<T: Heap>(
        &mut self,
        dst: &mut T,
        f: impl FnOnce(&Value, &Path<'_>) -> DecodeResult<T>,
    ) -> Result<(), A::Error> {
        if let Some(x) = self.take(|v, p| f(&v, p))? {
            *dst = x;
        }
        Ok(())
    }

    /// Sets `dst` to `Some` of a scalar read by `f`, unless the value is `null`.
    fn opt<T: Heap>(
        &mut self,
        dst: &mut Option<T>,
        f: impl FnOnce(&Value, &Path<'_>) -> DecodeResult<T>,
    ) -> Result<(), A::Error> {
        if let Some(x) = self.take(|v, p| f(&v, p))? {
            *dst = Some(x);
        }
        Ok(())
    }

    /// Sets `dst` to a string, unless the value is `null`.
    fn string(&mut self, dst: &mut String) -> Result<(), A::Error> {
        if let Some(s) = self.take(string)? {
            *dst = s;
        }
        Ok(())
    }

    /// A nested message at AnyValue depth `depth`, or `None` for `null`.
    fn message<T: Message>(&mut self, depth: usize) -> Result<Option<T>, A::Error> {
        self.read = true;
        self.map.next_value_seed(MessageSeed::<T> {
            cx: self.cx,
            path: self.path,
            depth,
            null_ok: true,
            _t: PhantomData,
        })
    }

    /// Sets `dst` to `Some` of a nested message, unless the value is `null`.
    fn set_message<T: Message>(&mut self, dst: &mut Option<T>) -> Result<(), A::Error> {
        if let Some(x) = self.message(self.depth)? {
            *dst = Some(x);
        }
        Ok(())
    }

    /// Sets `dst` to a repeated field whose elements are at AnyValue depth `depth`,
    /// unless the value is `null`. Every element must decode; none is skipped.
    fn list<T: Element>(&mut self, dst: &mut Vec<T>, depth: usize) -> Result<(), A::Error> {
        self.read = true;
        let list = self.map.next_value_seed(ListSeed::<T> {
            cx: self.cx,
            path: self.path,
            depth,
            _t: PhantomData,
        })?;
        if let Some(list) = list {
            *dst = list;
        }
        Ok(())
    }

    /// `attributes`: key-values at AnyValue depth 1.
    fn attributes(&mut self, dst: &mut Vec<KeyValue>) -> Result<(), A::Error> {
        self.list(dst, 1)
    }

    /// Stores `value` in the oneof `dst` named `name`: a second, different member of the
    /// same oneof is a fault (a repeated key replaces, as for any member).
    fn one_of<V>(
        &self,
        dst: &mut Option<V>,
        value: Option<V>,
        name: impl Fn(&V) -> &'static str,
    ) -> Result<(), A::Error> {
        let Some(value) = value else {
            return Ok(());
        };
        if let Some(first) = dst.as_ref().map(&name) {
            if first != self.key {
                return Err(self.fail(one_of(self.obj, first, self.key)));
            }
        }
        *dst = Some(value);
        Ok(())
    }
}

/// A member key: borrowed from the input unless it holds escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl std::ops::Deref for Key<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(s))
    }
}

/// Reads any value as a leaf `Value`; an object or array is skipped (nothing of it is
/// kept) and stands as an empty one, so that the scalar's reader names the type fault.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        // The parser yields finite doubles only.
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Value, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Array(Vec::new()))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Value, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Object(Map::new()))
    }
}

/// Decodes a message `T` from an object; `None` for `null` where that is allowed (a
/// member), a fault where it is not (the document, an element of a repeated field).
struct MessageSeed<'a, 'g, T> {
    cx: &'a Cx<'g>,
    path: &'a Path<'a>,
    depth: usize,
    null_ok: bool,
    _t: PhantomData<T>,
}

impl<T: Message> MessageSeed<'_, '_, T> {
    fn not_object<E: de::Error>(&self, got: &str) -> E {
        self.cx
            .fail(err(self.path, format!("expected object, got {got}")))
    }
}

impl<'de, T: Message> DeserializeSeed<'de> for MessageSeed<'_, '_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Message> Visitor<'de> for MessageSeed<'_, '_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<T>, M::Error> {
        T::enter(self.path, self.depth).map_err(|e| self.cx.fail(e))?;
        let mut out = T::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = self.path.key(&key);
            let mut m = Member {
                map: &mut map,
                cx: self.cx,
                obj: self.path,
                path: &path,
                key: &key,
                depth: self.depth,
                read: false,
                _de: PhantomData,
            };
            out.member(&mut m)?;
            if !m.read {
                m.map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(out))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        if self.null_ok {
            Ok(None)
        } else {
            Err(self.not_object("null"))
        }
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        self.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Err(self.not_object("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Err(self.not_object("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Err(self.not_object("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Err(self.not_object("number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<T>, E> {
        Err(self.not_object("string"))
    }
    fn visit_seq<S: SeqAccess<'de>>(self, _: S) -> Result<Option<T>, S::Error> {
        Err(self.not_object("array"))
    }
}

/// An element of a repeated field.
pub(super) trait Element: Sized {
    fn decode<'de, D: Deserializer<'de>>(
        d: D,
        cx: &Cx<'_>,
        p: &Path<'_>,
        depth: usize,
    ) -> Result<Self, D::Error>;
}

impl<T: Message> Element for T {
    fn decode<'de, D: Deserializer<'de>>(
        d: D,
        cx: &Cx<'_>,
        p: &Path<'_>,
        depth: usize,
    ) -> Result<T, D::Error> {
        let seed = MessageSeed::<T> {
            cx,
            path: p,
            depth,
            null_ok: false,
            _t: PhantomData,
        };
        Ok(seed.deserialize(d)?.unwrap_or_default())
    }
}

impl Element for u64 {
    fn decode<'de, D: Deserializer<'de>>(
        d: D,
        cx: &Cx<'_>,
        p: &Path<'_>,
        _: usize,
    ) -> Result<u64, D::Error> {
        uint64(&ScalarSeed.deserialize(d)?, p).map_err(|e| cx.fail(e))
    }
}

impl Element for f64 {
    fn decode<'de, D: Deserializer<'de>>(
        d: D,
        cx: &Cx<'_>,
        p: &Path<'_>,
        _: usize,
    ) -> Result<f64, D::Error> {
        double(&ScalarSeed.deserialize(d)?, p).map_err(|e| cx.fail(e))
    }
}

/// One element of a repeated field, at its index's path.
struct ElementSeed<'a, 'g, T> {
    cx: &'a Cx<'g>,
    path: &'a Path<'a>,
    depth: usize,
    _t: PhantomData<T>,
}

impl<'de, T: Element> DeserializeSeed<'de> for ElementSeed<'_, '_, T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        T::decode(d, self.cx, self.path, self.depth)
    }
}

/// A repeated field: an array, or `None` for `null`.
struct ListSeed<'a, 'g, T> {
    cx: &'a Cx<'g>,
    path: &'a Path<'a>,
    depth: usize,
    _t: PhantomData<T>,
}

impl<T> ListSeed<'_, '_, T> {
    fn not_array<E: de::Error>(&self, got: &str) -> E {
        self.cx
            .fail(err(self.path, format!("expected array, got {got}")))
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for ListSeed<'_, '_, T> {
    type Value = Option<Vec<T>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Vec<T>>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for ListSeed<'_, '_, T> {
    type Value = Option<Vec<T>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Option<Vec<T>>, S::Error> {
        let mut out: Vec<T> = Vec::new();
        loop {
            let path = self.path.index(out.len());
            if out.len() == out.capacity() {
                // Count the growth before it is allocated.
                let more = out.capacity().max(4);
                self.cx
                    .count(more.saturating_mul(std::mem::size_of::<T>()), &path)?;
                out.reserve_exact(more);
            }
            let seed = ElementSeed::<T> {
                cx: self.cx,
                path: &path,
                depth: self.depth,
                _t: PhantomData,
            };
            match seq.next_element_seed(seed)? {
                Some(x) => out.push(x),
                None => break,
            }
        }
        Ok(Some(out))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Vec<T>>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Vec<T>>, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<Vec<T>>, E> {
        Err(self.not_array("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<Vec<T>>, E> {
        Err(self.not_array("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<Vec<T>>, E> {
        Err(self.not_array("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<Vec<T>>, E> {
        Err(self.not_array("number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Option<Vec<T>>, E> {
        Err(self.not_array("string"))
    }
    fn visit_map<M: MapAccess<'de>>(self, _: M) -> Result<Option<Vec<T>>, M::Error> {
        Err(self.not_array("object"))
    }
}

// ---------------------------------------------------------------------------------------
// Scalars

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected(p: &Path<'_>, what: &str, v: &Value) -> JsonError {
    err(p, format!("expected {what}, got {}", kind(v)))
}

fn string(v: Value, p: &Path<'_>) -> DecodeResult<String> {
    match v {
        Value::String(s) => Ok(s),
        v => Err(expected(p, "string", &v)),
    }
}

fn boolean(v: &Value, p: &Path<'_>) -> DecodeResult<bool> {
    v.as_bool().ok_or_else(|| expected(p, "boolean", v))
}

/// Largest integer that a double holds exactly: integers written in float notation
/// (`1e3`, `5.0`) are accepted up to this magnitude only, so that no digit is lost silently.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// An integer written as a JSON number or a decimal string, checked against `[min, max]`.
fn integer(v: &Value, p: &Path<'_>, min: i128, max: i128, ty: &str) -> DecodeResult<i128> {
    let n = match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                i128::from(u)
            } else if let Some(i) = n.as_i64() {
                i128::from(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() || f.fract() != 0.0 {
                    return Err(err(p, format!("expected an integer, got {n}")));
                }
                if f.abs() > MAX_EXACT_FLOAT_INT {
                    if f < min as f64 || f > max as f64 {
                        return Err(err(p, format!("{n} is out of range for {ty}")));
                    }
                    return Err(err(
                        p,
                        format!("integer {n} in float notation is not exact; write it without fraction or exponent"),
                    ));
                }
                // Integral and within ±2^53: the conversion is exact.
                f as i128
            }
        }
        Value::String(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(p, format!("expected an integer, got {v}")));
            }
            // At most 39 digits fit an i128; longer strings are out of range anyway.
            match s.parse::<i128>() {
                Ok(n) => n,
                Err(_) => return Err(err(p, format!("{v} is out of range for {ty}"))),
            }
        }
        _ => return Err(expected(p, "integer", v)),
    };
    if n < 0 && min == 0 {
        return Err(err(
            p,
            format!("expected a non-negative integer ({ty}), got {n}"),
        ));
    }
    if n < min || n > max {
        return Err(err(p, format!("{n} is out of range for {ty}")));
    }
    Ok(n)
}

fn uint64(v: &Value, p: &Path<'_>) -> DecodeResult<u64> {
    let n = integer(v, p, 0, i128::from(u64::MAX), "uint64")?;
    u64::try_from(n).map_err(|_| err(p, format!("{n} is out of range for uint64")))
}

fn int64(v: &Value, p: &Path<'_>) -> DecodeResult<i64> {
    let n = integer(v, p, i128::from(i64::MIN), i128::from(i64::MAX), "int64")?;
    i64::try_from(n).map_err(|_| err(p, format!("{n} is out of range for int64")))
}

fn uint32(v: &Value, p: &Path<'_>) -> DecodeResult<u32> {
    let n = integer(v, p, 0, i128::from(u32::MAX), "uint32")?;
    u32::try_from(n).map_err(|_| err(p, format!("{n} is out of range for uint32")))
}

fn int32(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    let n = integer(v, p, i128::from(i32::MIN), i128::from(i32::MAX), "int32")?;
    i32::try_from(n).map_err(|_| err(p, format!("{n} is out of range for int32")))
}

/// A double: a JSON number, `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal string.
fn double(v: &Value, p: &Path<'_>) -> DecodeResult<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| err(p, format!("expected a number, got {n}"))),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => {
                let numeric = !s.is_empty()
                    && s.bytes().any(|b| b.is_ascii_digit())
                    && s.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                match s.parse::<f64>() {
                    Ok(f) if numeric && f.is_finite() => Ok(f),
                    Ok(_) if numeric => Err(err(p, format!("{v} is out of range for double"))),
                    _ => Err(err(p, format!("expected a number, got {v}"))),
                }
            }
        },
        _ => Err(expected(p, "number", v)),
    }
}

/// An enum: its integer value (unknown values are kept, proto3 enums are open) or its
/// proto name.
fn enumeration(
    v: &Value,
    p: &Path<'_>,
    ty: &str,
    from_name: impl Fn(&str) -> Option<i32>,
) -> DecodeResult<i32> {
    match v {
        Value::String(s) => from_name(s).ok_or_else(|| err(p, format!("unknown {ty} {v}"))),
        Value::Number(_) => int32(v, p),
        _ => Err(expected(p, &format!("{ty} (integer or name)"), v)),
    }
}

fn span_kind(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "span kind", |s| {
        SpanKind::from_str_name(s).map(|e| e as i32)
    })
}

fn status_code(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "status code", |s| {
        StatusCode::from_str_name(s).map(|e| e as i32)
    })
}

fn severity_number(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "severity number", |s| {
        SeverityNumber::from_str_name(s).map(|e| e as i32)
    })
}

fn temporality(v: &Value, p: &Path<'_>) -> DecodeResult<i32> {
    enumeration(v, p, "aggregation temporality", |s| {
        AggregationTemporality::from_str_name(s).map(|e| e as i32)
    })
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A trace id (`len` 16) or span id (`len` 8): hex of either case; `""` is absent.
fn id(v: &Value, p: &Path<'_>, len: usize) -> DecodeResult<Vec<u8>> {
    let s = match v {
        Value::String(s) => s,
        _ => return Err(expected(p, "hex string", v)),
    };
    if let Some((i, c)) = s.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(err(
            p,
            format!("invalid hex character {c:?} at position {i}"),
        ));
    }
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.len() != 2 * len {
        return Err(err(
            p,
            format!("expected {} hex characters, got {}", 2 * len, s.len()),
        ));
    }
    Ok(s.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let hi = hex_digit(pair[0]).unwrap_or(0);
            let lo = hex_digit(pair[1]).unwrap_or(0);
            hi << 4 | lo
        })
        .collect())
}

const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Bytes: base64, standard or URL-safe alphabet, padded or not.
fn bytes(v: &Value, p: &Path<'_>) -> DecodeResult<Vec<u8>> {
    let s = match v {
        Value::String(s) => s,
        _ => return Err(expected(p, "base64 string", v)),
    };
    let engine = if s.bytes().any(|b| b == b'-' || b == b'_') {
        &BASE64_URL_SAFE
    } else {
        &BASE64_STANDARD
    };
    engine.decode(s).map_err(|e| {
        let reason = match e {
            DecodeError::InvalidByte(at, b) => {
                format!(
                    "invalid base64 character {:?} at position {at}",
                    char::from(b)
                )
            }
            DecodeError::InvalidLength(n) => format!("invalid base64 length {n}"),
            DecodeError::InvalidLastSymbol(at, b) => format!(
                "invalid last base64 character {:?} at position {at}",
                char::from(b)
            ),
            DecodeError::InvalidPadding => "invalid base64 padding".to_owned(),
        };
        err(p, reason)
    })
}

/// Reports a second member of a oneof.
fn one_of(p: &Path<'_>, first: &str, second: &str) -> JsonError {
    err(p, format!("only one of {first} and {second} may be set"))
}

// ---------------------------------------------------------------------------------------
// Common

/// The member name of a value of the `AnyValue` oneof.
fn any_value_name(v: &any_value::Value) -> &'static str {
    use any_value::Value as V;
    match v {
        V::StringValue(_) => "stringValue",
        V::BoolValue(_) => "boolValue",
        V::IntValue(_) => "intValue",
        V::DoubleValue(_) => "doubleValue",
        V::ArrayValue(_) => "arrayValue",
        V::KvlistValue(_) => "kvlistValue",
        V::BytesValue(_) => "bytesValue",
        // Not carried in OTLP/JSON (profiles only), so never decoded.
        V::StringValueStrindex(_) => "stringValueStrindex",
    }
}

impl Message for AnyValue {
    fn enter(p: &Path<'_>, depth: usize) -> DecodeResult<()> {
        if depth > MAX_ANY_VALUE_DEPTH {
            return Err(err(
                p,
                format!("value nested deeper than {MAX_ANY_VALUE_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        use any_value::Value as V;
        let value = match m.key {
            "stringValue" => m.take(string)?.map(V::StringValue),
            "boolValue" => m.take(|v, p| boolean(&v, p))?.map(V::BoolValue),
            "intValue" => m.take(|v, p| int64(&v, p))?.map(V::IntValue),
            "doubleValue" => m.take(|v, p| double(&v, p))?.map(V::DoubleValue),
            "arrayValue" => m.message(m.depth)?.map(V::ArrayValue),
            "kvlistValue" => m.message(m.depth)?.map(V::KvlistValue),
            "bytesValue" => m.take(|v, p| bytes(&v, p))?.map(V::BytesValue),
            _ => return Ok(()),
        };
        m.one_of(&mut self.value, value, any_value_name)
    }
}

impl Message for ArrayValue {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        if m.key == "values" {
            m.list(&mut self.values, m.depth + 1)?;
        }
        Ok(())
    }
}

impl Message for KeyValueList {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        if m.key == "values" {
            m.list(&mut self.values, m.depth + 1)?;
        }
        Ok(())
    }
}

impl Message for KeyValue {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "key" => m.string(&mut self.key),
            "value" => m.set_message(&mut self.value),
            _ => Ok(()),
        }
    }
}

impl Message for Resource {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            _ => Ok(()),
        }
    }
}

impl Message for InstrumentationScope {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "name" => m.string(&mut self.name),
            "version" => m.string(&mut self.version),
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Traces

impl Message for ExportTraceServiceRequest {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resourceSpans" => m.list(&mut self.resource_spans, 0),
            _ => Ok(()),
        }
    }
}

impl Message for ResourceSpans {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resource" => m.set_message(&mut self.resource),
            "scopeSpans" => m.list(&mut self.scope_spans, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl Message for ScopeSpans {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "scope" => m.set_message(&mut self.scope),
            "spans" => m.list(&mut self.spans, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

fn trace_id(v: &Value, p: &Path<'_>) -> DecodeResult<Vec<u8>> {
    id(v, p, 16)
}

fn span_id(v: &Value, p: &Path<'_>) -> DecodeResult<Vec<u8>> {
    id(v, p, 8)
}

impl Message for Span {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "traceId" => m.set(&mut self.trace_id, trace_id),
            "spanId" => m.set(&mut self.span_id, span_id),
            "traceState" => m.string(&mut self.trace_state),
            "parentSpanId" => m.set(&mut self.parent_span_id, span_id),
            "flags" => m.set(&mut self.flags, uint32),
            "name" => m.string(&mut self.name),
            "kind" => m.set(&mut self.kind, span_kind),
            "startTimeUnixNano" => m.set(&mut self.start_time_unix_nano, uint64),
            "endTimeUnixNano" => m.set(&mut self.end_time_unix_nano, uint64),
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            "events" => m.list(&mut self.events, 0),
            "droppedEventsCount" => m.set(&mut self.dropped_events_count, uint32),
            "links" => m.list(&mut self.links, 0),
            "droppedLinksCount" => m.set(&mut self.dropped_links_count, uint32),
            "status" => m.set_message(&mut self.status),
            _ => Ok(()),
        }
    }
}

impl Message for Event {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "timeUnixNano" => m.set(&mut self.time_unix_nano, uint64),
            "name" => m.string(&mut self.name),
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            _ => Ok(()),
        }
    }
}

impl Message for Link {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "traceId" => m.set(&mut self.trace_id, trace_id),
            "spanId" => m.set(&mut self.span_id, span_id),
            "traceState" => m.string(&mut self.trace_state),
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            "flags" => m.set(&mut self.flags, uint32),
            _ => Ok(()),
        }
    }
}

impl Message for Status {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "message" => m.string(&mut self.message),
            "code" => m.set(&mut self.code, status_code),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Logs

impl Message for ExportLogsServiceRequest {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resourceLogs" => m.list(&mut self.resource_logs, 0),
            _ => Ok(()),
        }
    }
}

impl Message for ResourceLogs {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resource" => m.set_message(&mut self.resource),
            "scopeLogs" => m.list(&mut self.scope_logs, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl Message for ScopeLogs {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "scope" => m.set_message(&mut self.scope),
            "logRecords" => m.list(&mut self.log_records, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl Message for LogRecord {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "timeUnixNano" => m.set(&mut self.time_unix_nano, uint64),
            "observedTimeUnixNano" => m.set(&mut self.observed_time_unix_nano, uint64),
            "severityNumber" => m.set(&mut self.severity_number, severity_number),
            "severityText" => m.string(&mut self.severity_text),
            "body" => {
                if let Some(body) = m.message(1)? {
                    self.body = Some(body);
                }
                Ok(())
            }
            "attributes" => m.attributes(&mut self.attributes),
            "droppedAttributesCount" => m.set(&mut self.dropped_attributes_count, uint32),
            "flags" => m.set(&mut self.flags, uint32),
            "traceId" => m.set(&mut self.trace_id, trace_id),
            "spanId" => m.set(&mut self.span_id, span_id),
            "eventName" => m.string(&mut self.event_name),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

impl Message for ExportMetricsServiceRequest {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resourceMetrics" => m.list(&mut self.resource_metrics, 0),
            _ => Ok(()),
        }
    }
}

impl Message for ResourceMetrics {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "resource" => m.set_message(&mut self.resource),
            "scopeMetrics" => m.list(&mut self.scope_metrics, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

impl Message for ScopeMetrics {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "scope" => m.set_message(&mut self.scope),
            "metrics" => m.list(&mut self.metrics, 0),
            "schemaUrl" => m.string(&mut self.schema_url),
            _ => Ok(()),
        }
    }
}

/// The member name of a value of the `Metric.data` oneof.
fn metric_data_name(d: &metric::Data) -> &'static str {
    use metric::Data;
    match d {
        Data::Gauge(_) => "gauge",
        Data::Sum(_) => "sum",
        Data::Histogram(_) => "histogram",
        Data::ExponentialHistogram(_) => "exponentialHistogram",
        Data::Summary(_) => "summary",
    }
}

impl Message for Metric {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        use metric::Data;
        let data = match m.key {
            "name" => return m.string(&mut self.name),
            "description" => return m.string(&mut self.description),
            "unit" => return m.string(&mut self.unit),
            "metadata" => return m.attributes(&mut self.metadata),
            "gauge" => m.message(0)?.map(Data::Gauge),
            "sum" => m.message(0)?.map(Data::Sum),
            "histogram" => m.message(0)?.map(Data::Histogram),
            "exponentialHistogram" => m.message(0)?.map(Data::ExponentialHistogram),
            "summary" => m.message(0)?.map(Data::Summary),
            _ => return Ok(()),
        };
        m.one_of(&mut self.data, data, metric_data_name)
    }
}

impl Message for Gauge {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "dataPoints" => m.list(&mut self.data_points, 0),
            _ => Ok(()),
        }
    }
}

impl Message for Sum {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "dataPoints" => m.list(&mut self.data_points, 0),
            "aggregationTemporality" => m.set(&mut self.aggregation_temporality, temporality),
            "isMonotonic" => m.set(&mut self.is_monotonic, boolean),
            _ => Ok(()),
        }
    }
}

impl Message for Histogram {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "dataPoints" => m.list(&mut self.data_points, 0),
            "aggregationTemporality" => m.set(&mut self.aggregation_temporality, temporality),
            _ => Ok(()),
        }
    }
}

impl Message for ExponentialHistogram {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "dataPoints" => m.list(&mut self.data_points, 0),
            "aggregationTemporality" => m.set(&mut self.aggregation_temporality, temporality),
            _ => Ok(()),
        }
    }
}

impl Message for Summary {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "dataPoints" => m.list(&mut self.data_points, 0),
            _ => Ok(()),
        }
    }
}

/// The member name of a value of the `NumberDataPoint.value` oneof.
fn number_name(v: &number_data_point::Value) -> &'static str {
    match v {
        number_data_point::Value::AsDouble(_) => "asDouble",
        number_data_point::Value::AsInt(_) => "asInt",
    }
}

/// The member name of a value of the `Exemplar.value` oneof.
fn exemplar_name(v: &exemplar::Value) -> &'static str {
    match v {
        exemplar::Value::AsDouble(_) => "asDouble",
        exemplar::Value::AsInt(_) => "asInt",
    }
}

impl Message for NumberDataPoint {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        use number_data_point::Value as V;
        let value = match m.key {
            "attributes" => return m.attributes(&mut self.attributes),
            "startTimeUnixNano" => return m.set(&mut self.start_time_unix_nano, uint64),
            "timeUnixNano" => return m.set(&mut self.time_unix_nano, uint64),
            "exemplars" => return m.list(&mut self.exemplars, 0),
            "flags" => return m.set(&mut self.flags, uint32),
            "asDouble" => m.take(|v, p| double(&v, p))?.map(V::AsDouble),
            "asInt" => m.take(|v, p| int64(&v, p))?.map(V::AsInt),
            _ => return Ok(()),
        };
        m.one_of(&mut self.value, value, number_name)
    }
}

impl Message for Exemplar {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        use exemplar::Value as V;
        let value = match m.key {
            "filteredAttributes" => return m.attributes(&mut self.filtered_attributes),
            "timeUnixNano" => return m.set(&mut self.time_unix_nano, uint64),
            "spanId" => return m.set(&mut self.span_id, span_id),
            "traceId" => return m.set(&mut self.trace_id, trace_id),
            "asDouble" => m.take(|v, p| double(&v, p))?.map(V::AsDouble),
            "asInt" => m.take(|v, p| int64(&v, p))?.map(V::AsInt),
            _ => return Ok(()),
        };
        m.one_of(&mut self.value, value, exemplar_name)
    }
}

impl Message for HistogramDataPoint {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "attributes" => m.attributes(&mut self.attributes),
            "startTimeUnixNano" => m.set(&mut self.start_time_unix_nano, uint64),
            "timeUnixNano" => m.set(&mut self.time_unix_nano, uint64),
            "count" => m.set(&mut self.count, uint64),
            "sum" => m.opt(&mut self.sum, double),
            "bucketCounts" => m.list(&mut self.bucket_counts, 0),
            "explicitBounds" => m.list(&mut self.explicit_bounds, 0),
            "exemplars" => m.list(&mut self.exemplars, 0),
            "flags" => m.set(&mut self.flags, uint32),
            "min" => m.opt(&mut self.min, double),
            "max" => m.opt(&mut self.max, double),
            _ => Ok(()),
        }
    }
}

impl Message for ExponentialHistogramDataPoint {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "attributes" => m.attributes(&mut self.attributes),
            "startTimeUnixNano" => m.set(&mut self.start_time_unix_nano, uint64),
            "timeUnixNano" => m.set(&mut self.time_unix_nano, uint64),
            "count" => m.set(&mut self.count, uint64),
            "sum" => m.opt(&mut self.sum, double),
            "scale" => m.set(&mut self.scale, int32),
            "zeroCount" => m.set(&mut self.zero_count, uint64),
            "positive" => m.set_message(&mut self.positive),
            "negative" => m.set_message(&mut self.negative),
            "flags" => m.set(&mut self.flags, uint32),
            "exemplars" => m.list(&mut self.exemplars, 0),
            "min" => m.opt(&mut self.min, double),
            "max" => m.opt(&mut self.max, double),
            "zeroThreshold" => m.set(&mut self.zero_threshold, double),
            _ => Ok(()),
        }
    }
}

impl Message for Buckets {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "offset" => m.set(&mut self.offset, int32),
            "bucketCounts" => m.list(&mut self.bucket_counts, 0),
            _ => Ok(()),
        }
    }
}

impl Message for SummaryDataPoint {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "attributes" => m.attributes(&mut self.attributes),
            "startTimeUnixNano" => m.set(&mut self.start_time_unix_nano, uint64),
            "timeUnixNano" => m.set(&mut self.time_unix_nano, uint64),
            "count" => m.set(&mut self.count, uint64),
            "sum" => m.set(&mut self.sum, double),
            "quantileValues" => m.list(&mut self.quantile_values, 0),
            "flags" => m.set(&mut self.flags, uint32),
            _ => Ok(()),
        }
    }
}

impl Message for ValueAtQuantile {
    fn member<'de, A: MapAccess<'de>>(
        &mut self,
        m: &mut Member<'_, '_, 'de, A>,
    ) -> Result<(), A::Error> {
        match m.key {
            "quantile" => m.set(&mut self.quantile, double),
            "value" => m.set(&mut self.value, double),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn at<T>(f: impl Fn(&Value, &Path<'_>) -> DecodeResult<T>, v: Value) -> DecodeResult<T> {
        let root = Path::root();
        let p = root.key("x");
        f(&v, &p)
    }

    fn reason<T: std::fmt::Debug>(r: DecodeResult<T>) -> String {
        r.unwrap_err().reason
    }

    #[test]
    fn integers_as_numbers_and_strings() {
        assert_eq!(at(uint64, json!(5)).unwrap(), 5);
        assert_eq!(at(uint64, json!("18446744073709551615")).unwrap(), u64::MAX);
        assert_eq!(
            at(uint64, json!(18446744073709551615u64)).unwrap(),
            u64::MAX
        );
        assert_eq!(at(int64, json!("-9223372036854775808")).unwrap(), i64::MIN);
        assert_eq!(at(int64, json!(-3)).unwrap(), -3);
        assert_eq!(at(int64, json!(1e3)).unwrap(), 1000);
        assert_eq!(at(uint32, json!("4294967295")).unwrap(), u32::MAX);
        assert_eq!(at(int32, json!(-2147483648)).unwrap(), i32::MIN);
        assert_eq!(
            reason(at(uint64, json!("18446744073709551616"))),
            "18446744073709551616 is out of range for uint64"
        );
        assert_eq!(
            reason(at(uint64, json!(-1))),
            "expected a non-negative integer (uint64), got -1"
        );
        assert_eq!(
            reason(at(uint64, json!(1.5))),
            "expected an integer, got 1.5"
        );
        assert_eq!(
            reason(at(uint64, json!("1.5"))),
            "expected an integer, got \"1.5\""
        );
        assert_eq!(
            reason(at(uint64, json!(""))),
            "expected an integer, got \"\""
        );
        assert_eq!(
            reason(at(uint64, json!(" 1"))),
            "expected an integer, got \" 1\""
        );
        assert_eq!(
            reason(at(uint64, json!(true))),
            "expected integer, got boolean"
        );
        assert_eq!(
            reason(at(uint32, json!(4294967296u64))),
            "4294967296 is out of range for uint32"
        );
        assert_eq!(
            reason(at(int32, json!("2147483648"))),
            "2147483648 is out of range for int32"
        );
        assert_eq!(
            reason(at(int64, json!("9".repeat(60)))),
            format!("\"{}\" is out of range for int64", "9".repeat(60))
        );
        assert!(reason(at(uint64, json!(1.6e19))).contains("not exact"));
        assert_eq!(
            reason(at(uint64, json!(1e20))),
            "1e+20 is out of range for uint64"
        );
    }

    #[test]
    fn doubles() {
        assert_eq!(at(double, json!(1.5)).unwrap(), 1.5);
        assert_eq!(at(double, json!(7)).unwrap(), 7.0);
        assert_eq!(at(double, json!("-2.5e3")).unwrap(), -2500.0);
        assert!(at(double, json!("NaN")).unwrap().is_nan());
        assert_eq!(at(double, json!("Infinity")).unwrap(), f64::INFINITY);
        assert_eq!(at(double, json!("-Infinity")).unwrap(), f64::NEG_INFINITY);
        assert_eq!(
            reason(at(double, json!("inf"))),
            "expected a number, got \"inf\""
        );
        assert_eq!(
            reason(at(double, json!("nan"))),
            "expected a number, got \"nan\""
        );
        assert_eq!(
            reason(at(double, json!("e"))),
            "expected a number, got \"e\""
        );
        assert_eq!(
            reason(at(double, json!("1e999"))),
            "\"1e999\" is out of range for double"
        );
        assert_eq!(reason(at(double, json!([]))), "expected number, got array");
    }

    #[test]
    fn ids_and_bytes() {
        assert_eq!(
            at(|v, p| id(v, p, 8), json!("00FFaa0102030405")).unwrap(),
            vec![0, 255, 170, 1, 2, 3, 4, 5]
        );
        assert!(at(|v, p| id(v, p, 8), json!("")).unwrap().is_empty());
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("00ffaa01020304"))),
            "expected 16 hex characters, got 14"
        );
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("00ffaa010203040g"))),
            "invalid hex character 'g' at position 15"
        );
        assert_eq!(
            reason(at(|v, p| id(v, p, 8), json!("éé"))),
            "invalid hex character 'é' at position 0"
        );
        assert_eq!(at(bytes, json!("+/8=")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("+/8")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("-_8=")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(at(bytes, json!("-_8")).unwrap(), vec![0xfb, 0xff]);
        assert_eq!(
            reason(at(bytes, json!("+_8="))),
            "invalid base64 character '+' at position 0"
        );
        assert_eq!(reason(at(bytes, json!("a"))), "invalid base64 length 1");
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert!(check_depth(deep.as_bytes()).is_err());
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(check_depth(ok.as_bytes()).is_ok());
        let quoted = format!("[\"\\\"{}\"]", "[".repeat(1000));
        assert!(check_depth(quoted.as_bytes()).is_ok());
        let e =
            decode::<ExportTraceServiceRequest>(quoted.as_bytes(), &mut |_| Ok(())).unwrap_err();
        assert_eq!(e.reason, "expected object, got array");
    }
}
