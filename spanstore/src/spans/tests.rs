#![allow(clippy::unwrap_used)]

use std::path::Path;

use lookout_proto::otlp::common::v1::any_value::Value as V;
use lookout_proto::otlp::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::span::{Event, Link};
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::*;

/// A small deterministic generator (no dependency, same spans every run).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn kv(key: &str, v: Option<V>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: v }),
        key_strindex: 0,
    }
}

fn resource(i: u64) -> Option<Resource> {
    (i != 3).then(|| Resource {
        attributes: vec![kv("service.name", Some(V::StringValue(format!("svc-{i}"))))],
        ..Default::default()
    })
}

/// `traces` traces of 1 to `max_spans` spans each, spread over resources and scopes,
/// with every kind of value and the rarely set fields on some spans.
fn requests(g: &mut Gen, traces: u64, max_spans: u64) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    for t in 0..traces {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&g.next().to_le_bytes());
        trace_id[8..].copy_from_slice(&t.to_le_bytes());
        let n = 1 + g.below(max_spans);
        let base = 1_700_000_000_000_000_000 + g.below(3_600_000_000_000);
        let mut spans = Vec::new();
        for s in 0..n {
            let parent = match s {
                0 => Vec::new(),
                // A parent outside this trace's spans in the block.
                _ if g.below(10) == 0 => g.next().to_le_bytes().to_vec(),
                _ => ((t << 20) + g.below(s) + 1).to_le_bytes().to_vec(),
            };
            let start = base + g.below(1_000_000_000);
            let mut span = Span {
                trace_id: trace_id.to_vec(),
                span_id: ((t << 20) + s + 1).to_le_bytes().to_vec(),
                parent_span_id: parent,
                name: format!("op-{}", g.below(20)),
                kind: [0, 1, 2, 3, 4, 5, 99, -1][g.below(8) as usize],
                start_time_unix_nano: start,
                // Sometimes an end before the start.
                end_time_unix_nano: if g.below(50) == 0 {
                    start - 5
                } else {
                    start + g.below(2_000_000_000)
                },
                attributes: vec![
                    kv("http.method", Some(V::StringValue("GET".into()))),
                    kv(
                        "http.status_code",
                        Some(V::IntValue(200 + g.below(4) as i64 * 100)),
                    ),
                    kv("ratio", Some(V::DoubleValue(g.below(1000) as f64 / 7.0))),
                    kv("cached", Some(V::BoolValue(g.below(2) == 0))),
                    kv("empty", None),
                    kv(
                        &format!("k{}", g.below(5)),
                        Some(V::StringValue(format!("v{}", g.next()))),
                    ),
                ],
                status: match g.below(3) {
                    0 => None,
                    1 => Some(Status::default()),
                    _ => Some(Status {
                        code: 2,
                        message: "boom".into(),
                    }),
                },
                ..Default::default()
            };
            if g.below(20) == 0 {
                span.attributes.push(KeyValue {
                    key: "absent".into(),
                    value: None,
                    key_strindex: 0,
                });
                span.attributes.push(kv(
                    "list",
                    Some(V::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(V::BytesValue(vec![1, 2, 3])),
                        }],
                    })),
                ));
                span.events.push(Event {
                    time_unix_nano: start + 1,
                    name: "exception".into(),
                    attributes: vec![kv("exception.message", Some(V::StringValue("x".into())))],
                    dropped_attributes_count: 1,
                });
                span.links.push(Link {
                    trace_id: vec![9; 16],
                    span_id: vec![8; 8],
                    ..Default::default()
                });
                span.trace_state = "a=b".into();
                span.flags = 0x301;
                span.dropped_links_count = 2;
            }
            spans.push(span);
        }
        // Split a trace's spans over two resources, as services do.
        let cut = g.below(n + 1) as usize;
        let (a, b) = spans.split_at(cut);
        for (i, part) in [a, b].into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            out.push(ResourceSpans {
                resource: resource((t + i as u64) % 5),
                scope_spans: vec![ScopeSpans {
                    scope: (i == 0).then(|| InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans: part.to_vec(),
                    schema_url: String::new(),
                }],
                schema_url: if i == 1 {
                    "https://opentelemetry.io/schemas/1.4.0".into()
                } else {
                    String::new()
                },
            });
        }
    }
    out
}

/// What was sent, as the store gives it back: sorted by trace id, then start.
fn expected(reqs: &[ResourceSpans]) -> Vec<StoredSpan> {
    let mut out = Vec::new();
    for rs in reqs {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(StoredSpan {
                    resource: std::sync::Arc::new(TableEntry {
                        value: rs.resource.clone(),
                        schema_url: rs.schema_url.clone(),
                    }),
                    scope: std::sync::Arc::new(TableEntry {
                        value: ss.scope.clone(),
                        schema_url: ss.schema_url.clone(),
                    }),
                    span: span.clone(),
                });
            }
        }
    }
    // Stable: spans of one trace with the same start keep the order they came in.
    out.sort_by(|a, b| {
        (&a.span.trace_id, a.span.start_time_unix_nano)
            .cmp(&(&b.span.trace_id, b.span.start_time_unix_nano))
    });
    out
}

fn build(reqs: &[ResourceSpans]) -> Vec<u8> {
    let mut buf = SpanBuffer::new();
    for rs in reqs {
        buf.push_resource_spans(rs);
    }
    buf.finish(1).unwrap().unwrap()
}

#[test]
fn every_span_reads_back_exactly_and_by_trace_id() {
    let mut g = Gen(7);
    // Many small traces over several pages, and one trace longer than a page may be.
    let mut reqs = requests(&mut g, 3000, 12);
    reqs.extend(
        requests(&mut Gen(8), 1, 2 * MAX_PAGE_ROWS as u64)
            .into_iter()
            .map(|mut rs| {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        s.trace_id[0] = 0xff;
                    }
                }
                rs
            }),
    );
    let bytes = build(&reqs);
    let block = SpanBlock::read(bytes.as_slice(), Path::new("mem")).unwrap();
    assert!(
        block.footer().pages.len() > 3,
        "{} pages",
        block.footer().pages.len()
    );
    let want = expected(&reqs);
    assert_eq!(block.footer().rows, want.len() as u64);
    let all = block.all(bytes.as_slice()).unwrap();
    assert_eq!(all.len(), want.len());
    for (got, want) in all.iter().zip(&want) {
        assert_eq!(got, want);
    }
    // By trace id: every trace, and ids the block does not hold.
    let traces: Vec<_> = want
        .chunk_by(|a, b| a.span.trace_id == b.span.trace_id)
        .collect();
    // A sample (every lookup decodes its pages), with the first, the last and the long one.
    let long = traces.iter().position(|t| t.len() > MAX_PAGE_ROWS).unwrap();
    let sample = (0..traces.len())
        .step_by(97)
        .chain([long, traces.len() - 1]);
    for run in sample.clone().map(|i| traces[i]) {
        let id: [u8; 16] = run[0].span.trace_id.as_slice().try_into().unwrap();
        let got = block.trace(bytes.as_slice(), &id).unwrap();
        assert_eq!(got.as_slice(), run);
    }
    assert!(block.trace(bytes.as_slice(), &[1; 16]).unwrap().is_empty());
    // The buffer answers the same before it is cut into a block.
    let mut buf = SpanBuffer::new();
    for rs in &reqs {
        buf.push_resource_spans(rs);
    }
    for run in sample.clone().map(|i| traces[i]) {
        let id: [u8; 16] = run[0].span.trace_id.as_slice().try_into().unwrap();
        assert_eq!(buf.trace(&id).unwrap().as_slice(), run);
    }
}

#[test]
fn an_empty_buffer_makes_no_block_and_bad_ids_are_counted() {
    let mut buf = SpanBuffer::new();
    assert!(buf.finish(1).unwrap().is_none());
    buf.push_resource_spans(&ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![1; 15],
                span_id: vec![1; 8],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(buf.stats().refused, 1);
    assert!(buf.is_empty());
}

#[test]
fn damage_anywhere_is_an_error_naming_the_block() {
    let reqs = requests(&mut Gen(3), 40, 5);
    let bytes = build(&reqs);
    let path = Path::new("/data/spans/2026120300/000001.blk");
    let ids: Vec<[u8; 16]> = reqs
        .iter()
        .map(|rs| {
            rs.scope_spans[0].spans[0]
                .trace_id
                .as_slice()
                .try_into()
                .unwrap()
        })
        .collect();
    let mut g = Gen(5);
    for _ in 0..300 {
        let mut b = bytes.clone();
        let at = g.below(b.len() as u64) as usize;
        b[at] ^= 1 << g.below(8);
        let read = SpanBlock::read(b.as_slice(), path).and_then(|block| {
            block.all(b.as_slice())?;
            for id in &ids {
                block.trace(b.as_slice(), id)?;
            }
            Ok(())
        });
        let e = read.expect_err(&format!("flip at byte {at} went unnoticed"));
        assert!(
            e.to_string()
                .starts_with("block /data/spans/2026120300/000001.blk: "),
            "{e}"
        );
    }
}

#[test]
fn a_trace_past_the_byte_cap_keeps_its_first_spans_and_others_are_untouched() {
    let span = |trace: u8, i: u8| Span {
        trace_id: vec![trace; 16],
        span_id: vec![i + 1; 8],
        name: "op".into(),
        attributes: vec![kv(
            "blob",
            Some(V::StringValue(format!("{i}{}", "x".repeat(1000)))),
        )],
        ..Default::default()
    };
    let rs = ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: (0..100).map(|i| span(1, i)).chain([span(2, 0)]).collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut buf = SpanBuffer::new();
    buf.set_max_trace_bytes(10_000);
    buf.push_resource_spans(&rs);
    let stats = buf.stats();
    // About 1.1 KB a span: the trace keeps what fits (one span may pass the cap).
    assert!(
        (9..=11).contains(&stats.rows.saturating_sub(1)),
        "{stats:?}"
    );
    assert_eq!(stats.too_large + stats.rows as u64, 101);
    assert_eq!(buf.trace(&[2; 16]).unwrap().len(), 1);
    let mut uncapped = SpanBuffer::new();
    uncapped.push_resource_spans(&rs);
    assert_eq!(
        (uncapped.stats().rows, uncapped.stats().too_large),
        (101, 0)
    );
}
