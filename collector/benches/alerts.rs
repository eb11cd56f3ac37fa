//! Cost of one alert evaluation round: 1,000 rules (a p99-latency and an error-rate rule
//! for each of 500 services) over RED metrics of 500 services x 4 operations with a
//! minute of traffic. At one round per second, the median time per round is the share
//! of a core alerting takes (100 ms = 10%).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use lookout_collector::alerts::{bench_evaluator, AlertMetrics, AlertsConfig};
use lookout_collector::traces::tracker::TracesShared;
use lookout_config::{CollectorConfig, TracesConfig};
use lookout_proto::otlp::trace::v1::span::SpanKind;
use lookout_proto::otlp::trace::v1::status::StatusCode;
use lookout_proto::otlp::trace::v1::{Span, Status};

const SERVICES: usize = 500;

fn bench_evaluation(c: &mut Criterion) {
    let shared = Arc::new(TracesShared::new(&TracesConfig::default()));
    let now_s = 1_800_000_000u64;
    {
        let mut red = shared.red.lock();
        let mut x = 1u64;
        for sec in 0..60u64 {
            for svc in 0..SERVICES {
                for i in 0..8u64 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let span = Span {
                        trace_id: x.to_le_bytes().repeat(2),
                        span_id: x.to_le_bytes().to_vec(),
                        name: format!("GET /route/{}", i % 4),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: 0,
                        end_time_unix_nano: (x >> 40) % 2_000_000_000,
                        status: x.is_multiple_of(50).then(|| Status {
                            code: StatusCode::Error as i32,
                            message: String::new(),
                        }),
                        ..Default::default()
                    };
                    red.observe(now_s - 60 + sec, &format!("svc-{svc}"), &span);
                }
            }
        }
    }
    let mut text = String::from("[receivers.r]\nurl = \"http://127.0.0.1:9/hook\"\n");
    for svc in 0..SERVICES {
        text.push_str(&format!(
            "[[alerts]]\nname = \"p99-{svc}\"\nservice = \"svc-{svc}\"\nsignal = \"latency_p99\"\nthreshold = 1500\nwindow = \"1m\"\nreceivers = [\"r\"]\n\
             [[alerts]]\nname = \"err-{svc}\"\nservice = \"svc-{svc}\"\nsignal = \"error_rate\"\nthreshold = 0.05\nwindow = \"5m\"\nreceivers = [\"r\"]\n"
        ));
    }
    let cfg: CollectorConfig =
        lookout_config::parse(&text, std::path::Path::new("bench.toml")).expect("config");
    let metrics = AlertMetrics::register(&prometheus::Registry::new()).expect("metrics");
    let mut eval = bench_evaluator(AlertsConfig::from_collector(&cfg), shared, metrics);
    let now_ms = i64::try_from(now_s * 1000).expect("time");
    assert_eq!(eval(now_ms), 2 * SERVICES);
    c.bench_function("alerts_1000_rules_500_services_round", |b| {
        b.iter(|| eval(now_ms))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_evaluation
}
criterion_main!(benches);
