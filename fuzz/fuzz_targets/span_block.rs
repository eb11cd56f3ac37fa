//! The span store's block reader (`lookout_spanstore::SpanBlock`): footer, sections,
//! pages and every column decoder, on arbitrary or damaged block files.
//!
//! Input: a selector byte, then
//! - selector bit 0 clear, raw: the rest is the block file as it is;
//! - selector bit 0 set, structured: the harness builds a valid block from spans it
//!   derives from the input (5 bytes per span: trace, span id, parent choice, start, and
//!   a byte choosing name, kind, status and attributes), then, when selector bit 1 is set,
//!   damages it: the next u16 is a byte position, the byte after it is XORed in there, and
//!   bit 2 also cuts the file at the u16 after that.
//!
//! Checks, beyond no panic: an undamaged block gives every span back exactly as it was
//! put in, by trace id and in a full read; a damaged one is refused with an error naming
//! the block (checksums cover every byte), never read as other data.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use lookout_fuzz::{BlockDamage, Input};
use lookout_proto::attr;
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use lookout_spanstore::{SpanBlock, SpanBuffer};

const NAME: &str = "fuzz.blk";

fn spans(input: &mut Input<'_>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::new();
    while !input.is_empty() && out.len() < 2000 {
        let trace = input.byte() % 8;
        let id = input.byte();
        let parent = input.byte();
        let start = u64::from(input.byte()) * 1000;
        let shape = input.byte();
        let mut span = Span {
            trace_id: vec![trace + 1; 16],
            span_id: vec![id, 1, 2, 3, 4, 5, 6, 7],
            parent_span_id: match parent % 3 {
                0 => Vec::new(),
                _ => vec![parent, 1, 2, 3, 4, 5, 6, 7],
            },
            name: format!("op{}", shape % 4),
            kind: i32::from(shape % 7) - 1,
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(u64::from(shape) * 7).wrapping_sub(5),
            status: (shape & 0x10 != 0).then(|| Status {
                code: 2,
                message: "bad".into(),
            }),
            ..Default::default()
        };
        if shape & 0x20 != 0 {
            span.attributes
                .push(attr::string("http.route", format!("/r{}", shape % 3)));
            span.attributes
                .push(attr::int("http.status_code", i64::from(shape)));
        }
        if shape & 0x40 != 0 {
            span.attributes
                .push(attr::double("ratio", f64::from(shape) / 3.0));
            span.trace_state = "k=v".into();
        }
        out.push(span);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sel = input.byte();
    let path = Path::new(NAME);
    if sel & 1 == 0 {
        let bytes = input.take(usize::MAX);
        if let Ok(block) = SpanBlock::read(bytes, path) {
            let _ = block.all(bytes);
            let _ = block.trace(bytes, &[1; 16]);
        }
        return;
    }
    let damage = BlockDamage::read(&mut input, sel);
    let spans = spans(&mut input);
    let rs = ResourceSpans {
        resource: None,
        scope_spans: vec![ScopeSpans {
            spans: spans.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut buf = SpanBuffer::new();
    buf.push_resource_spans(&rs);
    let Some(mut bytes) = buf.finish(1).expect("encode") else {
        assert!(spans.is_empty());
        return;
    };
    let Some((block, all)) = damage.apply_and_read(&mut bytes, |b| {
        let block = SpanBlock::read(b, path)?;
        let all = block.all(b)?;
        Ok::<_, lookout_spanstore::BlockError>((block, all))
    }) else {
        return;
    };
    let mut want = spans;
    want.sort_by(|a, b| {
        (&a.trace_id, a.start_time_unix_nano).cmp(&(&b.trace_id, b.start_time_unix_nano))
    });
    let got: Vec<Span> = all.into_iter().map(|s| s.span).collect();
    assert_eq!(got, want, "every span back as it was put in");
    for t in 1..=8u8 {
        let id = [t; 16];
        let by_id: Vec<Span> = block
            .trace(bytes.as_slice(), &id)
            .expect("lookup")
            .into_iter()
            .map(|s| s.span)
            .collect();
        let expect: Vec<&Span> = want.iter().filter(|s| s.trace_id == id).collect();
        assert_eq!(by_id.iter().collect::<Vec<_>>(), expect, "trace {t} by id");
    }
});
