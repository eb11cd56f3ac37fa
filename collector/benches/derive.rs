//! What deriving RED and the service graph costs per span in the trace tracker, over
//! `lookout-loadgen` requests: entry spans classified (`traces::entry`) with the span flags
//! current SDKs set, the same requests without flags (older SDKs: parents looked up in the
//! request, the graph and recent entries, or waited for), and, as the baseline, counting
//! server and consumer spans only.
//!
//! `cargo bench -p lookout-collector --bench derive`; `SHAPE=flat|wide|large|shop`
//! (default shop).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lookout_agent::loadgen::{trace_requests, Args, TraceShape};
use lookout_collector::traces::entry::Entries;
use lookout_collector::traces::graph::{Graph, GraphConfig};
use lookout_collector::traces::red::{Red, RedConfig};
use lookout_ingest::values::{resource_attributes, service_name};
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

fn shape() -> TraceShape {
    match std::env::var("SHAPE").as_deref() {
        Ok("wide") => TraceShape::Wide,
        Ok("large") => TraceShape::Large,
        Ok("flat") => TraceShape::Flat,
        _ => TraceShape::Shop,
    }
}

fn services(req: &ExportTraceServiceRequest) -> Vec<String> {
    req.resource_spans
        .iter()
        .map(|rs| service_name(resource_attributes(rs.resource.as_ref())))
        .collect()
}

fn bench(c: &mut Criterion) {
    let args = Args {
        trace_shape: shape(),
        ..Args::default()
    };
    let flagged = trace_requests(&args, 11, 16);
    let mut flagless = flagged.clone();
    for r in &mut flagless {
        for rs in &mut r.resource_spans {
            for ss in &mut rs.scope_spans {
                for s in &mut ss.spans {
                    s.flags = 0;
                }
            }
        }
    }
    let spans: u64 = flagged
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum();
    let names: Vec<Vec<String>> = flagged.iter().map(services).collect();
    let fresh = || {
        (
            Red::new(RedConfig::default()),
            Graph::new(GraphConfig::default()),
            Entries::new(100_000, 10),
        )
    };
    let mut g = c.benchmark_group("derive");
    g.throughput(Throughput::Elements(spans));
    g.bench_function("server_and_consumer_only", |b| {
        b.iter_batched(
            fresh,
            |(mut red, mut graph, _)| {
                for (req, svcs) in flagged.iter().zip(&names) {
                    for (rs, svc) in req.resource_spans.iter().zip(svcs) {
                        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                            red.observe(100, svc, s);
                            graph.observe(100, svc, s);
                        }
                    }
                }
                black_box((red, graph))
            },
            BatchSize::LargeInput,
        )
    });
    for (name, reqs) in [
        ("entries_flagged", &flagged),
        ("entries_flagless", &flagless),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                fresh,
                |(mut red, mut graph, mut entries)| {
                    for (req, svcs) in reqs.iter().zip(&names) {
                        entries.observe(100, req, svcs, &mut red, &mut graph);
                    }
                    black_box((red, graph, entries))
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
