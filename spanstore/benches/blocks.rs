//! Span blocks of `lookout-loadgen` shop traces: encoding speed and size, and trace lookup
//! in a block on disk.
//!
//! `cargo bench -p lookout-spanstore --bench blocks`; `BLOCK_SPANS` sets the spans per
//! block (default 131072). The bytes per span are printed before the timings.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lookout_agent::loadgen::{trace_requests, Args};
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use lookout_spanstore::block::write_durably;
use lookout_spanstore::{SpanBlock, SpanBuffer};

fn spans_per_block() -> usize {
    std::env::var("BLOCK_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(131_072)
}

fn requests() -> Vec<ExportTraceServiceRequest> {
    let args = Args::default();
    trace_requests(&args, 42, spans_per_block().div_ceil(args.batch))
}

fn fill(reqs: &[ExportTraceServiceRequest]) -> SpanBuffer {
    let mut buf = SpanBuffer::new();
    for r in reqs {
        for rs in &r.resource_spans {
            buf.push_resource_spans(rs);
        }
    }
    buf
}

fn bench(c: &mut Criterion) {
    let reqs = requests();
    let buf = fill(&reqs);
    let spans = buf.len();
    let bytes = buf.finish(1).expect("encode").expect("a block");
    let otlp: usize = reqs.iter().map(prost::Message::encoded_len).sum();
    eprintln!(
        "{spans} shop spans: block {} bytes = {:.1} bytes/span (OTLP protobuf {:.1} bytes/span); buffer {} MiB",
        bytes.len(),
        bytes.len() as f64 / spans as f64,
        otlp as f64 / spans as f64,
        buf.stats().bytes >> 20
    );

    let mut g = c.benchmark_group("span_block");
    g.throughput(Throughput::Elements(spans as u64));
    g.sample_size(10);
    g.bench_function("append", |b| b.iter(|| black_box(fill(&reqs).len())));
    g.bench_function("encode", |b| b.iter(|| black_box(buf.finish(1))));
    g.finish();

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("1.blk");
    write_durably(&path, &bytes).expect("write");
    let ids: Vec<[u8; 16]> = reqs
        .iter()
        .step_by(7)
        .filter_map(|r| r.resource_spans.first())
        .filter_map(|rs| rs.scope_spans.first())
        .filter_map(|ss| ss.spans.first())
        .filter_map(|s| s.trace_id.as_slice().try_into().ok())
        .collect();
    let block = SpanBlock::open(&path).expect("open");
    let mut g = c.benchmark_group("span_block_lookup");
    let mut i = 0;
    g.bench_function("trace_by_id_warm", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            let f = std::fs::File::open(&path).expect("open");
            black_box(block.trace(&f, &ids[i]).expect("trace").len())
        })
    });
    g.bench_function("trace_absent", |b| {
        b.iter(|| {
            let f = std::fs::File::open(Path::new(&path)).expect("open");
            black_box(block.trace(&f, &[7; 16]).expect("trace").len())
        })
    });
    g.bench_function("open_block", |b| {
        b.iter(|| black_box(SpanBlock::open(&path).expect("open").footer().rows))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
