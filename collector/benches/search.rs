//! Search latency over a large index: log search over `LOOKOUT_BENCH_LOGS` (default 1M)
//! logs, and trace lookup by id over `LOOKOUT_BENCH_SPANS` (default 1M) spans.
//!
//! `cargo bench -p lookout-collector --bench search`. Building the indexes is set-up and
//! is reported on stderr, not measured.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use lookout_agent::loadgen::SERVICES;
use lookout_collector::store::logs::LogQuery;
use lookout_collector::store::partition::{
    PartitionMeta, PartitionedIndex, TantivyWriter, WriterOptions,
};
use lookout_collector::store::{DocMapper, LogStore, SpanStore};
use lookout_collector::traces::assemble::assemble;
use lookout_ingest::batch::Batch;
use lookout_proto::attr;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_proto::otlp::common::v1::{any_value, AnyValue};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::resource::v1::Resource;
use lookout_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The words of log bodies and names: the load generator's first 24, the set the
/// figures in docs/BENCHMARKS.md were taken with.
const WORDS: &[&str] = lookout_agent::loadgen::WORDS.split_at(24).0;

fn env_count(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A cheap deterministic generator (xorshift) so runs are comparable.
struct Gen(u64);
impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn log_batch(g: &mut Gen, service: &str, n: usize, t0: u64) -> Batch {
    let records = (0..n)
        .map(|i| {
            let body: Vec<&str> = (0..24).map(|_| g.pick(WORDS)).collect();
            let sev = [9, 9, 9, 9, 9, 9, 5, 13, 17][(g.next() % 9) as usize];
            LogRecord {
                time_unix_nano: t0 + i as u64,
                severity_number: sev,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "{} id={}",
                        body.join(" "),
                        g.next() % 100_000
                    ))),
                }),
                attributes: vec![
                    attr::string("http.route", format!("/api/{}", g.pick(WORDS))),
                    attr::string("enduser.id", format!("user-{}", g.next() % 10_000)),
                    attr::string("http.request.method", "GET"),
                ],
                trace_id: g.next().to_le_bytes().repeat(2),
                span_id: g.next().to_le_bytes().to_vec(),
                ..Default::default()
            }
        })
        .collect();
    Batch::Logs(ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    attr::string("service.name", service),
                    attr::string("host.name", "bench"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// One service's part of `ids.len()` traces: 2 spans of each, as that service exports
/// them. A trace's 5 services arrive in 5 different batches, so a trace is 5 documents
/// spread over the index, as in production.
fn span_batch(g: &mut Gen, ids: &[[u8; 16]], service: &str, t0: u64) -> Batch {
    let mut spans = Vec::new();
    for id in ids {
        for s in 0..2u64 {
            spans.push(Span {
                trace_id: id.to_vec(),
                span_id: g.next().to_le_bytes().to_vec(),
                name: format!("GET /api/{}", g.pick(WORDS)),
                kind: 2,
                start_time_unix_nano: t0 + s,
                end_time_unix_nano: t0 + s + g.next() % 1_000_000_000,
                attributes: vec![
                    attr::string("http.route", "/api"),
                    attr::string("http.request.method", "GET"),
                ],
                ..Default::default()
            });
        }
    }
    Batch::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attr::string("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

fn build<M: DocMapper<PartitionedIndex>>(
    idx: &PartitionedIndex,
    mut mapper: M,
    mut next: impl FnMut(u64) -> Option<Batch>,
) {
    let started = Instant::now();
    let (part, writer) = idx.writer(0, 512 << 20, 2).expect("writer");
    let meta = PartitionMeta {
        lsn: 0,
        min_ts: u64::MAX,
        max_ts: 0,
    };
    let mut w = TantivyWriter { part, writer, meta };
    let mut docs = 0u64;
    let mut i = 0u64;
    while let Some(b) = next(i) {
        docs += mapper.add(&b, &mut w).expect("add").docs;
        i += 1;
        if i.is_multiple_of(200) {
            eprintln!(
                "indexed {docs} docs ({:.0}/s)",
                docs as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let TantivyWriter {
        part,
        mut writer,
        mut meta,
    } = w;
    meta.lsn = 1;
    idx.commit(&part, &mut writer, meta).expect("commit");
    // The reader opens on the first search, after the merge: it sees the merged segments.
    writer.wait_merging_threads().expect("merge");
    assert!(!part.reader_open());
    eprintln!(
        "built {docs} docs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

fn bench_logs(c: &mut Criterion) {
    let n = env_count("LOOKOUT_BENCH_LOGS");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LogStore::open(dir.path(), 3600, WriterOptions::default()).expect("open");
    let idx = store.index().clone();
    let mut g = Gen(0x9e3779b97f4a7c15);
    let per = 1000u64;
    build(&idx, store.mapper(), |i| {
        (i * per < n).then(|| {
            let svc = SERVICES[(i % SERVICES.len() as u64) as usize];
            log_batch(
                &mut g,
                svc,
                per as usize,
                1_700_000_000_000_000_000 + i * per,
            )
        })
    });
    let mut group = c.benchmark_group(format!("log_search_{n}"));
    for (name, q) in [
        (
            "term",
            LogQuery {
                q: Some("declined".into()),
                ..Default::default()
            },
        ),
        (
            "two_terms_and_service",
            LogQuery {
                q: Some("payment timeout".into()),
                service: Some("checkout".into()),
                ..Default::default()
            },
        ),
        (
            "attribute",
            LogQuery {
                q: Some("attributes.enduser.id:user-42".into()),
                ..Default::default()
            },
        ),
        (
            "severity_error",
            LogQuery {
                min_severity: Some(17),
                ..Default::default()
            },
        ),
        (
            "phrase",
            LogQuery {
                q: Some("\"cache miss\"".into()),
                ..Default::default()
            },
        ),
        ("all_newest", LogQuery::default()),
    ] {
        let q = LogQuery {
            to_ns: u64::MAX,
            limit: 100,
            ..q
        };
        let hits = store.search(&q).expect("search").total;
        eprintln!("{name}: {hits} hits");
        group.bench_function(name, |b| b.iter(|| store.search(&q).expect("search")));
    }
    group.finish();
}

fn bench_trace_lookup(c: &mut Criterion) {
    let n = env_count("LOOKOUT_BENCH_SPANS");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = Gen(0x2545f4914f6cdd1d);
    let mut ids = Vec::new();
    {
        // Written straight into the block store, a block per 131072 spans as the
        // collector cuts them by default.
        let blocks =
            lookout_spanstore::SpanStore::open(&dir.path().join("spanstore").join("spans"), 3600)
                .expect("open");
        blocks.start_head(0);
        let started = Instant::now();
        // Batches of 100 traces x 2 spans; each group of 100 traces spans 5 batches (n is
        // rounded up to whole groups).
        let mut group: Vec<[u8; 16]> = Vec::new();
        let mut i = 0u64;
        while i / 5 * 1000 < n {
            if i.is_multiple_of(5) {
                group = (0..100)
                    .map(|_| {
                        let mut id = [0u8; 16];
                        id[..8].copy_from_slice(&g.next().to_le_bytes());
                        id[8..].copy_from_slice(&g.next().to_le_bytes());
                        id
                    })
                    .collect();
                ids.extend_from_slice(&group);
            }
            let service = SERVICES[(i % 5) as usize];
            let Batch::Traces(req) = span_batch(
                &mut g,
                &group,
                service,
                1_700_000_000_000_000_000 + i * 1000,
            ) else {
                unreachable!("span_batch makes spans");
            };
            for rs in &req.resource_spans {
                blocks.append(rs, u64::MAX);
            }
            if blocks.head_stats().is_some_and(|s| s.rows >= 131_072) {
                blocks.cut(i + 1).expect("cut");
            }
            i += 1;
        }
        blocks.cut(i + 1).expect("cut");
        let s = blocks.stats();
        eprintln!(
            "built {} spans in {} blocks ({:.1} bytes/span) in {:.1}s",
            s.rows,
            s.blocks,
            s.bytes as f64 / s.rows as f64,
            started.elapsed().as_secs_f64()
        );
    }
    let store = SpanStore::open(dir.path(), 3600).expect("open");
    let mut k = 0usize;
    c.bench_function(&format!("trace_by_id_{n}_spans"), |b| {
        b.iter(|| {
            k = (k + 7919) % ids.len();
            let spans = store.trace(&ids[k]).expect("lookup").found;
            let t = assemble(&hex::encode(ids[k]), "complete", spans);
            assert_eq!(t.spans.len(), 10);
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench_logs, bench_trace_lookup
}
criterion_main!(benches);
