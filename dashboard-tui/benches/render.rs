//! Frame render time of the dashboard's views on ratatui's `TestBackend`: the waterfall of
//! a 10k-span trace (target ≤ 16 ms per frame), the logs view and the services view; and
//! the one-off preparation of a trace when it arrives.
//!
//! `cargo bench -p lookout-tui --bench render`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lookout_tui::app::{Action, App, View};
use lookout_tui::client::{Fetch, Fetched, LogsMode};
use lookout_tui::fixtures;
use lookout_tui::state::list::Move;
use lookout_tui::state::traces::Waterfall;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const MS: Duration = Duration::from_millis(1);

fn app_with_trace(spans: usize) -> App {
    let mut a = App::new("http://127.0.0.1:7070", Duration::from_secs(2));
    let f = a.run_command("trace 4bf92f3577b34da6a3ce929d0e0e4736");
    let seq = match f.first() {
        Some(Fetch::Trace { seq, .. }) => *seq,
        _ => 0,
    };
    a.on_fetched(
        Fetched::Trace {
            result: Ok(fixtures::trace(spans)),
            seq,
        },
        MS,
    );
    // The middle of the trace, with the span detail open.
    for _ in 0..spans / 2 {
        a.update(Action::Move(Move::Down));
    }
    a.update(Action::Enter);
    a
}

fn app_with_logs() -> App {
    let mut a = App::new("http://127.0.0.1:7070", Duration::from_secs(2));
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    let f = a.update(Action::Show(View::Logs));
    let seq = match f.first() {
        Some(Fetch::Logs { seq, .. }) => *seq,
        _ => 0,
    };
    a.on_fetched(
        Fetched::Logs {
            result: Ok(fixtures::logs(10_000)),
            mode: LogsMode::Replace,
            seq,
        },
        MS,
    );
    a
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for (w, h) in [(120u16, 40u16), (200, 60)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        let a = app_with_trace(10_000);
        g.bench_with_input(
            BenchmarkId::new("waterfall_10k_spans", format!("{w}x{h}")),
            &a,
            |b, a| b.iter(|| term.draw(|f| lookout_tui::view::draw(f, a)).map(|_| ())),
        );
        let a = app_with_logs();
        g.bench_with_input(
            BenchmarkId::new("logs_10k_rows", format!("{w}x{h}")),
            &a,
            |b, a| b.iter(|| term.draw(|f| lookout_tui::view::draw(f, a)).map(|_| ())),
        );
        let mut a = app_with_logs();
        a.update(Action::Show(View::Services));
        g.bench_with_input(
            BenchmarkId::new("services", format!("{w}x{h}")),
            &a,
            |b, a| b.iter(|| term.draw(|f| lookout_tui::view::draw(f, a)).map(|_| ())),
        );
    }
    g.finish();
}

fn prepare(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace_arrival");
    g.sample_size(20);
    for n in [10_000usize, 50_000] {
        let t = fixtures::trace(n);
        let json = serde_json::to_vec(&t).expect("json");
        g.bench_with_input(BenchmarkId::new("decode_json", n), &json, |b, j| {
            b.iter(|| serde_json::from_slice::<lookout_proto::api::TraceResponse>(j).map(|_| ()))
        });
        g.bench_with_input(BenchmarkId::new("waterfall_new", n), &t, |b, t| {
            b.iter_batched(
                || t.clone(),
                Waterfall::new,
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, frames, prepare);
criterion_main!(benches);
