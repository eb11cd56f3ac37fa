//! State updates driven by plain actions, and render tests on ratatui's `TestBackend`.
#![allow(clippy::panic)]

use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use lookout_proto::api::LogsResponse;

use crate::app::{Action, App, Conn, View};
use crate::client::{Fetch, FetchError, Fetched, LogsMode};
use crate::fixtures;
use crate::state::input::Edit;
use crate::state::list::Move;

const MS: Duration = Duration::from_millis(3);

fn app() -> App {
    App::new("http://127.0.0.1:7070", Duration::from_secs(2))
}

fn typed(app: &mut App, text: &str) -> Vec<Fetch> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(app.update(Action::Edit(Edit::Char(c))));
    }
    out
}

fn services_fetch(window: &str) -> Fetch {
    Fetch::Services {
        window: window.into(),
    }
}

fn logs_seq(f: &[Fetch]) -> u64 {
    match f.first() {
        Some(Fetch::Logs { seq, .. }) => *seq,
        other => panic!("expected a logs fetch, got {other:?}"),
    }
}

/// An app with every view's data loaded.
fn loaded() -> App {
    let mut a = app();
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    let f = a.update(Action::Show(View::Logs));
    let seq = logs_seq(&f);
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(fixtures::logs(60)));
    let f = a.update(Action::Show(View::Traces));
    let Some(Fetch::Traces { seq, .. }) = f.first() else {
        panic!("expected a trace search, got {f:?}");
    };
    a.on_fetched(
        Fetched::Traces {
            result: Ok(fixtures::traces(40)),
            seq: *seq,
        },
        MS,
    );
    a.on_fetched(Fetched::Alerts(Ok(fixtures::alerts())), MS);
    a.on_fetched(Fetched::Dependencies(Ok(fixtures::dependencies())), MS);
    a.update(Action::Show(View::Services));
    a
}

fn open_trace(a: &mut App, spans: usize) {
    let f = a.run_command("trace 4bf92f3577b34da6a3ce929d0e0e4736");
    let Some(Fetch::Trace { seq, .. }) = f.first() else {
        panic!("expected a trace fetch, got {f:?}");
    };
    a.on_fetched(
        Fetched::Trace {
            result: Ok(fixtures::trace(spans)),
            seq: *seq,
        },
        MS,
    );
}

/// The screen as text, one string per row.
fn render(app: &App, w: u16, h: u16) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| crate::view::draw(f, app)).expect("draw");
    let buf = t.backend().buffer().clone();
    (0..h)
        .map(|y| {
            let mut line = String::new();
            let mut x = 0;
            while x < w {
                let cell = &buf[(x, y)];
                line.push_str(cell.symbol());
                x += 1;
            }
            line
        })
        .collect()
}

/// The fetcher's answer to logs query `seq`.
fn answer_logs(a: &mut App, seq: u64, mode: LogsMode, result: Result<LogsResponse, FetchError>) {
    a.on_fetched(Fetched::Logs { result, mode, seq }, MS);
}

fn screen(app: &App, w: u16, h: u16) -> String {
    render(app, w, h).join("\n")
}

/// The screen's text with every run of blanks and line ends as one space, so that text
/// wrapped over lines reads as one.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[track_caller]
fn assert_shows(s: &str, needles: &[&str]) {
    for n in needles {
        assert!(s.contains(n), "screen lacks {n:?}:\n{s}");
    }
}

// ---- state updates ----

#[test]
fn start_fetches_services_and_enter_opens_the_services_traces_and_logs() {
    let mut a = app();
    assert_eq!(a.start(), vec![services_fetch("5m")]);
    assert_eq!(
        a.tick(),
        vec![],
        "no second request while one is on its way"
    );
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    assert_eq!(a.conn, Conn::Up { latency: MS });
    a.update(Action::SortNext); // by rate: frontend, inventory, checkout, payment
    a.update(Action::Move(Move::Down));
    assert_eq!(a.services.selected().as_deref(), Some("inventory"));
    let f = a.update(Action::Enter);
    assert_eq!(a.view, View::Traces);
    let Some(Fetch::Traces { query, .. }) = f.first() else {
        panic!("expected a trace search, got {f:?}");
    };
    assert!(query
        .params
        .contains(&("service".to_string(), "inventory".to_string())));
    assert_eq!(a.logs.service.as_deref(), Some("inventory"));
}

#[test]
fn w_cycles_the_services_window_and_a_refused_one_is_explained() {
    let mut a = loaded();
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    assert_shows(
        &screen(&a, 80, 24),
        &["window 5m (w)", "Services (4) over the last 5m"],
    );
    assert_eq!(a.key(key('w')), vec![services_fetch("15m")]);
    // The collector keeps 5 minutes by default: it refuses 15m, and says why.
    a.on_fetched(
        Fetched::Services(Err(FetchError::Api {
            status: 400,
            message: "parameter `window`: must be more than 0 and at most traces.red_window (300s)"
                .into(),
        })),
        MS,
    );
    for (w, h) in [(80, 24), (200, 50)] {
        assert_shows(
            &screen(&a, w, h),
            &[
                "window 15m (w)",
                "parameter `window`: must be more than 0",
                "Services (4) over the last 5m",
                "checkout",
            ],
        );
    }
    assert_eq!(
        a.tick(),
        vec![services_fetch("15m")],
        "refreshes ask for it"
    );
    assert_eq!(a.key(key('w')), vec![services_fetch("1h")]);
    assert_eq!(a.key(key('w')), vec![services_fetch("1m")]);
    let mut one = fixtures::services();
    one.window_s = 60;
    a.on_fetched(Fetched::Services(Ok(one)), MS);
    assert_shows(
        &screen(&a, 80, 24),
        &["window 1m (w)", "Services (4) over the last 1m"],
    );
    assert!(a.services.error.is_none());
}

#[test]
fn services_filter_and_selection_survive_a_refresh() {
    let mut a = loaded();
    a.update(Action::Focus);
    typed(&mut a, "PAY");
    assert!(a.editing());
    assert_eq!(a.services.rows().len(), 1);
    a.update(Action::Submit);
    assert!(!a.editing());
    a.update(Action::Back);
    assert_eq!(a.services.rows().len(), 4, "Esc clears the filter");
    a.update(Action::Move(Move::Bottom));
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    assert_eq!(a.services.selected().as_deref(), Some("payment"));
}

#[test]
fn a_log_query_is_sent_and_stale_answers_are_ignored() {
    let mut a = app();
    let first = logs_seq(&a.update(Action::Show(View::Logs)));
    a.update(Action::Focus);
    typed(&mut a, "severity:error AND timeout");
    let f = a.update(Action::Submit);
    let Some(Fetch::Logs { query, mode, seq }) = f.first().cloned() else {
        panic!("expected a logs fetch, got {f:?}");
    };
    assert_eq!(query.q, "severity:error AND timeout");
    assert_eq!(query.from.as_deref(), Some("1h"));
    assert_eq!(mode, LogsMode::Replace);
    // The answer to the first query arrives late: ignored.
    answer_logs(&mut a, first, LogsMode::Replace, Ok(fixtures::logs(5)));
    assert!(a.logs.entries.is_empty());
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(fixtures::logs(3)));
    assert_eq!(a.logs.entries.len(), 3);
    assert_eq!(a.logs.input.history(), ["severity:error AND timeout"]);
}

#[test]
fn a_refused_query_shows_the_collectors_message_and_keeps_the_rows() {
    let mut a = loaded();
    a.update(Action::Show(View::Logs));
    a.update(Action::Focus);
    typed(&mut a, "body:(");
    let seq = logs_seq(&a.update(Action::Submit));
    answer_logs(
        &mut a,
        seq,
        LogsMode::Replace,
        Err(FetchError::Api {
            status: 400,
            message: "parameter `q`: syntax error at position 5".into(),
        }),
    );
    assert_eq!(
        a.logs.error.as_deref(),
        Some("parameter `q`: syntax error at position 5")
    );
    assert_eq!(a.logs.entries.len(), 60);
    assert!(matches!(a.conn, Conn::Up { .. }), "a 400 is not an outage");
    let s = screen(&a, 80, 24);
    assert_shows(&s, &["syntax error at position 5"]);
}

#[test]
fn scrolling_near_the_end_fetches_older_logs_without_duplicates() {
    let mut a = app();
    let seq = logs_seq(&a.update(Action::Show(View::Logs)));
    let page = fixtures::logs(200);
    let boundary = page.logs[199].clone();
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(page.clone()));
    assert_eq!(a.logs.total, 2000);
    assert!(a.update(Action::Move(Move::Down)).is_empty());
    let f = a.update(Action::Move(Move::Bottom));
    let Some(Fetch::Logs { query, mode, .. }) = f.first() else {
        panic!("expected an older page, got {f:?}");
    };
    assert_eq!(*mode, LogsMode::Older);
    assert_eq!(query.to.as_deref(), Some(boundary.timestamp.as_str()));
    assert!(
        a.update(Action::Move(Move::Up)).is_empty(),
        "one page at a time"
    );
    // The older page starts with the boundary record again (`to` is inclusive).
    let mut older = fixtures::logs(1);
    older.logs = vec![boundary.clone()];
    let mut next = boundary.clone();
    next.timestamp_unix_nano -= 1;
    next.body = "older".into();
    older.logs.push(next);
    answer_logs(&mut a, seq, LogsMode::Older, Ok(older));
    assert_eq!(a.logs.entries.len(), 201);
    assert_eq!(a.logs.entries[200].body, "older");
    assert!(a.logs.exhausted, "a short page ends the scroll");
}

#[test]
fn follow_mode_refreshes_on_every_tick_and_stops_when_scrolling() {
    let mut a = loaded();
    a.update(Action::Show(View::Logs));
    let seq = logs_seq(&a.update(Action::ToggleFollow));
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(fixtures::logs(10)));
    assert_eq!(logs_seq(&a.tick()), seq + 1);
    assert_shows(&screen(&a, 80, 24), &["FOLLOWING"]);
    a.update(Action::Move(Move::Down));
    assert!(!a.logs.follow);
    assert!(a.flash.as_deref().unwrap_or("").contains("follow off"));
}

/// A record newer than every one of [`fixtures::logs`], `i` seconds after the newest.
fn newer_log(i: u64) -> lookout_proto::api::LogEntry {
    let mut e = fixtures::logs(1).logs.remove(0);
    e.timestamp_unix_nano += i * 1_000_000_000;
    e.body = format!("newer record {i}");
    e
}

#[test]
fn logs_refresh_outside_follow_mode_and_keep_the_rows_in_place() {
    let mut a = loaded();
    a.update(Action::Show(View::Logs));
    for _ in 0..25 {
        a.update(Action::Move(Move::Down));
    }
    let before = render(&a, 80, 24);
    let row_of = |screen: &[String], needle: &str| screen.iter().position(|l| l.contains(needle));
    let sel_row = row_of(&before, "order 25 placed").expect("the selected record is shown");
    // Every refresh asks for the newest page, to be joined at the top; one at a time.
    let f = a.tick();
    let Some(Fetch::Logs { mode, seq, query }) = f.first().cloned() else {
        panic!("expected a refresh of the logs, got {f:?}");
    };
    assert_eq!((mode, seq), (LogsMode::Newer, a.logs.seq));
    assert_eq!(query.from.as_deref(), Some("1h"));
    assert!(a.tick().is_empty(), "one refresh at a time");
    // Three records arrived: they join the top, the cursor stays on its record, and the
    // screen shows the same rows in the same places.
    let mut page = fixtures::logs(60);
    page.total = 603;
    page.logs.truncate(57);
    for i in 1..=3 {
        page.logs.insert(0, newer_log(i));
    }
    answer_logs(&mut a, seq, LogsMode::Newer, Ok(page));
    assert_eq!(a.logs.entries.len(), 63);
    assert_eq!(a.logs.entries[0].body, "newer record 3");
    assert_eq!(
        a.logs.selected().map(|e| e.body.as_str()),
        Some("order 25 placed for user-75")
    );
    let after = render(&a, 80, 24);
    assert_eq!(
        row_of(&after, "order 25 placed"),
        Some(sel_row),
        "{after:#?}"
    );
    assert_eq!(after[3..], before[3..], "the rows on screen did not move");
    assert_shows(&after.join("\n"), &["63 of 603 matches", "↑3 new"]);
    // Going to the top shows them and forgets the count.
    a.update(Action::Move(Move::Top));
    assert_shows(&screen(&a, 80, 24), &["newer record 3"]);
    assert_eq!(a.logs.new_above, 0);
    // More than a page arrived while reading further down: the list stays, and says so;
    // going to the top loads the newest.
    a.update(Action::Move(Move::PageDown));
    let seq = logs_seq(&a.tick());
    let flood = LogsResponse {
        total: 5000,
        logs: (10..20).rev().map(newer_log).collect(),
        took_ms: 1.0,
        warnings: Vec::new(),
    };
    answer_logs(&mut a, seq, LogsMode::Newer, Ok(flood));
    assert_eq!(a.logs.entries.len(), 63);
    assert_shows(&screen(&a, 80, 24), &["newer records: g or r loads them"]);
    let f = a.update(Action::Move(Move::Top));
    assert!(
        matches!(
            f.first(),
            Some(Fetch::Logs {
                mode: LogsMode::Replace,
                ..
            })
        ),
        "{f:?}"
    );
}

#[test]
fn a_log_line_jumps_to_its_trace_and_span() {
    let mut a = loaded();
    a.update(Action::Show(View::Logs));
    a.update(Action::Move(Move::Down));
    a.update(Action::JumpToTrace);
    assert!(a.flash.as_deref().unwrap_or("").contains("no trace id"));
    a.update(Action::Move(Move::Down));
    a.update(Action::Move(Move::Down));
    let f = a.update(Action::JumpToTrace);
    assert_eq!(a.view, View::Traces);
    let Some(Fetch::Trace { id, seq }) = f.first().cloned() else {
        panic!("expected a trace fetch, got {f:?}");
    };
    assert_eq!(id, format!("{:032x}", 4));
    let mut t = fixtures::trace(20);
    t.trace_id = id;
    a.on_fetched(Fetched::Trace { result: Ok(t), seq }, MS);
    let o = a.traces.open.as_ref().expect("open trace");
    assert_eq!(
        o.selected_span().map(|s| s.span_id.clone()),
        Some(format!("{:016x}", 4)),
        "the log's span is selected"
    );
}

#[test]
fn waterfall_folds_subtrees_and_opens_span_detail_with_its_logs() {
    let mut a = loaded();
    open_trace(&mut a, 21);
    let w = a
        .traces
        .open
        .as_ref()
        .and_then(|o| o.waterfall.as_ref())
        .expect("waterfall");
    assert_eq!(w.visible.len(), 21);
    assert_eq!(w.rows[0].descendants, 20);
    a.update(Action::Move(Move::Down));
    a.update(Action::ToggleCollapse);
    let o = a.traces.open.as_ref().expect("open");
    let w = o.waterfall.as_ref().expect("waterfall");
    assert_eq!(w.visible.len(), 21 - w.rows[1].descendants);
    assert_eq!(o.sel.selected(), 1);
    let f = a.update(Action::Enter);
    let Some(Fetch::SpanLogs { span_id, seq }) = f.first().cloned() else {
        panic!("expected the span's logs, got {f:?}");
    };
    assert_eq!(span_id, format!("{:016x}", 2));
    a.on_fetched(
        Fetched::SpanLogs {
            result: Ok(fixtures::logs(2)),
            seq,
        },
        MS,
    );
    assert_shows(
        &screen(&a, 120, 40),
        &["logs of this span", "order 1 placed"],
    );
    a.update(Action::Back);
    assert!(a.traces.open.as_ref().is_some_and(|o| !o.detail));
    a.update(Action::Back);
    assert!(a.traces.open.is_none(), "Esc goes back to the list");
}

/// The span under the cursor of the open trace.
fn selected_span(a: &App) -> Option<lookout_proto::api::SpanView> {
    a.traces.open.as_ref()?.selected_span().cloned()
}

#[test]
fn slash_in_a_trace_finds_spans_and_n_steps_through_them() {
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    let mut a = loaded();
    open_trace(&mut a, 30);
    // The six shipping spans (4, 9, 14, 19, 24, 29) in the waterfall's order; the parent
    // of the second is folded, hiding it.
    let ids: Vec<String> = {
        let o = a.traces.open.as_mut().expect("open");
        let w = o.waterfall.as_mut().expect("waterfall");
        let rows = w.find("shipping");
        let ids: Vec<String> = rows
            .iter()
            .map(|&r| w.trace.spans[w.rows[r].span].span_id.clone())
            .collect();
        let parent = w.trace.spans[w.rows[rows[1]].span]
            .parent_span_id
            .clone()
            .expect("a parent");
        let v = w.find_span(&parent).expect("parent shown");
        w.toggle(v);
        assert!(w.find_span(&ids[1]).is_none(), "folded away");
        ids
    };
    assert_eq!(ids.len(), 6);
    assert_eq!(a.key_action(key('/')), Some(Action::Focus));
    a.key(key('/'));
    assert!(a.editing());
    assert_eq!(a.key_action(key('n')), Some(Action::Edit(Edit::Char('n'))));
    for c in "SHIPP".chars() {
        a.key(key(c));
    }
    assert_shows(&screen(&a, 80, 24), &["/SHIPP"]);
    a.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(!a.editing());
    assert_eq!(selected_span(&a).map(|s| s.span_id), Some(ids[0].clone()));
    assert_shows(&screen(&a, 80, 24), &["match 1 of 6 for \"SHIPP\""]);
    // n goes on, unfolding what hides the next one; N goes back, wrapping around.
    a.key(key('n'));
    assert_eq!(selected_span(&a).map(|s| s.span_id), Some(ids[1].clone()));
    assert_eq!(
        a.flash.as_deref(),
        Some("match 2 of 6 for \"SHIPP\" (n next, N previous)")
    );
    a.key(key('N'));
    a.key(key('N'));
    assert_eq!(selected_span(&a).map(|s| s.span_id), Some(ids[5].clone()));
    // Matches stand out in yellow, underlined.
    let mut t = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    t.draw(|f| crate::view::draw(f, &a)).expect("draw");
    let buf = t.backend().buffer().clone();
    let lines = render(&a, 200, 50);
    let (y, x) = lines
        .iter()
        .enumerate()
        .find_map(|(y, l)| l.find("shipping op-4").map(|x| (y, l[..x].chars().count())))
        .expect("span 4 drawn");
    let cell = &buf[(x as u16, y as u16)];
    assert_eq!(cell.fg, ratatui::style::Color::Yellow);
    assert!(cell.modifier.contains(ratatui::style::Modifier::UNDERLINED));
    let (y, x) = lines
        .iter()
        .enumerate()
        .find_map(|(y, l)| {
            l.find("checkout op-1 ")
                .map(|x| (y, l[..x].chars().count()))
        })
        .expect("span 1 drawn");
    assert!(!buf[(x as u16, y as u16)]
        .modifier
        .contains(ratatui::style::Modifier::UNDERLINED));
    // Attribute and event text match too; what matches nothing says so.
    a.key(key('/'));
    for c in "declined".chars() {
        a.key(key(c));
    }
    a.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(
        selected_span(&a).map(|s| s.span_id),
        Some(format!("{:016x}", 3))
    );
    a.key(key('/'));
    for c in "nothing-like-it".chars() {
        a.key(key(c));
    }
    a.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert_eq!(
        a.flash.as_deref(),
        Some("no span matches \"nothing-like-it\"")
    );
    // Esc leaves the search line first, then the trace as before.
    a.key(key('/'));
    a.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(!a.editing() && a.traces.open.is_some());
}

#[test]
fn y_copies_trace_ids_and_v_shows_the_span_json() {
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    let esc = KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE);
    let mut a = loaded();
    // The traces list: the selected trace.
    a.update(Action::Show(View::Traces));
    a.key(key('y'));
    assert_eq!(a.clipboard.take(), Some(format!("{:032x}", 1)));
    assert_shows(&screen(&a, 80, 24), &["copied trace id 0000"]);
    // A log record: its trace, or why not.
    a.update(Action::Show(View::Logs));
    a.update(Action::Move(Move::Down));
    a.key(key('y'));
    assert_eq!(a.clipboard, None);
    assert_eq!(a.flash.as_deref(), Some("no trace id here to copy"));
    a.update(Action::Move(Move::Up));
    a.key(key('y'));
    assert_eq!(a.clipboard.take(), Some(format!("{:032x}", 1)));
    // The waterfall: the trace; v shows the selected span's JSON.
    open_trace(&mut a, 30);
    a.key(key('y'));
    assert_eq!(
        a.clipboard.take().as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    a.key(key('v'));
    for (w, h) in [(80, 24), (200, 50)] {
        assert_shows(
            &screen(&a, w, h),
            &[
                "Span JSON",
                "{",
                "\"trace_id\": \"4bf92f3577b34da6a3ce929d0e0e4736\",",
                "\"span_id\": \"0000000000000001\",",
                "\"service\": \"frontend\",",
            ],
        );
    }
    // Scrolls to its end, and q closes it rather than quitting.
    a.key(key('G'));
    let s = screen(&a, 80, 24);
    assert_shows(&s, &["\"service.name\": \"frontend\""]);
    let first = s.lines().nth(2).unwrap_or("");
    assert!(!first.starts_with("│{"), "scrolled: {s}");
    a.key(key('y'));
    let json = a.clipboard.take().expect("the span's JSON");
    let span: lookout_proto::api::SpanView = serde_json::from_str(&json).expect("JSON");
    assert_eq!(Some(span), selected_span(&a));
    a.key(key('q'));
    assert!(!a.quit && a.traces.open.as_ref().is_some_and(|o| o.raw.is_none()));
    a.key(key('v'));
    a.key(esc);
    assert!(a.traces.open.as_ref().is_some_and(|o| o.raw.is_none()));
    assert!(!screen(&a, 80, 24).contains("Span JSON"));
}

#[test]
fn a_bad_trace_search_is_explained_without_a_request() {
    let mut a = loaded();
    a.update(Action::Show(View::Traces));
    a.update(Action::Focus);
    typed(&mut a, "checkout min=fast");
    assert!(a.update(Action::Submit).is_empty());
    let e = a.traces.error.clone().unwrap_or_default();
    assert!(e.contains("expected KEY=VALUE"), "{e}");
    assert_shows(&screen(&a, 80, 24), &["expected KEY=VALUE"]);
    a.update(Action::Focus);
    a.update(Action::Edit(Edit::KillToStart));
    typed(&mut a, "service=checkout min=250ms");
    assert_eq!(a.update(Action::Submit).len(), 1);
    assert_eq!(a.update(Action::ToggleErrors).len(), 1);
    assert_eq!(a.traces.input.text(), "service=checkout min=250ms error");
}

#[test]
fn an_unreachable_collector_keeps_the_data_and_recovers() {
    let mut a = loaded();
    a.update(Action::Refresh);
    let down = || Fetched::Services(Err(FetchError::Unreachable("connection refused".into())));
    a.on_fetched(down(), MS);
    a.on_fetched(down(), MS);
    assert!(matches!(a.conn, Conn::Down { failures: 2, .. }));
    assert!(a.services.data.is_some());
    assert_shows(&screen(&a, 80, 24), &["✕ down (2×)", "checkout"]);
    assert_shows(&screen(&a, 120, 40), &["✕ unreachable (2×), retrying"]);
    assert_eq!(
        a.tick(),
        vec![services_fetch("5m")],
        "retried on the next tick"
    );
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    assert!(matches!(a.conn, Conn::Up { .. }));
}

#[test]
fn a_server_that_is_not_lookout_is_shown_in_red_not_as_loading() {
    let mut a = app();
    a.start();
    let otlp = "http://127.0.0.1:4318/api/v1/services answered 404 Not Found: {\"code\":5}";
    a.on_fetched(
        Fetched::Services(Err(FetchError::NotLookout(otlp.into()))),
        MS,
    );
    assert!(a.conn.is_bad());
    for (w, h) in [(80, 24), (120, 40)] {
        let s = screen(&a, w, h);
        let mark = if w < 100 {
            "✕ not Lookout"
        } else {
            "✕ not a Lookout API"
        };
        assert_shows(
            &flat(&s),
            &[
                mark,
                "not a Lookout query API: http://127.0.0.1:4318/api/v1/services",
                "answered 404 Not Found",
                "not an OTLP port",
            ],
        );
        assert!(!s.contains("Loading") && !s.contains('●'), "{s}");
    }
    // The header is red: the status cell is drawn in red.
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    t.draw(|f| crate::view::draw(f, &a)).expect("draw");
    let buf = t.backend().buffer().clone();
    let x = (0..80u16)
        .find(|&x| buf[(x, 0)].symbol() == "✕")
        .expect("status mark");
    assert_eq!(buf[(x, 0)].fg, ratatui::style::Color::Red);
    // Retried on the next tick even where nothing is due, and back to green once a
    // collector answers.
    assert_eq!(a.tick(), vec![services_fetch("5m")]);
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    assert!(matches!(a.conn, Conn::Up { .. }));
}

#[test]
fn keys_map_to_actions_by_context() {
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    let mut a = loaded();
    assert_eq!(a.key_action(key('q')), Some(Action::Quit));
    a.update(Action::Show(View::Logs));
    a.update(Action::Focus);
    assert_eq!(
        a.key_action(key('q')),
        Some(Action::Edit(Edit::Char('q'))),
        "q types while editing"
    );
    assert_eq!(
        a.key_action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
    a.update(Action::Back);
    // Esc then 4, arriving together as Alt-4.
    a.update(Action::Enter);
    a.key(KeyEvent::new(KeyCode::Char('4'), KeyModifiers::ALT));
    assert!(!a.logs.detail);
    assert_eq!(a.view, View::Alerts);
    a.key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    assert_eq!(a.view, View::Graph);
    a.key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
    a.key(key('?'));
    assert!(a.help.is_some());
    a.key(key('q'));
    assert!(a.help.is_none() && !a.quit, "q closes the help first");
    a.key(key('q'));
    assert!(a.quit);
}

#[test]
fn commands_switch_views_and_explain_mistakes() {
    let mut a = loaded();
    a.update(Action::Command);
    assert!(a.editing());
    typed(&mut a, "logs severity:warn");
    let f = a.update(Action::Submit);
    assert_eq!(a.view, View::Logs);
    let Some(Fetch::Logs { query, .. }) = f.first() else {
        panic!("expected logs, got {f:?}");
    };
    assert_eq!(query.q, "severity:warn");
    a.run_command("trace xyz");
    assert!(a.flash.as_deref().unwrap_or("").contains("32 hex digits"));
    a.run_command("bogus");
    assert!(a
        .flash
        .as_deref()
        .unwrap_or("")
        .contains("unknown command :bogus"));
    a.run_command("q");
    assert!(a.quit);
}

#[test]
fn an_explicit_logs_query_replaces_the_service_filter_of_l() {
    let mut a = loaded();
    // `l` on checkout filters the logs by service.
    let f = a.update(Action::OpenLogs);
    let Some(Fetch::Logs { query, seq, .. }) = f.first().cloned() else {
        panic!("expected logs, got {f:?}");
    };
    assert_eq!(query.service.as_deref(), Some("checkout"));
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(fixtures::logs(5)));
    assert_shows(&screen(&a, 80, 24), &["service checkout (x clears)"]);
    // `:logs service:payment` asks for payment's logs, not payment's within checkout's.
    let f = a.run_command("logs service:payment");
    let Some(Fetch::Logs { query, seq, .. }) = f.first().cloned() else {
        panic!("expected logs, got {f:?}");
    };
    assert_eq!((query.q.as_str(), query.service), ("service:payment", None));
    answer_logs(&mut a, seq, LogsMode::Replace, Ok(fixtures::logs(5)));
    let s = screen(&a, 80, 24);
    assert!(!s.contains("service checkout"), "{s}");
    // The same through the query bar: a query naming a service replaces the filter, one
    // that does not keeps it.
    a.services.sel.select(0, 4);
    a.update(Action::Show(View::Services));
    a.update(Action::OpenLogs);
    a.update(Action::Focus);
    a.update(Action::Edit(Edit::KillToStart));
    typed(&mut a, "timeout");
    let f = a.update(Action::Submit);
    assert!(
        matches!(f.first(), Some(Fetch::Logs { query, .. }) if query.service.as_deref() == Some("checkout"))
    );
    a.update(Action::Focus);
    typed(&mut a, " AND service:inventory");
    let f = a.update(Action::Submit);
    assert!(
        matches!(f.first(), Some(Fetch::Logs { query, .. }) if query.service.is_none()),
        "{f:?}"
    );
}

/// The metrics view with `n` scrapes taken in, a second apart.
fn metrics_scraped(a: &mut App, n: u64) {
    let t0 = std::time::Instant::now();
    for i in 0..n {
        a.on_fetched(
            Fetched::Metrics {
                result: Ok(fixtures::exposition(i)),
                at: t0 + Duration::from_secs(i),
            },
            MS,
        );
    }
}

#[test]
fn the_metrics_view_scrapes_keeps_rates_and_filters() {
    let mut a = loaded();
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    assert_eq!(a.key(key('6')), vec![Fetch::Metrics]);
    assert_eq!(a.view, View::Metrics);
    assert!(a.tick().is_empty(), "one scrape at a time");
    metrics_scraped(&mut a, 10);
    let rows = a.metrics.rows();
    let names: Vec<&str> = rows.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http_server_request_duration_seconds_count",
            "http_server_request_duration_seconds_sum",
            "http_server_requests_total",
            "http_server_requests_total",
            "process_memory_usage_bytes",
        ],
        "buckets and lookout_* are left out"
    );
    let pay = rows
        .iter()
        .find(|s| s.id().contains("/pay"))
        .expect("the /pay counter");
    assert_eq!(pay.latest(), Some(5.0), "a counter shows as its rate");
    assert_eq!(pay.points.len(), 9);
    // Scraping goes on in the background once the view was opened.
    assert!(a
        .update(Action::Show(View::Services))
        .contains(&Fetch::Metrics));
    a.update(Action::Show(View::Metrics));
    a.update(Action::ToggleSelfMetrics);
    assert_eq!(a.metrics.rows().len(), 7);
    assert_eq!(a.key_action(key('a')), Some(Action::ToggleSelfMetrics));
    a.update(Action::Focus);
    typed(&mut a, "frontend");
    a.update(Action::Submit);
    assert_eq!(a.metrics.rows().len(), 1);
    a.update(Action::Back);
    assert_eq!(a.metrics.rows().len(), 7, "Esc clears the filter");
    // The collector's refusal is shown; an unreachable collector keeps the series.
    a.on_fetched(
        Fetched::Metrics {
            result: Err(FetchError::Unreachable("refused".into())),
            at: std::time::Instant::now(),
        },
        MS,
    );
    assert_eq!(a.metrics.rows().len(), 7);
    assert_eq!(a.run_command("metrics"), vec![Fetch::Metrics], "retried");
}

// ---- rendering ----

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

/// Asserts that the screen shows every needle at each of [`SIZES`].
#[track_caller]
fn assert_shows_at_every_size(app: &App, needles: &[&str]) {
    for (w, h) in SIZES {
        assert_shows(&screen(app, w, h), needles);
    }
}

#[test]
fn services_view_renders_figures_and_operations() {
    let a = loaded();
    assert_shows_at_every_size(
        &a,
        &[
            "1:Services",
            "checkout",
            "42/s",
            "3.1%",
            "95ms",
            "payment",
            "8.0%",
            "● 3ms",
            "? help",
        ],
    );
    assert_shows(
        &screen(&a, 120, 40),
        &["Operations of checkout", "POST /checkout", "▆"],
    );
    // The newest complete rate slice (the highest here) is drawn at the end of the row;
    // the slice still filling after it is not drawn.
    let mut a = a;
    if let Some(d) = a.services.data.as_mut() {
        d.services[0].stats.rate_history = (1..=30).map(f64::from).collect();
        d.services[0].stats.rate_history.push(0.5);
    }
    let newest = '█';
    for (w, h) in SIZES {
        let row = render(&a, w, h)
            .into_iter()
            .find(|l| l.starts_with("checkout"))
            .expect("a checkout row");
        assert_eq!(row.trim_end().chars().last(), Some(newest), "{row}");
    }
    assert_shows(&screen(&a, 120, 40), &["POST /checkout"]);
}

#[test]
fn the_rate_slice_still_filling_is_not_drawn_as_a_drop() {
    let mut a = loaded();
    if let Some(d) = a.services.data.as_mut() {
        // A steady 10/s, and the current slice two seconds into its ten: 2/s so far.
        d.services[0].stats.rate_history = vec![10.0; 29];
        d.services[0].stats.rate_history.push(2.0);
    }
    for (w, h) in [(80, 24), (200, 50)] {
        let row = render(&a, w, h)
            .into_iter()
            .find(|l| l.starts_with("checkout"))
            .expect("a checkout row");
        let trend: String = row
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| *c != ' ')
            .collect();
        assert!(
            !trend.is_empty() && trend.chars().all(|c| c == '█'),
            "a steady rate draws flat: {row}"
        );
    }
}

#[test]
fn service_and_operation_columns_grow_at_200_columns() {
    let long = "checkout-service-eu-west-1-canary"; // 33 characters
    let op = "POST /api/v2/checkout/{cart_id}/payment-intents/confirm"; // 55
    let mut a = loaded();
    if let Some(d) = a.services.data.as_mut() {
        d.services[0].service = long.into();
        d.services[0].operations[0].operation = op.into();
    }
    a.services.sel.select(0, 4);
    for l in &mut a.logs.entries {
        l.service = long.into();
    }
    if let Some(t) = a.traces.list.as_mut() {
        for tr in &mut t.traces {
            tr.root_operation = op.into();
            tr.services = vec![long.into(), "frontend".into(), "payment".into()];
        }
    }
    let wide = screen(&a, 200, 50);
    assert_shows(&wide, &[long, op]);
    let narrow = screen(&a, 80, 24);
    let row = narrow
        .lines()
        .find(|l| l.starts_with("checkout-service"))
        .unwrap_or("");
    assert!(!row.is_empty() && !row.contains(long), "{narrow}");
    a.update(Action::Show(View::Logs));
    assert_shows(&screen(&a, 200, 50), &[&long[..24]]);
    assert!(!screen(&a, 80, 24).contains(&long[..12]));
    a.update(Action::Show(View::Traces));
    let wide = screen(&a, 200, 50);
    assert_shows(
        &wide,
        &[
            "services",
            &format!("frontend: {op}"),
            &format!("{long},frontend,payment"),
        ],
    );
    let narrow = screen(&a, 80, 24);
    assert!(!narrow.contains(long) && !narrow.contains(op), "{narrow}");
}

#[test]
fn logs_view_renders_rows_detail_and_hostile_bodies() {
    let mut a = loaded();
    a.update(Action::Show(View::Logs));
    assert_shows_at_every_size(
        &a,
        &[
            "query:",
            "range 1h",
            "60 of 600 matches",
            "20:00:00.000",
            "order 0 placed",
            "◆",
            "multi⏎line\u{fffd}[2J",
        ],
    );
    for (w, h) in SIZES {
        let s = screen(&a, w, h);
        assert!(!s.contains('\u{1b}'), "escape sequences are neutralised");
    }
    a.update(Action::Enter);
    assert_shows_at_every_size(
        &a,
        &[
            "Log record",
            "trace_id",
            "(t opens the trace)",
            "enduser.id = user-0",
        ],
    );
    assert_shows(&screen(&a, 120, 40), &["host.name = web-1"]);
    a.update(Action::DetailDown);
    a.update(Action::DetailDown);
    let s = screen(&a, 80, 24);
    assert_shows(&s, &["host.name = web-1"]);
    assert!(
        !s.contains("time      2025"),
        "scrolled past the first lines"
    );
}

#[test]
fn traces_list_renders_summaries_and_bars() {
    let mut a = loaded();
    a.update(Action::Show(View::Traces));
    assert_shows_at_every_size(
        &a,
        &[
            "search:",
            "40 traces",
            "frontend: GET /checkout",
            "○",
            "●",
            "◐",
            "█",
            "duration",
        ],
    );
}

#[test]
fn waterfall_renders_tree_bars_critical_path_and_warnings() {
    let mut a = loaded();
    open_trace(&mut a, 30);
    assert_shows_at_every_size(
        &a,
        &[
            "● complete",
            "frontend op-0",
            "30 spans",
            "clock_skew",
            "▾",
            "█",
            "▒",
            "!",
            "1.00s",
        ],
    );
    assert_shows(&screen(&a, 120, 40), &["~inventory op-3"]);
    // Select the failed span (span 2).
    if let Some(o) = a.traces.open.as_mut() {
        let w = o.waterfall.as_ref().expect("waterfall");
        let v = w.find_span(&format!("{:016x}", 3)).expect("span 2");
        let n = w.visible.len();
        o.sel.select(v, n);
    }
    a.update(Action::Enter);
    assert_shows_at_every_size(&a, &["Span (Esc closes", "status", "error: card declined"]);
    assert_shows(
        &screen(&a, 120, 40),
        &["http.route = /api/items/{id}", "exception"],
    );
    for _ in 0..3 {
        a.update(Action::DetailDown);
    }
    assert_shows(&screen(&a, 80, 24), &["http.route"]);
}

#[test]
fn alerts_and_graph_views_render() {
    let mut a = loaded();
    a.update(Action::Show(View::Alerts));
    assert_shows_at_every_size(
        &a,
        &[
            "firing",
            "CheckoutSlow",
            "latency_p99 > 500",
            "1/1",
            "ErrorsHigh",
            "value 812",
            "delivered (1 attempts)",
            "failed (5 attempts)",
            "receivers: oncall",
        ],
    );
    a.update(Action::Show(View::Graph));
    a.update(Action::Move(Move::Down)); // checkout, frontend, inventory, payment → frontend?
    a.update(Action::Move(Move::Up));
    a.key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
    assert!(a.graph.table, "m shows the tables");
    assert_shows_at_every_size(
        &a,
        &[
            "services (last 1h)",
            "Callers of checkout",
            "← frontend",
            "checkout calls",
            "→ payment",
            "→ inventory",
            "2,400",
        ],
    );
}

#[test]
fn metrics_view_renders_series_rates_and_the_selected_chart() {
    let mut a = loaded();
    a.update(Action::Show(View::Metrics));
    assert_shows(&screen(&a, 80, 24), &["6:Metrics", "Loading…"]);
    metrics_scraped(&mut a, 30);
    a.update(Action::Move(Move::Down));
    a.update(Action::Move(Move::Down));
    for (w, h) in [(80, 24), (200, 50)] {
        let s = screen(&a, w, h);
        assert_shows(
            &s,
            &[
                "filter:",
                "5 of 7 series",
                "2 lookout_* hidden (a shows)",
                "http_server_requests_total{job=\"checkout\"",
                "5.00/s",
                "1.00/s",
                "54.0M",
                "█",
                " http_server_requests_total ",
                "now 5.00/s",
                "counter, as a rate, 29 points every 2s",
                "labels job=checkout instance=c-1 http_route=/pay",
            ],
        );
        assert!(!s.contains("_bucket"), "{s}");
    }
    assert_shows(
        &screen(&a, 200, 50),
        &["http_server_requests_total{job=\"checkout\",instance=\"c-1\",http_route=\"/pay\"}"],
    );
    a.update(Action::ToggleSelfMetrics);
    assert_shows(
        &screen(&a, 80, 24),
        &[
            "7 of 7 series",
            "lookout_* shown (a hides)",
            "lookout_wal_bytes",
        ],
    );
    a.update(Action::Focus);
    typed(&mut a, "nothing-like-this");
    assert_shows(&screen(&a, 80, 24), &["No series match the filter"]);
    let mut empty = app();
    empty.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    empty.update(Action::Show(View::Metrics));
    metrics_scraped(&mut empty, 0);
    empty.on_fetched(
        Fetched::Metrics {
            result: Ok(crate::state::metrics::Exposition::default()),
            at: std::time::Instant::now(),
        },
        MS,
    );
    assert_shows(
        &flat(&screen(&empty, 80, 24)),
        &["No OTLP metrics received yet"],
    );
}

#[test]
fn the_service_graph_is_drawn_as_a_map() {
    let mut a = loaded();
    a.update(Action::Show(View::Graph));
    assert!(!a.graph.table, "the map comes first");
    for (w, h) in [(80, 24), (200, 50)] {
        let s = screen(&a, w, h);
        assert_shows(
            &s,
            &[
                "services (last 1h): 4  calls between them: 3",
                "│ frontend ├────1200 ✕30─▶│ checkout ├",
                "2400─▶│ inventory │",
                "└──1150 ✕92─▶│ payment │",
                "checkout ← frontend (1200 ✕30)  → payment (1150 ✕92), inventory (2400)",
            ],
        );
    }
    // The selected service stands out; its calls with errors are red on the arrows.
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    t.draw(|f| crate::view::draw(f, &a)).expect("draw");
    let buf = t.backend().buffer().clone();
    let lines = render(&a, 80, 24);
    let at = |needle: &str| {
        lines
            .iter()
            .enumerate()
            .find_map(|(y, l)| {
                l.find(needle)
                    .map(|x| (l[..x].chars().count() as u16, y as u16))
            })
            .expect(needle)
    };
    let (x, y) = at("checkout ├");
    assert!(buf[(x, y)]
        .modifier
        .contains(ratatui::style::Modifier::REVERSED));
    let (x, y) = at("✕92");
    assert_eq!(buf[(x, y)].fg, ratatui::style::Color::Red);
    // A graph larger than the screen scrolls to the selected service; cycles and self
    // calls are listed, not drawn; hostile names are neutralised.
    let chain: Vec<lookout_proto::api::DependencyEdge> = (0..12)
        .map(|i| lookout_proto::api::DependencyEdge {
            caller: format!("svc-{i:02}"),
            callee: format!("svc-{:02}", i + 1),
            calls: 10,
            errors: 0,
            avg_ms: 1.0,
            p95_ms: 2.0,
            inferred: false,
        })
        .chain([lookout_proto::api::DependencyEdge {
            caller: "svc-12".into(),
            callee: "svc-00".into(),
            calls: 3,
            errors: 1,
            avg_ms: 1.0,
            p95_ms: 2.0,
            inferred: false,
        }])
        .chain([lookout_proto::api::DependencyEdge {
            caller: "evil\u{1b}[2J".into(),
            callee: "svc-00".into(),
            calls: 1,
            errors: 0,
            avg_ms: 1.0,
            p95_ms: 2.0,
            inferred: false,
        }])
        .collect();
    a.on_fetched(
        Fetched::Dependencies(Ok(lookout_proto::api::DependenciesResponse {
            edges: chain,
            warnings: Vec::new(),
        })),
        MS,
    );
    a.update(Action::Move(Move::Bottom));
    assert_eq!(a.graph.selected().as_deref(), Some("svc-12"));
    let s = screen(&a, 80, 24);
    assert_shows(
        &s,
        &[
            "│ svc-12 │",
            "↺ not drawn (cycles, self calls): svc-12 → svc-00 3 ✕1",
        ],
    );
    assert!(!s.contains("svc-00 ├"), "scrolled to the right: {s}");
    assert!(!s.contains('\u{1b}'));
    a.update(Action::Move(Move::Top));
    assert_shows(&screen(&a, 80, 24), &["evil\u{fffd}[2J"]);
    a.update(Action::ToggleGraphMode);
    let s = screen(&a, 80, 24);
    assert_shows(&s, &["Callers of evil\u{fffd}[2J"]);
    assert!(!s.contains('\u{1b}'));
}

#[test]
fn help_lists_the_keys() {
    let mut a = loaded();
    a.update(Action::ToggleHelp);
    assert_shows(
        &screen(&a, 80, 24),
        &["Keys", "Tab / Shift-Tab", "q / ^C", "quit"],
    );
    let all = screen(&a, 120, 200);
    for (_, keys) in crate::view::KEYS {
        for (k, _) in *keys {
            assert_shows(&all, &[k]);
        }
    }
}

/// The text inside the help box (between its side borders), flattened.
fn help_text(a: &App, w: u16, h: u16) -> String {
    let rows: Vec<String> = render(a, w, h)
        .into_iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once('│')?;
            let (inner, _) = rest.rsplit_once('│')?;
            Some(inner.to_string())
        })
        .collect();
    flat(&rows.join(" "))
}

#[test]
fn help_wraps_so_every_key_reads_whole_at_80_120_and_200_columns() {
    let mut a = loaded();
    a.update(Action::ToggleHelp);
    let colon = crate::view::KEYS[0]
        .1
        .iter()
        .find(|(k, _)| *k == ":")
        .map(|(_, what)| *what)
        .expect("the : line");
    for (w, h) in [(80, 24), (120, 40), (200, 50)] {
        assert_shows(&help_text(&a, w, h), &[&flat(colon)]);
    }
    // Tall enough for all of it: every description reads whole at each width.
    for w in [80, 120, 200] {
        let text = help_text(&a, w, 200);
        for (_, keys) in crate::view::KEYS {
            for (k, what) in *keys {
                assert_shows(&text, &[&format!("{} {}", flat(k), flat(what))]);
            }
        }
    }
}

#[test]
fn empty_loading_and_unreachable_states_say_so() {
    let mut a = app();
    assert_shows(
        &screen(&a, 80, 24),
        &["Connecting to http://127.0.0.1:7070"],
    );
    a.update(Action::Show(View::Logs));
    a.on_fetched(Fetched::Services(Ok(fixtures::services())), MS);
    assert_shows(&screen(&a, 80, 24), &["Loading…"]);
    let seq = a.logs.seq;
    answer_logs(
        &mut a,
        seq,
        LogsMode::Replace,
        Ok(LogsResponse {
            total: 0,
            logs: vec![],
            took_ms: 0.1,
            warnings: Vec::new(),
        }),
    );
    assert_shows(&screen(&a, 80, 24), &["No logs match in the last 1h"]);
    a.on_fetched(
        Fetched::Alerts(Err(FetchError::Unreachable(
            "tcp connect error: Connection refused".into(),
        ))),
        MS,
    );
    a.update(Action::Show(View::Alerts));
    assert_shows(
        &screen(&a, 80, 24),
        &[
            "Cannot reach the collector at http://127.0.0.1:7070",
            "Connection refused",
            "Retrying every 2s",
        ],
    );
}

#[test]
fn every_view_survives_every_small_size() {
    let mut a = loaded();
    let views: [fn(&mut App); 9] = [
        |a| {
            a.update(Action::Show(View::Services));
        },
        |a| {
            a.update(Action::Show(View::Logs));
            a.logs.detail = true;
        },
        |a| {
            a.update(Action::Show(View::Traces));
            a.traces.open = None;
        },
        |a| open_trace(a, 50),
        |a| {
            a.update(Action::Enter);
        },
        |a| {
            a.update(Action::Show(View::Alerts));
        },
        |a| {
            a.update(Action::Show(View::Metrics));
            metrics_scraped(a, 5);
        },
        |a| {
            a.update(Action::Show(View::Graph));
        },
        |a| {
            a.update(Action::Show(View::Graph));
            a.help = Some(0);
        },
    ];
    for set in views {
        set(&mut a);
        for w in (0..=130).step_by(7) {
            for h in (0..=45).step_by(4) {
                render(&a, w, h);
            }
        }
    }
    assert_shows(&screen(&a, 30, 8), &["Terminal too small: 30x8"]);
}

#[test]
fn a_trace_of_fifty_thousand_spans_draws_only_what_is_visible() {
    let mut a = loaded();
    open_trace(&mut a, 50_000);
    a.update(Action::Move(Move::Bottom));
    let s = screen(&a, 120, 40);
    assert_shows(&s, &["50,000 spans"]);
    a.update(Action::Move(Move::Top));
    a.update(Action::ToggleCollapse);
    let w = a
        .traces
        .open
        .as_ref()
        .and_then(|o| o.waterfall.as_ref())
        .expect("waterfall");
    assert_eq!(w.visible.len(), 1, "folding the root hides the rest");
    assert_shows(&screen(&a, 80, 24), &["▸ +49999 frontend"]);
}

#[test]
fn the_nodes_view_lists_the_members_of_the_cluster() {
    let mut a = loaded();
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    assert_eq!(a.key(key('7')), vec![Fetch::Cluster]);
    assert_eq!(a.view, View::Nodes);
    assert!(a.tick().is_empty(), "one request at a time");
    assert_shows(&screen(&a, 80, 24), &["7:Nodes", "Loading…"]);
    a.on_fetched(Fetched::Cluster(Ok(fixtures::cluster())), MS);
    assert_eq!(a.tick(), vec![Fetch::Cluster], "refreshed every tick");
    assert_shows_at_every_size(
        &a,
        &[
            "4 members (3 consuming) · 16 partitions · via c1",
            "alerts by c0",
            "unowned 15",
            "*c1",
            "0,3,6,9,12",
            "1,250",
            "51,002",
            "gateway",
            "node c2 did not answer: timed out",
            "api       http://c0.lan:7070",
            "holds     5 partitions: 0,3,6,9,12",
        ],
    );
    a.update(Action::Move(Move::Down));
    assert_shows(
        &screen(&a, 80, 24),
        &["http://c1.lan:7070", "holds     5 partitions: 1,4,7,10,13"],
    );
    a.update(Action::Move(Move::Bottom));
    assert_shows(&screen(&a, 80, 24), &["holds     no partition"]);
    a.on_fetched(Fetched::Cluster(Ok(fixtures::cluster())), MS);
    assert_eq!(a.run_command("nodes"), vec![Fetch::Cluster]);
}

#[test]
fn the_nodes_view_of_a_single_node_says_cluster_mode_is_off() {
    let mut a = loaded();
    a.update(Action::Show(View::Nodes));
    a.on_fetched(
        Fetched::Cluster(Ok(lookout_proto::api::ClusterResponse::default())),
        MS,
    );
    assert_shows(
        &flat(&screen(&a, 80, 24)),
        &["One node: cluster mode is off", "Running a cluster"],
    );
}

#[test]
fn every_tab_fits_the_header_at_80_columns() {
    let mut a = loaded();
    let s = screen(&a, 80, 24);
    let header = s.lines().next().unwrap_or_default();
    assert_shows(header, &["1:Services", "7:Nodes", "ms"]);
    // A collector that is down: the status takes more room; the other tabs are numbered.
    a.on_fetched(
        Fetched::Services(Err(FetchError::Unreachable("refused".into()))),
        MS,
    );
    a.on_fetched(
        Fetched::Services(Err(FetchError::Unreachable("refused".into()))),
        MS,
    );
    let s = screen(&a, 80, 24);
    let header = s.lines().next().unwrap_or_default();
    assert_shows(header, &["1:Services", " 7 ", "down"]);
}

#[test]
fn the_alerts_view_shows_why_it_is_not_the_clusters_state() {
    let mut a = loaded();
    a.update(Action::Show(View::Alerts));
    let mut r = fixtures::alerts();
    r.warnings = vec!["the alert leader c2 did not answer: timed out".into()];
    a.on_fetched(Fetched::Alerts(Ok(r)), MS);
    assert_shows_at_every_size(&a, &["CheckoutSlow", "the alert leader c2 did not answer"]);
}
