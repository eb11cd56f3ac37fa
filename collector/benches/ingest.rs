//! What each step of the ingest path costs per span, in-process, over `lookout-loadgen`
//! requests of 512 spans: the wire walk that sizes a request before decoding
//! (`prescan::scan`), prost's decode, the checks (`validate::sanitize`), the decoded
//! size (`Batch::heap_size`) and freeing the decoded request; and the OTLP/JSON decode
//! of the same requests, with the peak heap it takes (a counting allocator). The span
//! store's append is in `cargo bench -p lookout-spanstore --bench blocks`.
//!
//! `cargo bench -p lookout-collector --bench ingest`; `SHAPE=flat|wide|large|shop`
//! (default flat).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lookout_agent::loadgen::{trace_requests, Args, TraceShape};
use lookout_ingest::validate::{sanitize, Limits};
use lookout_ingest::{prescan, Batch, Signal};
use prost::Message;

/// The system allocator, counting the bytes live and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The peak of live heap bytes while `f` runs, above what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - before)
}

fn shape() -> TraceShape {
    match std::env::var("SHAPE").as_deref() {
        Ok("wide") => TraceShape::Wide,
        Ok("large") => TraceShape::Large,
        Ok("shop") => TraceShape::Shop,
        _ => TraceShape::Flat,
    }
}

fn bench(c: &mut Criterion) {
    let args = Args {
        trace_shape: shape(),
        ..Args::default()
    };
    let bodies: Vec<Vec<u8>> = trace_requests(&args, 7, 16)
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    let decoded: Vec<Batch> = bodies
        .iter()
        .filter_map(|b| Batch::decode_protobuf(Signal::Traces, b).ok())
        .collect();
    let spans: u64 = decoded.iter().map(Batch::item_count).sum();
    let wire: usize = bodies.iter().map(Vec::len).sum();
    let heap: u64 = decoded.iter().map(Batch::heap_size).sum();
    let bound: u64 = bodies
        .iter()
        .filter_map(|b| prescan::scan(Signal::Traces, b).ok())
        .map(|s| s.decoded_bytes)
        .sum();
    println!(
        "{spans} spans: {:.1} bytes per span on the wire, {:.1} decoded, {:.1} bounded by the scan",
        wire as f64 / spans as f64,
        heap as f64 / spans as f64,
        bound as f64 / spans as f64
    );
    let json: Vec<Vec<u8>> = decoded
        .iter()
        .filter_map(|b| match b {
            Batch::Traces(r) => Some(lookout_proto::json::encode_traces(r)),
            _ => None,
        })
        .collect();
    let (_, peak_protobuf) = peak_during(|| Batch::decode_protobuf(Signal::Traces, &bodies[0]));
    let (_, peak_json) = peak_during(|| Batch::decode_json(Signal::Traces, &json[0]));
    let per = |n: usize| n as f64 / (spans as f64 / bodies.len() as f64);
    println!(
        "one request: {} bytes protobuf, {} bytes JSON; peak heap decoding: protobuf {} bytes \
         ({:.0} per span), JSON {} bytes ({:.0} per span, {:.1}x the JSON)",
        bodies[0].len(),
        json[0].len(),
        peak_protobuf,
        per(peak_protobuf),
        peak_json,
        per(peak_json),
        peak_json as f64 / json[0].len() as f64
    );
    let limits = Limits {
        max_attributes: 128,
        max_attribute_length: 16 << 10,
        max_time_unix_nano: u64::MAX,
        max_span_duration_nanos: u64::MAX,
    };

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("prescan", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(prescan::scan(Signal::Traces, body).ok());
            }
        })
    });
    g.bench_function("decode", |b| {
        b.iter_batched(
            || (),
            |()| {
                bodies
                    .iter()
                    .filter_map(|body| Batch::decode_protobuf(Signal::Traces, body).ok())
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("decode_json", |b| {
        b.iter_batched(
            || (),
            |()| {
                json.iter()
                    .filter_map(|body| Batch::decode_json(Signal::Traces, body).ok())
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("sanitize", |b| {
        b.iter_batched(
            || decoded.clone(),
            |mut batches| {
                for batch in &mut batches {
                    black_box(sanitize(batch, &limits, 0));
                }
                batches
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("heap_size", |b| {
        b.iter(|| decoded.iter().map(Batch::heap_size).sum::<u64>())
    });
    g.bench_function("free", |b| {
        b.iter_batched(|| decoded.clone(), drop, BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
