//! Messages of a batch that fit: one per partition, and a partition's part larger than a
//! message may be (NATS servers refuse more than `max_payload`, 1 MiB by default, and close
//! the connection) cut in halves until each fits. A tailed file's 4 MiB record of one
//! service's lines, or a 4 MiB OTLP request of one service's logs, all falls into one
//! partition. Cutting is deterministic, so a batch sent again gives the same messages with
//! the same ids.

use bytes::Bytes;
use lookout_ingest::{Batch, Signal};
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::{message_id, partition, Part};

/// Largest message payload: NATS's default `max_payload` (1 MiB) less room for the
/// headers, which count against it too.
pub const MAX_MESSAGE_BYTES: usize = (1 << 20) - 4096;

/// The messages of `batch`: one per partition among `partitions` (as
/// [`crate::split`] makes them), a part larger than `limit` bytes cut in halves
/// until each fits. Deterministic, so the same batch always gives the same messages. An
/// error names a single item larger than `limit`.
pub fn messages(batch: Batch, partitions: u32, limit: usize) -> Result<Vec<Part>, String> {
    let mut out = Vec::new();
    match batch {
        Batch::Traces(r) => {
            for (p, req) in partition::split_traces(r, partitions) {
                fitting(p, req, limit, &mut out)?;
            }
        }
        Batch::Logs(r) => {
            for (p, req) in partition::split_logs(r, partitions) {
                fitting(p, req, limit, &mut out)?;
            }
        }
        Batch::Metrics(r) => {
            for (p, req) in partition::split_metrics(r, partitions) {
                fitting(p, req, limit, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// Why an encoded request could not be cut into messages.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// It is not an export request of its signal.
    #[error("{0}")]
    Malformed(String),
    /// A single item is larger than a message may be.
    #[error("{0}")]
    TooLarge(String),
}

/// The messages of the encoded export request `body` of `signal`, as [`messages`] makes
/// them from the decoded request: spans and log records are split on the wire
/// ([`crate::wire`]), without decoding them; metrics are decoded and split. A part larger
/// than `limit` is decoded and cut in halves.
pub fn messages_of_encoded(
    signal: Signal,
    body: &[u8],
    partitions: u32,
    limit: usize,
) -> Result<Vec<Part>, SplitError> {
    let malformed = |e: &dyn std::fmt::Display| {
        SplitError::Malformed(format!("not a valid {signal} export request: {e}"))
    };
    let parts = match signal {
        Signal::Traces => crate::wire::split_traces(body, partitions),
        Signal::Logs => crate::wire::split_logs(body, partitions),
        Signal::Metrics => {
            let batch = Batch::decode_protobuf(signal, body).map_err(|e| malformed(&e))?;
            return messages(batch, partitions, limit).map_err(SplitError::TooLarge);
        }
    }
    .map_err(|e| malformed(&e))?;
    let mut out = Vec::with_capacity(parts.len());
    for (p, bytes) in parts {
        if bytes.len() <= limit {
            let payload = Bytes::from(bytes);
            out.push(Part {
                partition: p,
                id: message_id(p, &payload),
                payload,
            });
            continue;
        }
        let r = match signal {
            Signal::Traces => ExportTraceServiceRequest::decode(bytes.as_slice())
                .map_err(|e| malformed(&e))
                .and_then(|req| fitting(p, req, limit, &mut out).map_err(SplitError::TooLarge)),
            _ => ExportLogsServiceRequest::decode(bytes.as_slice())
                .map_err(|e| malformed(&e))
                .and_then(|req| fitting(p, req, limit, &mut out).map_err(SplitError::TooLarge)),
        };
        r?;
    }
    Ok(out)
}

/// Push `req` of partition `p` as one message, or as several if it is larger than
/// `limit`.
fn fitting<R: Halve>(p: u32, req: R, limit: usize, out: &mut Vec<Part>) -> Result<(), String> {
    let len = req.encoded_len();
    if len <= limit {
        let payload = Bytes::from(req.encode_to_vec());
        out.push(Part {
            partition: p,
            id: message_id(p, &payload),
            payload,
        });
        return Ok(());
    }
    if req.items() <= 1 {
        return Err(format!(
            "partition {p}: a single item of {len} bytes is larger than a message may be ({limit} bytes)"
        ));
    }
    let (first, second) = req.halve();
    fitting(p, first, limit, out)?;
    fitting(p, second, limit, out)
}

/// An export request that can be cut in two by its items (spans, log records, metrics),
/// each half keeping the resources and scopes of its items.
trait Halve: Message + Default + Sized {
    /// Items in it.
    fn items(&self) -> usize;
    /// The first half of the items, and the rest.
    fn halve(self) -> (Self, Self);
}

macro_rules! halve {
    ($req:ty, $resources:ident, $scopes:ident, $items:ident) => {
        impl Halve for $req {
            fn items(&self) -> usize {
                self.$resources
                    .iter()
                    .flat_map(|r| &r.$scopes)
                    .map(|s| s.$items.len())
                    .sum()
            }

            fn halve(self) -> (Self, Self) {
                let mut left = self.items() / 2;
                let (mut first, mut second) = (Self::default(), Self::default());
                for mut resource in self.$resources {
                    let scopes = std::mem::take(&mut resource.$scopes);
                    let (mut r1, mut r2) = (resource.clone(), resource);
                    for mut scope in scopes {
                        let mut items = std::mem::take(&mut scope.$items);
                        let rest = items.split_off(left.min(items.len()));
                        left -= items.len();
                        if !items.is_empty() {
                            let mut s = scope.clone();
                            s.$items = items;
                            r1.$scopes.push(s);
                        }
                        if !rest.is_empty() {
                            scope.$items = rest;
                            r2.$scopes.push(scope);
                        }
                    }
                    if !r1.$scopes.is_empty() {
                        first.$resources.push(r1);
                    }
                    if !r2.$scopes.is_empty() {
                        second.$resources.push(r2);
                    }
                }
                (first, second)
            }
        }
    };
}

halve!(
    ExportTraceServiceRequest,
    resource_spans,
    scope_spans,
    spans
);
halve!(
    ExportLogsServiceRequest,
    resource_logs,
    scope_logs,
    log_records
);
halve!(
    ExportMetricsServiceRequest,
    resource_metrics,
    scope_metrics,
    metrics
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    use lookout_proto::otlp::logs::v1::LogRecord;
    use lookout_proto::otlp::trace::v1::Span;
    use lookout_tests::otlp::{log_record, logs_request, traces_request};

    fn bodies(parts: &[Part]) -> Vec<String> {
        parts
            .iter()
            .flat_map(|p| {
                ExportLogsServiceRequest::decode(p.payload.clone())
                    .unwrap()
                    .resource_logs
            })
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .map(|l: LogRecord| format!("{:?}", l.body))
            .collect()
    }

    #[test]
    fn small_parts_are_the_messages_the_cluster_crate_makes() {
        let spans = (0..50u8)
            .map(|i| Span {
                trace_id: vec![i + 1; 16],
                span_id: vec![i; 8],
                ..Default::default()
            })
            .collect();
        let batch = Batch::Traces(traces_request("web", spans));
        let ours = messages(batch.clone(), 8, MAX_MESSAGE_BYTES).unwrap();
        let theirs = crate::split(batch, 8);
        let key = |p: &Part| (p.partition, p.id.clone(), p.payload.clone());
        assert!(ours.len() > 1);
        assert_eq!(
            ours.iter().map(key).collect::<Vec<_>>(),
            theirs.iter().map(key).collect::<Vec<_>>()
        );
    }

    #[test]
    fn encoded_requests_give_the_messages_of_decoded_ones() {
        let spans = (0..200u8)
            .map(|i| Span {
                trace_id: vec![i / 3 + 1; 16],
                span_id: vec![i; 8],
                name: "GET /".into(),
                ..Default::default()
            })
            .collect();
        let records = (0..3000)
            .map(|i| log_record(format!("line {i} {}", "x".repeat(1000)), 1))
            .collect();
        for batch in [
            Batch::Traces(traces_request("web", spans)),
            Batch::Logs(logs_request("tailed", records)),
        ] {
            let body = batch.encode_protobuf();
            let key = |p: &Part| (p.partition, p.id.clone(), p.payload.clone());
            let wire = messages_of_encoded(batch.signal(), &body, 8, MAX_MESSAGE_BYTES).unwrap();
            let decoded = messages(batch, 8, MAX_MESSAGE_BYTES).unwrap();
            assert!(!wire.is_empty());
            assert_eq!(
                wire.iter().map(key).collect::<Vec<_>>(),
                decoded.iter().map(key).collect::<Vec<_>>()
            );
        }
        let err = messages_of_encoded(Signal::Traces, &[0x0a, 0x05, 1], 8, MAX_MESSAGE_BYTES);
        assert!(matches!(err, Err(SplitError::Malformed(_))), "{err:?}");
    }

    #[test]
    fn a_part_larger_than_a_message_is_cut_the_same_way_every_time() {
        // A tailed file's record: one service, no trace ids, so one partition; ~3 MB.
        let records = (0..3000)
            .map(|i| log_record(format!("line {i} {}", "x".repeat(1000)), 1))
            .collect();
        let batch = Batch::Logs(logs_request("tailed", records));
        let parts = messages(batch.clone(), 16, MAX_MESSAGE_BYTES).unwrap();
        assert!(parts.len() >= 3, "{} messages", parts.len());
        assert!(parts.iter().all(|p| p.payload.len() <= MAX_MESSAGE_BYTES));
        assert!(parts.iter().all(|p| p.partition == parts[0].partition));
        let want: Vec<String> = (0..3000)
            .map(|i| {
                format!(
                    "{:?}",
                    log_record(format!("line {i} {}", "x".repeat(1000)), 1).body
                )
            })
            .collect();
        assert_eq!(bodies(&parts), want, "every record once, in order");
        let again = messages(batch, 16, MAX_MESSAGE_BYTES).unwrap();
        let ids = |ps: &[Part]| ps.iter().map(|p| p.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&parts), ids(&again));
    }

    #[test]
    fn halves_keep_each_items_resource_and_scope() {
        let mut req = logs_request(
            "a",
            (0..3).map(|i| log_record(format!("a{i}"), 1)).collect(),
        );
        req.resource_logs.extend(
            logs_request(
                "b",
                (0..4).map(|i| log_record(format!("b{i}"), 1)).collect(),
            )
            .resource_logs,
        );
        let (first, second) = req.clone().halve();
        assert_eq!((first.items(), second.items()), (3, 4));
        let service = |r: &ExportLogsServiceRequest| {
            r.resource_logs
                .iter()
                .map(|r| {
                    lookout_ingest::values::service_name(&r.resource.as_ref().unwrap().attributes)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(service(&first), ["a"]);
        assert_eq!(service(&second), ["b"]);
        let (first, second) = first.halve();
        assert_eq!((first.items(), second.items()), (1, 2));
        assert_eq!(
            (service(&first), service(&second)),
            (vec!["a".to_string()], vec!["a".to_string()])
        );
    }

    #[test]
    fn a_single_item_larger_than_a_message_is_refused() {
        let batch = Batch::Logs(logs_request("big", vec![log_record("y".repeat(5000), 1)]));
        let e = match messages(batch, 4, 1000) {
            Err(e) => e,
            Ok(p) => panic!("{} messages", p.len()),
        };
        assert!(
            e.contains("a single item of") && e.contains("(1000 bytes)"),
            "{e}"
        );
    }
}
