//! Resource enrichment: attributes added to every resource that lacks them (the agent's
//! `host.name`, `service.instance.id`, ...).
//!
//! When the request's own protobuf bytes are kept, the attributes are appended to them
//! instead of re-encoding the request: a protobuf parser merges a repeated occurrence of a
//! message field into the first, so `ResourceSpans { resource { attributes: [a] } }`
//! followed by `resource { attributes: [b] }` reads as one resource with `[a, b]`. Only the
//! outer length prefixes are rewritten; spans, logs and points are copied as bytes.

use bytes::{Buf, BufMut, Bytes};
use lookout_proto::otlp::common::v1::KeyValue;
use lookout_proto::otlp::resource::v1::Resource;
use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};
use prost::Message;

use crate::batch::Batch;

/// The request bytes do not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MalformedRequest(String);

impl MalformedRequest {
    fn new(why: &str) -> Self {
        Self(why.to_string())
    }
}

impl From<prost::DecodeError> for MalformedRequest {
    fn from(e: prost::DecodeError) -> Self {
        Self(e.to_string())
    }
}

/// For each resource of `batch`, in order, the `defaults` whose keys it lacks. Empty when
/// there are no defaults.
pub fn missing(batch: &Batch, defaults: &[KeyValue]) -> Vec<Vec<KeyValue>> {
    if defaults.is_empty() {
        return Vec::new();
    }
    let lacking = |r: Option<&Resource>| -> Vec<KeyValue> {
        defaults
            .iter()
            .filter(|d| !r.is_some_and(|r| r.attributes.iter().any(|a| a.key == d.key)))
            .cloned()
            .collect()
    };
    match batch {
        Batch::Traces(r) => r
            .resource_spans
            .iter()
            .map(|x| lacking(x.resource.as_ref()))
            .collect(),
        Batch::Logs(r) => r
            .resource_logs
            .iter()
            .map(|x| lacking(x.resource.as_ref()))
            .collect(),
        Batch::Metrics(r) => r
            .resource_metrics
            .iter()
            .map(|x| lacking(x.resource.as_ref()))
            .collect(),
    }
}

/// Add `missing` (from [`missing`]) to the decoded batch; true when anything was added.
pub fn add_to_batch(batch: &mut Batch, missing: &[Vec<KeyValue>]) -> bool {
    if missing.iter().all(Vec::is_empty) {
        return false;
    }
    let resources: Vec<&mut Option<Resource>> = match batch {
        Batch::Traces(r) => r
            .resource_spans
            .iter_mut()
            .map(|x| &mut x.resource)
            .collect(),
        Batch::Logs(r) => r
            .resource_logs
            .iter_mut()
            .map(|x| &mut x.resource)
            .collect(),
        Batch::Metrics(r) => r
            .resource_metrics
            .iter_mut()
            .map(|x| &mut x.resource)
            .collect(),
    };
    for (res, add) in resources.into_iter().zip(missing) {
        if !add.is_empty() {
            res.get_or_insert_with(Resource::default)
                .attributes
                .extend(add.iter().cloned());
        }
    }
    true
}

/// Append `missing[i]` to the resource of the `i`-th top-level entry (field 1) of an
/// encoded export request.
pub fn append_to_raw(raw: &[u8], missing: &[Vec<KeyValue>]) -> Result<Bytes, MalformedRequest> {
    let extra_len: usize = missing
        .iter()
        .flatten()
        .map(|kv| kv.encoded_len() + 12)
        .sum::<usize>()
        + missing.len() * 12;
    let mut out = Vec::with_capacity(raw.len() + extra_len);
    let mut buf = raw;
    let mut index = 0usize;
    while buf.has_remaining() {
        let field_start = raw.len() - buf.len();
        let (tag, wire_type) = decode_key(&mut buf)?;
        match wire_type {
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut buf)?)
                    .map_err(|_| MalformedRequest::new("length overflows usize"))?;
                if len > buf.len() {
                    return Err(MalformedRequest::new("buffer underflow"));
                }
                let body = &buf[..len];
                buf.advance(len);
                let add = if tag == 1 {
                    index += 1;
                    missing.get(index - 1).filter(|a| !a.is_empty())
                } else {
                    None
                };
                match add {
                    Some(add) => {
                        let resource = Resource {
                            attributes: add.clone(),
                            ..Default::default()
                        };
                        let mut extra = Vec::with_capacity(resource.encoded_len() + 6);
                        encode_key(1, WireType::LengthDelimited, &mut extra);
                        encode_varint(resource.encoded_len() as u64, &mut extra);
                        resource.encode_raw(&mut extra);
                        encode_key(tag, WireType::LengthDelimited, &mut out);
                        encode_varint((len + extra.len()) as u64, &mut out);
                        out.put_slice(body);
                        out.put_slice(&extra);
                    }
                    None => out.put_slice(&raw[field_start..raw.len() - buf.len()]),
                }
            }
            WireType::Varint => {
                decode_varint(&mut buf)?;
                out.put_slice(&raw[field_start..raw.len() - buf.len()]);
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let n = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if buf.len() < n {
                    return Err(MalformedRequest::new("buffer underflow"));
                }
                buf.advance(n);
                out.put_slice(&raw[field_start..raw.len() - buf.len()]);
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(MalformedRequest::new("groups are not supported"));
            }
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::signal::Signal;
    use lookout_proto::attr;
    use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

    use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn appended_attributes_decode_as_one_resource() {
        let rs = |attrs: Vec<KeyValue>, with_resource: bool| ResourceSpans {
            resource: with_resource.then(|| Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "GET /".into(),
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: "s".into(),
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                rs(
                    vec![
                        attr::string("service.name", "a"),
                        attr::string("host.name", "mine"),
                    ],
                    true,
                ),
                rs(vec![], false),
                rs(vec![attr::string("k", "v")], true),
            ],
        };
        let raw = req.encode_to_vec();
        let defaults = vec![
            attr::string("host.name", "h1"),
            attr::string("service.instance.id", "i1"),
        ];
        let mut batch = Batch::decode_protobuf(Signal::Traces, &raw).unwrap();
        let missing = missing(&batch, &defaults);
        assert_eq!(missing[0], vec![attr::string("service.instance.id", "i1")]);
        assert_eq!(missing[1], defaults);
        assert!(add_to_batch(&mut batch, &missing));
        let appended = append_to_raw(&raw, &missing).unwrap();
        let decoded = Batch::decode_protobuf(Signal::Traces, &appended).unwrap();
        assert_eq!(decoded, batch, "raw append equals the decoded enrichment");
        let Batch::Traces(t) = decoded else {
            unreachable!()
        };
        let attrs = &t.resource_spans[0].resource.as_ref().unwrap().attributes;
        assert_eq!(
            attrs.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
            ["service.name", "host.name", "service.instance.id"],
            "existing keys win"
        );
        assert_eq!(t.resource_spans[2].scope_spans[0].spans[0].name, "GET /");
    }

    #[test]
    fn truncated_input_is_an_error() {
        let raw = [0x0a, 0x10, 0x01];
        assert!(append_to_raw(&raw, &[vec![attr::string("a", "b")]]).is_err());
    }
}
