//! Sizing an encoded export request before it is decoded.
//!
//! prost's in-memory form of a request can be dozens of times its protobuf size: an empty
//! attribute is 2 bytes on the wire and a 72-byte struct decoded, an empty span 2 bytes
//! and a 200-byte struct. [`scan`] walks the wire format once, allocating nothing, and
//! returns the items the request holds and an upper bound of the heap bytes its decoded
//! form will take, so admission can charge (or refuse) that before a byte is decoded.
//!
//! The walk knows the OTLP schema only as far as sizing needs: which fields are nested
//! messages (and of which type), strings and bytes, or repeated numbers. Everything else
//! is skipped by its wire type, as a decoder skips unknown fields. A request the walk
//! cannot frame (a length past the end, a bad varint, nesting deeper than prost allows)
//! is refused here, before the decoder would have allocated what comes before the fault.

use std::mem::size_of;

use lookout_proto::otlp::common::v1::{AnyValue, EntityRef, KeyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::metrics::v1::{
    summary_data_point::ValueAtQuantile, Exemplar, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, SummaryDataPoint,
};
use lookout_proto::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span};

use crate::signal::Signal;

/// Nesting prost refuses past (its recursion limit).
const MAX_DEPTH: u32 = 100;

/// What an encoded request holds, found without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Spans, log records or metric data points.
    pub items: u64,
    /// Upper bound of the heap bytes of the decoded request (as
    /// [`Batch::heap_size`](crate::Batch::heap_size) counts them).
    pub decoded_bytes: u64,
}

/// Why a request cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A length or fixed-size value runs past the end of its message.
    #[error("field {field} at byte {at} runs past the end of its message")]
    Truncated {
        /// Field number.
        field: u64,
        /// Offset of the field's key in the request.
        at: usize,
    },
    /// A varint longer than 10 bytes or cut off.
    #[error("invalid varint at byte {at}")]
    Varint {
        /// Offset in the request.
        at: usize,
    },
    /// Field number 0, or wire type 6 or 7.
    #[error("invalid field key {key} at byte {at}")]
    Key {
        /// The key.
        key: u64,
        /// Offset in the request.
        at: usize,
    },
    /// A group left open or closed with another number.
    #[error("unbalanced group at byte {at}")]
    Group {
        /// Offset in the request.
        at: usize,
    },
    /// Messages nested deeper than the decoder allows.
    #[error("messages nested deeper than {MAX_DEPTH} levels")]
    Depth,
}

/// Size `body`, an encoded export request of `signal`, without decoding it.
pub fn scan(signal: Signal, body: &[u8]) -> Result<Shape, ScanError> {
    let root = match signal {
        Signal::Traces => &TRACES_REQUEST,
        Signal::Logs => &LOGS_REQUEST,
        Signal::Metrics => &METRICS_REQUEST,
    };
    let mut w = Walk {
        start: body.as_ptr() as usize,
        shape: Shape {
            items: 0,
            decoded_bytes: size_of::<crate::Batch>() as u64,
        },
    };
    w.message(root, body, 0)?;
    Ok(w.shape)
}

/// What a field holds, as far as sizing needs.
#[derive(Clone, Copy)]
enum Ty {
    /// A nested message.
    Msg(&'static Msg),
    /// A string or bytes: its length on the heap.
    Bytes,
    /// Repeated 64-bit numbers, packed or not; `varint` when packed as varints (each at
    /// least one byte on the wire, eight decoded).
    Numbers { varint: bool },
}

/// One field of a message that is not skipped.
struct Field {
    num: u64,
    ty: Ty,
    /// In-memory size of one element when the field is repeated, 0 when it is not.
    elem: usize,
    /// Each element is one item of the request (span, log record, data point).
    item: bool,
}

struct Msg {
    fields: &'static [Field],
    /// Per field number below 16, its index in `fields` (`u8::MAX`: skipped).
    index: [u8; 16],
}

/// A message of `fields` (numbers below 16).
const fn msg(fields: &'static [Field]) -> Msg {
    let mut index = [u8::MAX; 16];
    let mut i = 0;
    while i < fields.len() {
        index[fields[i].num as usize] = i as u8;
        i += 1;
    }
    Msg { fields, index }
}

impl Msg {
    #[inline]
    fn field(&self, num: u64) -> Option<&Field> {
        let i = *self.index.get(usize::try_from(num).ok()?)?;
        self.fields.get(usize::from(i))
    }
}

const fn one(num: u64, ty: Ty) -> Field {
    Field {
        num,
        ty,
        elem: 0,
        item: false,
    }
}

const fn many(num: u64, ty: Ty, elem: usize) -> Field {
    Field {
        num,
        ty,
        elem,
        item: false,
    }
}

const fn items(num: u64, ty: Ty, elem: usize) -> Field {
    Field {
        num,
        ty,
        elem,
        item: true,
    }
}

const S: Ty = Ty::Bytes;
const KV: usize = size_of::<KeyValue>();

static KEY_VALUE: Msg = msg(&[one(1, S), one(2, Ty::Msg(&ANY_VALUE))]);
static ANY_VALUE: Msg = msg(&[
    one(1, S),
    one(5, Ty::Msg(&ARRAY_VALUE)),
    one(6, Ty::Msg(&KEY_VALUE_LIST)),
    one(7, S),
]);
static ARRAY_VALUE: Msg = msg(&[many(1, Ty::Msg(&ANY_VALUE), size_of::<AnyValue>())]);
static KEY_VALUE_LIST: Msg = msg(&[many(1, Ty::Msg(&KEY_VALUE), KV)]);
static ENTITY_REF: Msg = msg(&[
    one(1, S),
    one(2, S),
    many(3, S, size_of::<String>()),
    many(4, S, size_of::<String>()),
]);
static RESOURCE: Msg = msg(&[
    many(1, Ty::Msg(&KEY_VALUE), KV),
    many(3, Ty::Msg(&ENTITY_REF), size_of::<EntityRef>()),
]);
static SCOPE: Msg = msg(&[one(1, S), one(2, S), many(3, Ty::Msg(&KEY_VALUE), KV)]);

static TRACES_REQUEST: Msg = msg(&[many(
    1,
    Ty::Msg(&RESOURCE_SPANS),
    size_of::<ResourceSpans>(),
)]);
static RESOURCE_SPANS: Msg = msg(&[
    one(1, Ty::Msg(&RESOURCE)),
    many(2, Ty::Msg(&SCOPE_SPANS), size_of::<ScopeSpans>()),
    one(3, S),
]);
static SCOPE_SPANS: Msg = msg(&[
    one(1, Ty::Msg(&SCOPE)),
    items(2, Ty::Msg(&SPAN), size_of::<Span>()),
    one(3, S),
]);
static SPAN: Msg = msg(&[
    one(1, S),
    one(2, S),
    one(3, S),
    one(4, S),
    one(5, S),
    many(9, Ty::Msg(&KEY_VALUE), KV),
    many(11, Ty::Msg(&EVENT), size_of::<span::Event>()),
    many(13, Ty::Msg(&LINK), size_of::<span::Link>()),
    one(15, Ty::Msg(&STATUS)),
]);
static EVENT: Msg = msg(&[one(2, S), many(3, Ty::Msg(&KEY_VALUE), KV)]);
static LINK: Msg = msg(&[
    one(1, S),
    one(2, S),
    one(3, S),
    many(4, Ty::Msg(&KEY_VALUE), KV),
]);
static STATUS: Msg = msg(&[one(2, S)]);

static LOGS_REQUEST: Msg = msg(&[many(1, Ty::Msg(&RESOURCE_LOGS), size_of::<ResourceLogs>())]);
static RESOURCE_LOGS: Msg = msg(&[
    one(1, Ty::Msg(&RESOURCE)),
    many(2, Ty::Msg(&SCOPE_LOGS), size_of::<ScopeLogs>()),
    one(3, S),
]);
static SCOPE_LOGS: Msg = msg(&[
    one(1, Ty::Msg(&SCOPE)),
    items(2, Ty::Msg(&LOG_RECORD), size_of::<LogRecord>()),
    one(3, S),
]);
static LOG_RECORD: Msg = msg(&[
    one(3, S),
    one(5, Ty::Msg(&ANY_VALUE)),
    many(6, Ty::Msg(&KEY_VALUE), KV),
    one(9, S),
    one(10, S),
    one(12, S),
]);

static METRICS_REQUEST: Msg = msg(&[many(
    1,
    Ty::Msg(&RESOURCE_METRICS),
    size_of::<ResourceMetrics>(),
)]);
static RESOURCE_METRICS: Msg = msg(&[
    one(1, Ty::Msg(&RESOURCE)),
    many(2, Ty::Msg(&SCOPE_METRICS), size_of::<ScopeMetrics>()),
    one(3, S),
]);
static SCOPE_METRICS: Msg = msg(&[
    one(1, Ty::Msg(&SCOPE)),
    many(2, Ty::Msg(&METRIC), size_of::<Metric>()),
    one(3, S),
]);
static METRIC: Msg = msg(&[
    one(1, S),
    one(2, S),
    one(3, S),
    one(5, Ty::Msg(&NUMBER_POINTS)),
    one(7, Ty::Msg(&NUMBER_POINTS)),
    one(9, Ty::Msg(&HISTOGRAM)),
    one(10, Ty::Msg(&EXP_HISTOGRAM)),
    one(11, Ty::Msg(&SUMMARY)),
    many(12, Ty::Msg(&KEY_VALUE), KV),
]);
/// Gauge and Sum: data points in field 1.
static NUMBER_POINTS: Msg = msg(&[items(
    1,
    Ty::Msg(&NUMBER_POINT),
    size_of::<NumberDataPoint>(),
)]);
static NUMBER_POINT: Msg = msg(&[
    many(5, Ty::Msg(&EXEMPLAR), size_of::<Exemplar>()),
    many(7, Ty::Msg(&KEY_VALUE), KV),
]);
static EXEMPLAR: Msg = msg(&[one(4, S), one(5, S), many(7, Ty::Msg(&KEY_VALUE), KV)]);
static HISTOGRAM: Msg = msg(&[items(
    1,
    Ty::Msg(&HISTOGRAM_POINT),
    size_of::<HistogramDataPoint>(),
)]);
static HISTOGRAM_POINT: Msg = msg(&[
    many(6, Ty::Numbers { varint: false }, 8),
    many(7, Ty::Numbers { varint: false }, 8),
    many(8, Ty::Msg(&EXEMPLAR), size_of::<Exemplar>()),
    many(9, Ty::Msg(&KEY_VALUE), KV),
]);
static EXP_HISTOGRAM: Msg = msg(&[items(
    1,
    Ty::Msg(&EXP_HISTOGRAM_POINT),
    size_of::<ExponentialHistogramDataPoint>(),
)]);
static EXP_HISTOGRAM_POINT: Msg = msg(&[
    many(1, Ty::Msg(&KEY_VALUE), KV),
    one(8, Ty::Msg(&BUCKETS)),
    one(9, Ty::Msg(&BUCKETS)),
    many(11, Ty::Msg(&EXEMPLAR), size_of::<Exemplar>()),
]);
static BUCKETS: Msg = msg(&[many(2, Ty::Numbers { varint: true }, 8)]);
static SUMMARY: Msg = msg(&[items(
    1,
    Ty::Msg(&SUMMARY_POINT),
    size_of::<SummaryDataPoint>(),
)]);
static SUMMARY_POINT: Msg = msg(&[
    many(6, Ty::Msg(&QUANTILE), size_of::<ValueAtQuantile>()),
    many(7, Ty::Msg(&KEY_VALUE), KV),
]);
static QUANTILE: Msg = msg(&[]);

/// A heap allocation of `n` bytes, as the allocator rounds it (never under).
fn heap(n: usize) -> u64 {
    n.next_multiple_of(16) as u64 + 16
}

struct Walk {
    /// Address of the request's first byte, for offsets in errors.
    start: usize,
    shape: Shape,
}

impl Walk {
    fn at(&self, buf: &[u8]) -> usize {
        (buf.as_ptr() as usize).wrapping_sub(self.start)
    }

    #[inline]
    fn varint(&self, buf: &mut &[u8]) -> Result<u64, ScanError> {
        // Keys and most lengths take one byte.
        if let Some((&b, rest)) = buf.split_first() {
            if b < 0x80 {
                *buf = rest;
                return Ok(u64::from(b));
            }
        }
        self.long_varint(buf)
    }

    #[cold]
    fn long_varint(&self, buf: &mut &[u8]) -> Result<u64, ScanError> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = buf.split_first() else {
                break;
            };
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                *buf = rest;
                return Ok(v);
            }
            *buf = rest;
        }
        Err(ScanError::Varint { at: self.at(buf) })
    }

    #[inline]
    fn take<'a>(
        &self,
        buf: &mut &'a [u8],
        n: u64,
        field: u64,
        at: usize,
    ) -> Result<&'a [u8], ScanError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > buf.len() {
            return Err(ScanError::Truncated { field, at });
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }

    /// Walk one message of type `msg` held in `buf`.
    fn message(&mut self, msg: &Msg, mut buf: &[u8], depth: u32) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Depth);
        }
        // Repeated fields met in this message: each is one Vec, whose first allocation
        // holds at least four elements.
        let mut vecs: u64 = 0;
        while !buf.is_empty() {
            let at = self.at(buf);
            let key = self.varint(&mut buf)?;
            let (num, wire) = (key >> 3, key & 7);
            if num == 0 {
                return Err(ScanError::Key { key, at });
            }
            let field = msg.field(num);
            if let Some(f) = field.filter(|f| f.elem > 0) {
                if num < 64 && vecs & (1 << num) == 0 {
                    vecs |= 1 << num;
                    self.shape.decoded_bytes += 4 * f.elem as u64;
                }
            }
            match wire {
                0 => {
                    self.varint(&mut buf)?;
                    self.number(field, 1);
                }
                1 => {
                    self.take(&mut buf, 8, num, at)?;
                    self.number(field, 1);
                }
                5 => {
                    self.take(&mut buf, 4, num, at)?;
                }
                2 => {
                    let len = self.varint(&mut buf)?;
                    let data = self.take(&mut buf, len, num, at)?;
                    if let Some(f) = field {
                        self.len_field(f, data, depth)?;
                    }
                }
                3 => self.skip_group(&mut buf, num, depth + 1)?,
                _ => return Err(ScanError::Key { key, at }),
            }
        }
        Ok(())
    }

    /// A `KeyValue`, the most frequent message: [`Walk::message`] over [`KEY_VALUE`] and
    /// [`ANY_VALUE`] with their fields known, falling back to it for nested values.
    fn key_value(&mut self, mut buf: &[u8], depth: u32) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Depth);
        }
        while let Some(&key) = buf.first() {
            match key {
                // key (1), value (2), both length-delimited.
                0x0a | 0x12 => {
                    let at = self.at(buf);
                    buf = &buf[1..];
                    let len = self.varint(&mut buf)?;
                    let data = self.take(&mut buf, len, u64::from(key >> 3), at)?;
                    if key == 0x0a {
                        self.shape.decoded_bytes += heap(data.len());
                    } else {
                        self.any_value(data, depth + 1)?;
                    }
                }
                _ => return self.message(&KEY_VALUE, buf, depth),
            }
        }
        Ok(())
    }

    /// An `AnyValue` holding a string or a scalar; others go to [`Walk::message`].
    fn any_value(&mut self, mut buf: &[u8], depth: u32) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Depth);
        }
        while let Some(&key) = buf.first() {
            match key {
                // string_value (1)
                0x0a => {
                    let at = self.at(buf);
                    buf = &buf[1..];
                    let len = self.varint(&mut buf)?;
                    let data = self.take(&mut buf, len, 1, at)?;
                    self.shape.decoded_bytes += heap(data.len());
                }
                // bool_value (2), int_value (3)
                0x10 | 0x18 => {
                    buf = &buf[1..];
                    self.varint(&mut buf)?;
                }
                // double_value (4)
                0x21 => {
                    let at = self.at(buf);
                    buf = &buf[1..];
                    self.take(&mut buf, 8, 4, at)?;
                }
                _ => return self.message(&ANY_VALUE, buf, depth),
            }
        }
        Ok(())
    }

    /// A number of a repeated-numbers field sent unpacked.
    fn number(&mut self, field: Option<&Field>, n: u64) {
        if let Some(Field {
            ty: Ty::Numbers { .. },
            ..
        }) = field
        {
            // Pushed one by one: the Vec holds at most twice what it has.
            self.shape.decoded_bytes += 16 * n;
        }
    }

    fn len_field(&mut self, f: &Field, data: &[u8], depth: u32) -> Result<(), ScanError> {
        if f.elem > 0 && !matches!(f.ty, Ty::Numbers { .. }) {
            self.shape.decoded_bytes += 2 * f.elem as u64;
        }
        if f.item {
            self.shape.items += 1;
        }
        match f.ty {
            Ty::Msg(m) if std::ptr::eq(m, &KEY_VALUE) => self.key_value(data, depth + 1),
            Ty::Msg(m) => self.message(m, data, depth + 1),
            Ty::Bytes => {
                self.shape.decoded_bytes += heap(data.len());
                Ok(())
            }
            Ty::Numbers { varint } => {
                let n = if varint {
                    data.iter().filter(|&&b| b < 0x80).count()
                } else {
                    data.len() / 8
                };
                self.number(Some(f), n as u64);
                Ok(())
            }
        }
    }

    /// Skip the fields of group `num` up to its end.
    fn skip_group(&mut self, buf: &mut &[u8], num: u64, depth: u32) -> Result<(), ScanError> {
        if depth > MAX_DEPTH {
            return Err(ScanError::Depth);
        }
        loop {
            let at = self.at(buf);
            if buf.is_empty() {
                return Err(ScanError::Group { at });
            }
            let key = self.varint(buf)?;
            let (inner, wire) = (key >> 3, key & 7);
            if inner == 0 {
                return Err(ScanError::Key { key, at });
            }
            match wire {
                0 => {
                    self.varint(buf)?;
                }
                1 => {
                    self.take(buf, 8, inner, at)?;
                }
                5 => {
                    self.take(buf, 4, inner, at)?;
                }
                2 => {
                    let len = self.varint(buf)?;
                    self.take(buf, len, inner, at)?;
                }
                3 => self.skip_group(buf, inner, depth + 1)?,
                4 if inner == num => return Ok(()),
                4 => return Err(ScanError::Group { at }),
                _ => return Err(ScanError::Key { key, at }),
            }
        }
    }
}

#[cfg(test)]
mod tests;
