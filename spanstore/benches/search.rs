//! Trace search over summary blocks, written through the store's API: `SEARCH_SPANS`
//! spans (default 10M) of `lookout-loadgen` shop traces per hour for `SEARCH_HOURS` hours
//! (default 1), summarised per trace as the collector's tracker does (services,
//! `(service, operation)` pairs, hashes of every span and resource attribute, capped at
//! 256), one partition per hour. Blocks are cut as the collector cuts them at that rate
//! (every 30 s, or at 131,072 summaries), so an hour holds about 120 blocks.
//!
//! Queries are built from random stored traces: one of their services and its operation,
//! a minimum duration of half theirs, and one of their attributes, over the whole range,
//! newest 20 — the search `/api/v1/traces` runs for "service + operation + min duration +
//! one attribute". The median and p99 of 200 such searches are printed, with the build
//! time and bytes per span.
//!
//! `cargo bench -p lookout-spanstore --bench search`;
//! `SEARCH_HOURS=24 cargo bench -p lookout-spanstore --bench search` for a day.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_agent::loadgen::{trace_requests, Args};
use lookout_proto::otlp::common::v1::any_value::Value as V;
use lookout_proto::otlp::common::v1::KeyValue;
use lookout_spanstore::summaries::{Summary, SummaryQuery, SummaryStore, TraceState};

const BLOCK_ROWS: u64 = 131_072;
const CUTS_PER_HOUR: u64 = 120;
const HOUR_NS: u64 = 3_600_000_000_000;

/// An attribute hash as the collector makes them (XXH3-64 of the value's text seeded with
/// that of the key): FNV-1a here, a stand-in of the same spread (the bench does not
/// depend on the collector).
fn attr_hash(kv: &KeyValue) -> u64 {
    let text = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kv.key.bytes().chain([0]).chain(text.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One summary per trace of the pool, as the tracker accumulates it.
fn summaries(
    pool: &[lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest],
) -> Vec<Summary> {
    let mut by_trace: HashMap<Vec<u8>, Summary> = HashMap::new();
    let mut order = Vec::new();
    for req in pool {
        for rs in &req.resource_spans {
            let res_attrs = rs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or(&[]);
            let service = res_attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(V::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let s = by_trace.entry(span.trace_id.clone()).or_insert_with(|| {
                        order.push(span.trace_id.clone());
                        Summary {
                            trace_id: span.trace_id.as_slice().try_into().unwrap_or([0; 16]),
                            version: 1,
                            state: TraceState::Complete,
                            start: u64::MAX,
                            end: 0,
                            span_count: 0,
                            error_count: 0,
                            late_spans: 0,
                            root_service: String::new(),
                            root_operation: String::new(),
                            services: Vec::new(),
                            ops: Vec::new(),
                            attrs: Vec::new(),
                            max_lsn: 1,
                        }
                    });
                    s.span_count += 1;
                    s.start = s.start.min(span.start_time_unix_nano);
                    s.end = s.end.max(span.end_time_unix_nano);
                    if span.status.as_ref().is_some_and(|st| st.code == 2) {
                        s.error_count += 1;
                    }
                    if span.parent_span_id.is_empty() {
                        s.root_service = service.clone();
                        s.root_operation = span.name.clone();
                    }
                    if !s.services.contains(&service) {
                        s.services.push(service.clone());
                    }
                    let op = (service.clone(), span.name.clone());
                    if s.ops.len() < 64 && !s.ops.contains(&op) {
                        s.ops.push(op);
                    }
                    for kv in span.attributes.iter().chain(res_attrs) {
                        let h = attr_hash(kv);
                        if s.attrs.len() < 256 && !s.attrs.contains(&h) {
                            s.attrs.push(h);
                        }
                    }
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| by_trace.remove(&id))
        .collect()
}

fn main() {
    let spans_per_hour: u64 = std::env::var("SEARCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let hours: u64 = std::env::var("SEARCH_HOURS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = trace_requests(&Args::default(), 11, 40);
    let templates = summaries(&pool);
    let pool_spans: u64 = templates.iter().map(|s| s.span_count).sum();
    let traces_per_hour = spans_per_hour * templates.len() as u64 / pool_spans.max(1);
    let rows_per_block = (traces_per_hour / CUTS_PER_HOUR).clamp(1, BLOCK_ROWS);
    let t0 = 1_700_000_000_000_000_000u64 / HOUR_NS * HOUR_NS;
    let started = Instant::now();
    let mut queries: Vec<SummaryQuery> = Vec::new();
    let mut g = 0x9e37_79b9_7f4a_7c15u64;
    let mut rng = move || {
        g ^= g << 13;
        g ^= g >> 7;
        g ^= g << 17;
        g
    };
    {
        let store = SummaryStore::open(dir.path(), 3600).expect("open");
        let mut n = 0u64;
        for h in 0..hours {
            store.start_head((t0 / 1_000_000_000 + h * 3600) as i64);
            for i in 0..traces_per_hour {
                let mut s = templates[(n % templates.len() as u64) as usize].clone();
                n += 1;
                s.trace_id[..8].copy_from_slice(&n.to_be_bytes());
                let shift = t0 + h * HOUR_NS + i * HOUR_NS / traces_per_hour;
                let d = s.duration();
                s.start = shift;
                s.end = shift + d;
                s.version = shift;
                if rng() % 997 == 0 && !s.ops.is_empty() && !s.attrs.is_empty() {
                    let (svc, op) = s.ops[(rng() % s.ops.len() as u64) as usize].clone();
                    queries.push(SummaryQuery {
                        service: Some(svc),
                        operation: Some(op),
                        min_duration_ns: Some(d / 2),
                        max_duration_ns: None,
                        errors_only: false,
                        attrs: vec![s.attrs[(rng() % s.attrs.len() as u64) as usize]],
                        from_ns: t0,
                        to_ns: t0 + hours * HOUR_NS,
                    });
                }
                store.with_head(|b| b.push(Arc::new(s))).expect("head");
                if (i + 1) % rows_per_block == 0 {
                    store.cut(n).expect("cut");
                }
            }
            store.cut(n).expect("cut");
        }
    }
    let build = started.elapsed();
    let store = SummaryStore::open(dir.path(), 3600).expect("open");
    let stats = store.stats();
    println!(
        "built {} summaries ({} spans, {:.1} spans per trace) in {} blocks over {} partitions in {:.1}s; {:.1} bytes/span, {:.1} bytes/trace",
        stats.rows,
        stats.rows * pool_spans / templates.len() as u64,
        pool_spans as f64 / templates.len() as f64,
        stats.blocks,
        stats.partitions,
        build.as_secs_f64(),
        stats.bytes as f64 / (stats.rows * pool_spans / templates.len() as u64) as f64,
        stats.bytes as f64 / stats.rows as f64,
    );
    let mut times: Vec<Duration> = Vec::new();
    let mut found = 0usize;
    for q in queries.iter().cycle().take(200) {
        let t = Instant::now();
        let r = store.search(q, 20);
        times.push(t.elapsed());
        assert!(r.unreadable.is_empty());
        assert!(!r.found.is_empty(), "the trace the query came from matches");
        found += r.found.len();
    }
    times.sort();
    let ms = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "search (service + operation + min duration + attribute, limit 20) over {hours} h: median {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} traces each",
        ms(50),
        ms(90),
        ms(99),
        ms(100),
        found as f64 / times.len() as f64
    );
    let all = SummaryQuery {
        from_ns: t0,
        to_ns: t0 + hours * HOUR_NS,
        ..SummaryQuery::default()
    };
    let t = Instant::now();
    let r = store.search(&all, 20);
    println!(
        "search without filters (newest 20 of the range): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(r.found.len(), 20);
}
