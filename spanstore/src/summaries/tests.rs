#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use super::*;

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SERVICES: [&str; 4] = ["frontend", "checkout", "payment", "db"];
const OPS: [&str; 3] = ["GET /", "pay", "query"];

fn summary(rng: &mut Rng, trace: u64, version: u64) -> Summary {
    let start = 1_700_000_000_000_000_000 + rng.below(3_600_000_000_000);
    let nsvc = rng.below(4) as usize;
    let services: Vec<String> = (0..nsvc)
        .map(|i| SERVICES[(i + trace as usize) % 4].to_string())
        .collect();
    let ops = services
        .iter()
        .map(|s| (s.clone(), OPS[rng.below(3) as usize].to_string()))
        .collect();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&trace.to_be_bytes());
    id[8] = 0xab;
    Summary {
        trace_id: id,
        version,
        state: if rng.below(5) == 0 {
            TraceState::UpdatedLate
        } else {
            TraceState::Complete
        },
        start,
        end: start + rng.below(2_000_000_000),
        span_count: 1 + rng.below(50),
        error_count: rng.below(3).saturating_sub(1),
        late_spans: rng.below(2),
        root_service: services.first().cloned().unwrap_or_default(),
        root_operation: "GET /".into(),
        services,
        ops,
        // A few common values and one per trace.
        attrs: (0..rng.below(4))
            .map(|i| 100 + i)
            .chain([trace << 20])
            .collect(),
        max_lsn: 1 + rng.below(1_000_000),
    }
}

#[test]
fn every_summary_reads_back_exactly() {
    let mut rng = Rng(7);
    let mut buf = SummaryBuffer::new();
    let mut expect = Vec::new();
    for t in 0..6000u64 {
        for v in 0..1 + rng.below(3) {
            let s = summary(&mut rng, t % 4000, 1000 * t + v);
            expect.push(s.clone());
            buf.push(Arc::new(s));
        }
    }
    // A trace whose end lies before its start, and an empty one.
    let mut odd = summary(&mut rng, 9999, 1);
    odd.end = odd.start - 5;
    odd.services.clear();
    odd.ops.clear();
    odd.attrs.clear();
    odd.root_service.clear();
    expect.push(odd.clone());
    buf.push(Arc::new(odd));
    let bytes = buf.finish(42).unwrap().unwrap();
    let block = SummaryBlock::read(bytes.as_slice(), Path::new("mem")).unwrap();
    assert_eq!(block.footer().lsn, 42);
    assert!(block.footer().pages.len() > 1);
    expect.sort_by_key(|s| (s.trace_id, s.version));
    assert_eq!(block.all(bytes.as_slice()).unwrap(), expect);
    let newest = expect
        .iter()
        .rev()
        .find(|s| s.trace_id == expect[10].trace_id);
    assert_eq!(
        block
            .latest(bytes.as_slice(), &expect[10].trace_id)
            .unwrap()
            .as_ref(),
        newest
    );
    assert!(block.latest(bytes.as_slice(), &[1; 16]).unwrap().is_none());
    let services: std::collections::BTreeSet<&str> = block.services().collect();
    assert_eq!(services.len(), 4);
}

/// Newest version of each trace matching `q`, as the store must answer.
fn brute(all: &[Summary], q: &SummaryQuery, limit: usize) -> Vec<Summary> {
    let mut newest: std::collections::HashMap<[u8; 16], &Summary> = Default::default();
    for s in all {
        let e = newest.entry(s.trace_id).or_insert(s);
        if s.version > e.version {
            *e = s;
        }
    }
    let mut out: Vec<Summary> = newest
        .into_values()
        .filter(|s| s.matches(q))
        .cloned()
        .collect();
    out.sort_by(|a, b| b.start.cmp(&a.start).then(a.trace_id.cmp(&b.trace_id)));
    out.truncate(limit);
    out
}

#[test]
fn searches_answer_the_newest_version_of_each_matching_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = SummaryStore::open(dir.path(), 3600).unwrap();
    let mut rng = Rng(11);
    let mut all = Vec::new();
    // Three blocks and a head; later versions of a trace land in later blocks.
    for round in 0..4u64 {
        store.start_head(7200);
        for t in 0..400u64 {
            if round > 0 && rng.below(3) != 0 {
                continue;
            }
            let s = summary(&mut rng, t, 10 * round + 1);
            all.push(s.clone());
            store.with_head(|b| b.push(Arc::new(s))).unwrap();
        }
        if round < 3 {
            store.cut(round + 1).unwrap().unwrap();
        }
    }
    assert_eq!(store.stats().blocks, 3);
    let base = SummaryQuery {
        from_ns: 0,
        to_ns: u64::MAX,
        ..SummaryQuery::default()
    };
    let queries = [
        base.clone(),
        SummaryQuery {
            service: Some("checkout".into()),
            ..base.clone()
        },
        SummaryQuery {
            service: Some("checkout".into()),
            operation: Some("pay".into()),
            min_duration_ns: Some(500_000_000),
            ..base.clone()
        },
        SummaryQuery {
            operation: Some("query".into()),
            max_duration_ns: Some(1_000_000_000),
            errors_only: true,
            ..base.clone()
        },
        SummaryQuery {
            attrs: vec![101, 102],
            ..base.clone()
        },
        SummaryQuery {
            attrs: vec![17 << 20],
            ..base.clone()
        },
        SummaryQuery {
            service: Some("nobody".into()),
            ..base.clone()
        },
        SummaryQuery {
            from_ns: 1_700_000_000_000_000_000 + 1_000_000_000_000,
            to_ns: 1_700_000_000_000_000_000 + 2_000_000_000_000,
            service: Some("db".into()),
            ..base.clone()
        },
    ];
    for q in &queries {
        let got = store.search(q, 1000);
        assert!(got.unreadable.is_empty());
        assert_eq!(got.found, brute(&all, q, 1000), "{q:?}");
        let few = store.search(q, 5);
        assert_eq!(few.found, brute(&all, q, 5), "{q:?} limit 5");
    }
    let id = all[0].trace_id;
    let newest = all
        .iter()
        .filter(|s| s.trace_id == id)
        .max_by_key(|s| s.version);
    assert_eq!(store.latest(&id).found.as_ref(), newest);
    assert_eq!(
        store.services().0.into_iter().collect::<Vec<_>>(),
        vec!["checkout", "db", "frontend", "payment"]
    );
    assert_eq!(
        store
            .operations("payment")
            .0
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["GET /", "pay", "query"]
    );

    // Reopened, the blocks answer the same (the head's versions are gone with it).
    drop(store);
    let store = SummaryStore::open(dir.path(), 3600).unwrap();
    let stored: Vec<Summary> = all.iter().filter(|s| s.version < 31).cloned().collect();
    for q in &queries {
        assert_eq!(
            store.search(q, 1000).found,
            brute(&stored, q, 1000),
            "{q:?}"
        );
    }
}

#[test]
fn a_damaged_summary_block_is_named_and_the_rest_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SummaryStore::open(dir.path(), 3600).unwrap();
    let mut rng = Rng(3);
    store.start_head(0);
    for t in 0..50 {
        store
            .with_head(|b| b.push(Arc::new(summary(&mut rng, t, 1))))
            .unwrap();
    }
    let first = store.cut(1).unwrap().unwrap();
    store
        .with_head(|b| b.push(Arc::new(summary(&mut rng, 3, 2))))
        .unwrap();
    store.cut(2).unwrap();
    drop(store);
    let mut bytes = std::fs::read(&first).unwrap();
    let n = bytes.len();
    // A data chunk, not the footer: the block opens, its pages do not read.
    bytes[n / 3] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let store = SummaryStore::open(dir.path(), 3600).unwrap();
    let q = SummaryQuery {
        to_ns: u64::MAX,
        ..SummaryQuery::default()
    };
    let got = store.search(&q, 100);
    assert_eq!(got.found.len(), 1, "only the second block answers");
    assert!(!got.unreadable.is_empty());
    assert!(
        got.unreadable
            .iter()
            .all(|e| e.to_string().contains(&first.display().to_string())),
        "{:?}",
        got.unreadable
    );
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&3u64.to_be_bytes());
    id[8] = 0xab;
    assert_eq!(store.latest(&id).found.map(|s| s.version), Some(2));
}

/// Blocks of disjoint time ranges: a search stops early once the newest blocks answer, and
/// still drops traces that a later block updated.
#[test]
fn searches_that_stop_early_answer_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = SummaryStore::open(dir.path(), 3600).unwrap();
    let mut rng = Rng(5);
    let mut all = Vec::new();
    store.start_head(0);
    for round in 0..8u64 {
        for t in 0..200u64 {
            // Each round's traces start in their own minute; some traces of earlier rounds
            // get a new version, keeping their start.
            let mut s = summary(&mut rng, round * 1000 + t, round * 10 + 1);
            s.start = 1_000_000_000_000 + round * 60_000_000_000 + t;
            s.end = s.start + rng.below(2_000_000_000);
            if round > 0 && t % 7 == 0 {
                let old = all
                    .iter()
                    .find(|o: &&Summary| o.trace_id[..8] == ((round - 1) * 1000 + t).to_be_bytes())
                    .cloned()
                    .unwrap();
                let mut newer = old;
                newer.version = round * 10 + 2;
                newer.services.clear();
                newer.ops.clear();
                all.push(newer.clone());
                store.with_head(|b| b.push(Arc::new(newer))).unwrap();
            }
            all.push(s.clone());
            store.with_head(|b| b.push(Arc::new(s))).unwrap();
        }
        store.cut(round + 1).unwrap();
    }
    let base = SummaryQuery {
        to_ns: u64::MAX,
        ..SummaryQuery::default()
    };
    let queries = [
        base.clone(),
        SummaryQuery {
            service: Some("checkout".into()),
            ..base.clone()
        },
        SummaryQuery {
            attrs: vec![100],
            ..base
        },
    ];
    let check = |store: &SummaryStore| {
        for q in &queries {
            for limit in [1, 5, 20, 300] {
                assert_eq!(
                    store.search(q, limit).found,
                    brute(&all, q, limit),
                    "{q:?} {limit}"
                );
            }
        }
        for s in all.iter().step_by(37) {
            let newest = all
                .iter()
                .filter(|o| o.trace_id == s.trace_id)
                .max_by_key(|o| o.version);
            assert_eq!(store.latest(&s.trace_id).found.as_ref(), newest);
        }
    };
    check(&store);
    // Compacted in runs (newer versions now sit in blocks older than the newest), then
    // into one block: the same answers.
    assert_eq!(store.compact_once(1000).unwrap().unwrap().blocks, 4);
    check(&store);
    while store.compact_once(10_000).unwrap().is_some() {}
    assert_eq!(store.stats().blocks, 1);
    check(&store);
}
