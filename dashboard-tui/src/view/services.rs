//! Services: request rate, error rate and latency percentiles per service, with a
//! sparkline of the rate, and the operations of the selected service.

use lookout_proto::api::ServiceStats;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;

use super::{fmt, highlight, titled_table};
use crate::app::App;
use crate::state::list::Selection;

/// Draw the services view.
pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.services;
    let [bar, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    let title = format!(
        "sort: {} (s)  window {} (w)  filter: ",
        s.sort.label(),
        s.window()
    );
    super::input_line(f, bar, &title, &s.filter, s.editing);
    // A refused window (or another refusal) over figures still shown: say so above them.
    let (err_area, rest) = match (&s.error, s.data.is_some()) {
        (Some(_), true) => {
            let [e, r] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(rest);
            (Some(e), r)
        }
        _ => (None, rest),
    };
    if let (Some(area), Some(e)) = (err_area, &s.error) {
        f.render_widget(super::error_line(e), area);
    }

    let rows = s.rows();
    if rows.is_empty() {
        let empty = if s.filter.text().is_empty() {
            "No services yet: RED figures come from server and consumer spans.\nSend traces (lookout-loadgen, or run the collector with --demo)."
        } else {
            "No service matches the filter. Esc clears it."
        };
        super::draw_empty(f, rest, app, s.data.is_none(), empty, s.error.as_deref());
        return;
    }
    let ops_h = if rest.height >= 18 {
        rest.height / 3
    } else {
        0
    };
    let [list_area, ops_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(ops_h)]).areas(rest);
    let window_s = s.data.as_ref().map_or(0, |d| d.window_s);
    draw_service_table(f, list_area, &rows, &s.sel, window_s);
    if ops_h == 0 {
        return;
    }
    if let Some(service) = rows.get(s.sel.selected()) {
        draw_operations(f, ops_area, service);
    }
}

/// The table of services, the selected one highlighted.
fn draw_service_table(
    f: &mut Frame,
    list_area: Rect,
    rows: &[&ServiceStats],
    sel: &Selection,
    window_s: u64,
) {
    // The service column fits the longest name (12 columns at least, 24 at most, a fifth
    // of a wide screen); the trend takes the rest, so the sparkline is sized to its real
    // width and its newest slices show.
    let svc_max = (usize::from(list_area.width) / 5).max(24);
    let svc_w = rows
        .iter()
        .map(|r| r.service.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(12, svc_max);
    let fixed = svc_w + 8 + 6 + 7 * 3 + 6; // columns and the six gaps between them
    let trend_w = (list_area.width as usize).saturating_sub(fixed);
    let widths = [
        Constraint::Length(svc_w as u16),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(trend_w as u16),
    ];
    let height = list_area.height.saturating_sub(3) as usize;
    let (start, end) = sel.window(height, rows.len());
    let body: Vec<Row> = rows[start..end]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let st = &r.stats;
            let err_style = if st.error_rate >= 0.05 {
                Style::new().fg(Color::Red)
            } else if st.error_rate > 0.0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            let row = Row::new(vec![
                Cell::from(fmt::one_line(&r.service)),
                Cell::from(fmt::rate(st.request_rate)),
                Cell::from(fmt::pct(st.error_rate)).style(err_style),
                Cell::from(fmt::ms(st.p50_ms)),
                Cell::from(fmt::ms(st.p95_ms)),
                Cell::from(fmt::ms(st.p99_ms)),
                Cell::from(fmt::sparkline(complete(&st.rate_history), trend_w.min(60)))
                    .style(Style::new().fg(Color::Cyan)),
            ]);
            highlight(row, start + i == sel.selected())
        })
        .collect();
    let title = format!(
        " Services ({}) over the last {} ",
        rows.len(),
        fmt::secs(window_s)
    );
    f.render_widget(
        titled_table(
            &["service", "rate", "err%", "p50", "p95", "p99", "rate trend"],
            body,
            widths,
            title,
        ),
        list_area,
    );
}

/// A rate history without its newest point: that time slice is still filling (the
/// collector counts it from its start to now), so drawn it would read as a drop.
fn complete(history: &[f64]) -> &[f64] {
    &history[..history.len().saturating_sub(1)]
}

/// The operations of `service`, as many as fit.
fn draw_operations(f: &mut Frame, ops_area: Rect, service: &ServiceStats) {
    let ops: Vec<Row> = service
        .operations
        .iter()
        .take(ops_area.height as usize)
        .map(|o| {
            Row::new(vec![
                fmt::one_line(&o.operation),
                fmt::rate(o.stats.request_rate),
                fmt::pct(o.stats.error_rate),
                fmt::ms(o.stats.p50_ms),
                fmt::ms(o.stats.p95_ms),
                fmt::ms(o.stats.p99_ms),
            ])
        })
        .collect();
    f.render_widget(
        titled_table(
            &["operation", "rate", "err%", "p50", "p95", "p99"],
            ops,
            [
                Constraint::Min(16),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(7),
            ],
            format!(" Operations of {} ", fmt::one_line(&service.service)),
        ),
        ops_area,
    );
}
