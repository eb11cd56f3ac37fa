//! Trace lookup by id over a week of hourly partitions, written through the store's API
//! with fabricated ingest partitions: `WEEK_SPANS` spans (default 5M; the figure is
//! 50M) of `lookout-loadgen` shop traces spread over 168 partitions, blocks cut every
//! 131,072 spans as the collector does by default. Then the store is opened again (as
//! after a restart) and traces are looked up: the first lookup, then a random sample
//! warm; median and p99 are printed, with the build and open times.
//!
//! `WEEK_SPANS=50000000 cargo bench -p lookout-spanstore --bench week` (needs about
//! 20 bytes of disk per span in the temporary directory; `WEEK_DIR` sets where).

use std::time::{Duration, Instant};

use lookout_agent::loadgen::{trace_requests, Args};
use lookout_spanstore::SpanStore;

const PARTITIONS: u64 = 168;
const BLOCK_SPANS: usize = 131_072;

fn main() {
    let total: u64 = std::env::var("WEEK_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let parent =
        std::env::var("WEEK_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(parent).expect("tempdir");
    // A pool of requests reused with new trace ids each round (ids XORed with the round)
    // and shifted timestamps, so generation does not dominate the build.
    let mut pool = trace_requests(&Args::default(), 7, 40);
    let pool_spans: u64 = pool
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum();
    let per_partition = total / PARTITIONS;
    let hour = 3_600_000_000_000u64;
    let week_start = 1_700_000_000 / 3600 * 3600;
    let mut sample: Vec<[u8; 16]> = Vec::new();
    let started = Instant::now();
    {
        let store = SpanStore::open(dir.path(), 3600).expect("open");
        let mut round = 0u64;
        let mut written = 0u64;
        for p in 0..PARTITIONS {
            let key = week_start + (p * 3600) as i64;
            store.start_head(key);
            let mut in_part = 0u64;
            while in_part < per_partition {
                round += 1;
                for req in &mut pool {
                    for rs in &mut req.resource_spans {
                        for ss in &mut rs.scope_spans {
                            for s in &mut ss.spans {
                                // Same round, same new id for every span of a trace.
                                let mut hi = [0u8; 8];
                                hi.copy_from_slice(&s.trace_id[..8]);
                                let prev = round - 1;
                                let id = u64::from_le_bytes(hi) ^ prev ^ round;
                                s.trace_id[..8].copy_from_slice(&id.to_le_bytes());
                                s.start_time_unix_nano += if round == 1 { 0 } else { hour / 8 };
                                s.end_time_unix_nano += if round == 1 { 0 } else { hour / 8 };
                            }
                        }
                        store.append(rs, u64::MAX);
                    }
                    if let Some(id) = req
                        .resource_spans
                        .first()
                        .and_then(|rs| rs.scope_spans.first())
                        .and_then(|ss| ss.spans.first())
                        .and_then(|s| <[u8; 16]>::try_from(s.trace_id.as_slice()).ok())
                    {
                        if round.is_multiple_of(31) {
                            sample.push(id);
                        }
                    }
                    if store.head_stats().is_some_and(|s| s.rows >= BLOCK_SPANS) {
                        store.cut(round).expect("cut");
                    }
                }
                in_part += pool_spans;
                written += pool_spans;
            }
            store.cut(round).expect("cut");
            if p % 24 == 23 {
                eprintln!(
                    "{} of {PARTITIONS} partitions, {written} spans, {:.0} spans/s",
                    p + 1,
                    written as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let build = started.elapsed();
    let t = Instant::now();
    let store = SpanStore::open(dir.path(), 3600).expect("open");
    let open = t.elapsed();
    let stats = store.stats();
    println!(
        "built {} spans in {} blocks over {} partitions in {:.1}s ({:.0} spans/s); {:.1} bytes/span; open {:.1} ms",
        stats.rows,
        stats.blocks,
        stats.partitions,
        build.as_secs_f64(),
        stats.rows as f64 / build.as_secs_f64(),
        stats.bytes as f64 / stats.rows as f64,
        open.as_secs_f64() * 1e3
    );
    let mut g = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = || {
        g ^= g << 13;
        g ^= g >> 7;
        g ^= g << 17;
        sample[(g % sample.len() as u64) as usize]
    };
    let t = Instant::now();
    let first = store.trace(&pick());
    let first_ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(!first.spans.is_empty(), "the first sampled trace is found");
    let mut times: Vec<Duration> = Vec::new();
    let mut spans = 0usize;
    for _ in 0..1000 {
        let id = pick();
        let t = Instant::now();
        let found = store.trace(&id);
        times.push(t.elapsed());
        assert!(!found.spans.is_empty(), "a sampled trace is found");
        spans += found.spans.len();
    }
    times.sort();
    let absent = Instant::now();
    for i in 0..1000u64 {
        let mut id = [0xabu8; 16];
        id[..8].copy_from_slice(&i.to_le_bytes());
        assert!(store.trace(&id).spans.is_empty());
    }
    println!(
        "trace by id: first after open {first_ms:.2} ms; warm median {:.2} ms, p99 {:.2} ms over 1000 ({:.1} spans each); absent id {:.3} ms each",
        times[500].as_secs_f64() * 1e3,
        times[990].as_secs_f64() * 1e3,
        spans as f64 / 1000.0,
        absent.elapsed().as_secs_f64() * 1e3 / 1000.0
    );
}
