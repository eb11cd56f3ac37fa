//! The span store's trace-summary block reader (`lookout_spanstore::summaries`): footer,
//! sections, pages, column decoders and the search filters, on arbitrary or damaged block
//! files.
//!
//! Input: a selector byte, then
//! - selector bit 0 clear, raw: the rest is the block file as it is;
//! - selector bit 0 set, structured: the harness builds a valid block from summaries it
//!   derives from the input (4 bytes each: trace, version step, start, and a byte choosing
//!   duration, services, operations, errors and attributes), then, when selector bit 1 is
//!   set, damages it: the next u16 is a byte position, the byte after it is XORed in
//!   there, and bit 2 also cuts the file at the u16 after that.
//!
//! Checks, beyond no panic: an undamaged block gives every summary back exactly, its
//! newest version by trace id, and search hits that are exactly each trace's newest
//! version when it matches; a
//! damaged one is refused with an error naming the block, never read as other data.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use lookout_fuzz::{BlockDamage, Input};
use lookout_spanstore::summaries::{
    Summary, SummaryBlock, SummaryBuffer, SummaryQuery, TraceState,
};

const NAME: &str = "fuzz.blk";
const SERVICES: [&str; 3] = ["a", "b", "c"];

fn summaries(input: &mut Input<'_>) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    let mut version = 0u64;
    while !input.is_empty() && out.len() < 1000 {
        let trace = input.byte() % 16;
        version += 1 + u64::from(input.byte() % 4);
        let start = u64::from(input.byte()) * 1000;
        let shape = input.byte();
        let services: Vec<String> = SERVICES
            .iter()
            .take(usize::from(shape % 4))
            .map(|s| s.to_string())
            .collect();
        out.push(Summary {
            trace_id: [trace + 1; 16],
            version,
            state: if shape & 0x80 != 0 {
                TraceState::UpdatedLate
            } else {
                TraceState::Complete
            },
            start,
            end: start.wrapping_add(u64::from(shape) * 3).wrapping_sub(7),
            span_count: u64::from(shape),
            error_count: u64::from(shape & 0x10 != 0),
            late_spans: u64::from(shape >> 6),
            root_service: services.first().cloned().unwrap_or_default(),
            root_operation: format!("op{}", shape % 3),
            ops: services
                .iter()
                .map(|s| (s.clone(), format!("op{}", shape % 3)))
                .collect(),
            services,
            attrs: (0..u64::from((shape >> 2) % 4))
                .map(|i| i * 31 + u64::from(trace))
                .collect(),
            max_lsn: version,
        });
    }
    out
}

fn queries() -> Vec<SummaryQuery> {
    let all = SummaryQuery {
        to_ns: u64::MAX,
        ..SummaryQuery::default()
    };
    vec![
        all.clone(),
        SummaryQuery {
            service: Some("b".into()),
            operation: Some("op1".into()),
            ..all.clone()
        },
        SummaryQuery {
            operation: Some("op2".into()),
            min_duration_ns: Some(100),
            errors_only: true,
            ..all.clone()
        },
        SummaryQuery {
            attrs: vec![31 + 3],
            from_ns: 20_000,
            to_ns: 200_000,
            max_duration_ns: Some(400),
            ..all
        },
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sel = input.byte();
    let path = Path::new(NAME);
    if sel & 1 == 0 {
        let bytes = input.take(usize::MAX);
        if let Ok(block) = SummaryBlock::read(bytes, path) {
            let _ = block.all(bytes);
            let _ = block.latest(bytes, &[1; 16]);
            for q in queries() {
                let _ = block.search(bytes, &q, 10);
            }
        }
        return;
    }
    let damage = BlockDamage::read(&mut input, sel);
    let rows = summaries(&mut input);
    let mut buf = SummaryBuffer::new();
    for s in &rows {
        buf.push(Arc::new(s.clone()));
    }
    let Some(mut bytes) = buf.finish(1).expect("encode") else {
        assert!(rows.is_empty());
        return;
    };
    let Some((block, all)) = damage.apply_and_read(&mut bytes, |b| {
        let block = SummaryBlock::read(b, path)?;
        let all = block.all(b)?;
        Ok::<_, lookout_spanstore::BlockError>((block, all))
    }) else {
        return;
    };
    let mut want = rows;
    want.sort_by_key(|s| (s.trace_id, s.version));
    assert_eq!(all, want, "every summary back as it was put in");
    for t in 1..=16u8 {
        let id = [t; 16];
        let newest = want.iter().rev().find(|s| s.trace_id == id);
        let got = block.latest(bytes.as_slice(), &id).expect("lookup");
        assert_eq!(got.as_ref(), newest, "trace {t} by id");
    }
    for q in queries() {
        let mut hits: Vec<([u8; 16], u64)> = block
            .search(bytes.as_slice(), &q, usize::MAX)
            .expect("search")
            .into_iter()
            .map(|h| (h.trace_id, h.version))
            .collect();
        hits.sort();
        // Each trace's newest version in the block, when it matches.
        let expect: Vec<([u8; 16], u64)> = want
            .iter()
            .enumerate()
            .filter(|(i, s)| want.get(i + 1).is_none_or(|n| n.trace_id != s.trace_id))
            .filter(|(_, s)| s.matches(&q))
            .map(|(_, s)| (s.trace_id, s.version))
            .collect();
        assert_eq!(hits, expect, "{q:?}");
    }
});
