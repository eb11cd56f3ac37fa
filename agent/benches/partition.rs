//! What splitting a batch into partitions costs per span (and with the message ids, the
//! protobuf encoding of each part), over `lookout-loadgen` requests. It lives in the agent,
//! which publishes split batches and owns the load generator.
//!
//! `cargo bench -p lookout-agent --bench partition`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lookout_agent::loadgen::{trace_requests, Args, TraceShape};
use lookout_cluster::{partition, split};
use lookout_ingest::Batch;

fn bench(c: &mut Criterion) {
    let args = Args {
        trace_shape: TraceShape::Shop,
        ..Args::default()
    };
    let reqs = trace_requests(&args, 5, 16);
    let spans: u64 = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum();
    let mut g = c.benchmark_group("partition");
    g.throughput(Throughput::Elements(spans));
    for p in [16u32, 256] {
        g.bench_function(format!("split_traces_{p}"), |b| {
            b.iter_batched(
                || reqs.clone(),
                |reqs| {
                    for r in reqs {
                        black_box(partition::split_traces(r, p));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("split_encode_and_id_16", |b| {
        b.iter_batched(
            || reqs.clone(),
            |reqs| {
                for r in reqs {
                    black_box(split(Batch::Traces(r), 16));
                }
            },
            BatchSize::LargeInput,
        )
    });
    // What a publisher does with an encoded request (a buffer record, a gateway's
    // request): decode, split and encode, against the split on the wire.
    let bodies: Vec<Vec<u8>> = reqs.iter().map(prost::Message::encode_to_vec).collect();
    g.bench_function("decode_split_encode_16", |b| {
        b.iter(|| {
            for body in &bodies {
                let batch = Batch::decode_protobuf(lookout_ingest::Signal::Traces, body);
                black_box(batch.map(|b| split(b, 16)).ok());
            }
        })
    });
    g.bench_function("wire_split_and_id_16", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(
                    lookout_cluster::fit::messages_of_encoded(
                        lookout_ingest::Signal::Traces,
                        body,
                        16,
                        lookout_cluster::fit::MAX_MESSAGE_BYTES,
                    )
                    .ok(),
                );
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
