//! Metrics: the series of the collector's exposition, filtered by text, each with its
//! latest rate or value and a sparkline; the selected one in a larger chart below.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};
use ratatui::Frame;

use super::{fmt, DETAIL_KEY, SELECTED};
use crate::app::App;
use crate::state::metrics::{Series, SeriesKind, MAX_SERIES, SELF_PREFIX};

/// Columns of the value column.
const VALUE_W: usize = 11;

/// Draw the metrics view.
pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let m = &app.metrics;
    let (status, rest) = super::query_bar(f, area, "filter: ", &m.filter, m.editing, &m.error);
    let rows = m.rows();
    let mut st = vec![Span::raw(format!(
        "{} of {} series",
        fmt::count(rows.len() as u64),
        fmt::count(m.series.len() as u64)
    ))];
    let hidden = m.hidden_self();
    st.push(Span::styled(
        if hidden > 0 {
            format!("  {hidden} {SELF_PREFIX}* hidden (a shows)")
        } else {
            format!("  {SELF_PREFIX}* shown (a hides)")
        },
        Style::new().add_modifier(Modifier::DIM),
    ));
    if m.not_kept > 0 {
        st.push(Span::styled(
            format!("  {} more not kept (over {MAX_SERIES})", m.not_kept),
            Style::new().fg(Color::Yellow),
        ));
    }
    f.render_widget(Line::from(st), status);
    if rows.is_empty() {
        let empty = if m.series.len() > hidden {
            "No series match the filter. Esc clears it.".to_string()
        } else {
            format!(
                "No OTLP metrics received yet: metrics sent to the collector show here\n(job = service.name). a shows the collector's own {SELF_PREFIX}* series."
            )
        };
        super::message(f, rest, super::placeholder(app, m.scrapes == 0, &empty));
        return;
    }
    let chart_h = if rest.height >= 16 { 8 } else { 0 };
    let [list_area, chart_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(chart_h)]).areas(rest);
    draw_list(f, list_area, &rows, app);
    if let Some(s) = rows.get(m.sel.selected()) {
        if chart_h > 0 {
            draw_chart(f, chart_area, s, app);
        }
    }
}

/// The latest rate or value of a series, as shown in the list.
fn latest(s: &Series) -> String {
    match (s.kind, s.latest()) {
        (SeriesKind::Counter, Some(v)) => format!("{}/s", fmt::number(v)),
        (SeriesKind::Counter, None) => "…".into(),
        (SeriesKind::Gauge, Some(v)) => fmt::number(v),
        (SeriesKind::Gauge, None) => "-".into(),
    }
}

fn draw_list(f: &mut Frame, area: Rect, rows: &[&Series], app: &App) {
    let m = &app.metrics;
    let width = area.width as usize;
    // The trend takes a quarter of the width (8 to 60 columns); the series the rest.
    let trend_w = (width / 4).clamp(8, 60);
    let id_w = width.saturating_sub(VALUE_W + trend_w + 2).max(10);
    let (start, end) = m.sel.window(area.height as usize, rows.len());
    for (r, s) in rows[start..end].iter().enumerate() {
        let points: Vec<f64> = s.points.iter().copied().collect();
        let id = fmt::one_line(&s.id());
        let id = if id.chars().count() > id_w {
            id.chars().take(id_w.saturating_sub(1)).collect::<String>() + "…"
        } else {
            id
        };
        let mut line = Line::from(vec![
            Span::raw(format!("{id:<id_w$} ")),
            Span::raw(format!("{:>w$} ", latest(s), w = VALUE_W)),
            Span::styled(
                fmt::sparkline(&points, trend_w),
                Style::new().fg(Color::Cyan),
            ),
        ]);
        if start + r == m.sel.selected() {
            line = line.style(SELECTED);
        }
        f.render_widget(line, Rect::new(area.x, area.y + r as u16, area.width, 1));
    }
}

/// The selected series: its labels, figures over the history, and a chart of it.
fn draw_chart(f: &mut Frame, area: Rect, s: &Series, app: &App) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(format!(" {} ", fmt::one_line(&s.name)));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [info, chart] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(inner);
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={}", fmt::one_line(v)))
        .collect();
    let finite = || s.points.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let unit = if s.kind == SeriesKind::Counter {
        "/s"
    } else {
        ""
    };
    let range = if lo.is_finite() {
        format!(
            "  min {}{unit}  max {}{unit}",
            fmt::number(lo),
            fmt::number(hi)
        )
    } else {
        String::new()
    };
    let kind = match s.kind {
        SeriesKind::Counter => "counter, as a rate",
        SeriesKind::Gauge => "gauge",
    };
    let mut first = vec![
        Span::styled("now ", DETAIL_KEY),
        Span::raw(latest(s)),
        Span::raw(range),
        Span::styled(
            format!(
                "  {kind}, {} points every {}s",
                s.points.len(),
                app.refresh.as_secs_f64()
            ),
            Style::new().add_modifier(Modifier::DIM),
        ),
    ];
    if !s.help.is_empty() {
        first.push(Span::styled(
            format!("  {}", fmt::one_line(&s.help)),
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    f.render_widget(
        Paragraph::new(vec![
            Line::from(first),
            Line::from(vec![
                Span::styled("labels ", DETAIL_KEY),
                Span::raw(if labels.is_empty() {
                    "(none)".to_string()
                } else {
                    labels.join(" ")
                }),
            ]),
        ]),
        info,
    );
    // The widget draws integers: scale the newest points that fit to 0..=1000.
    let n = usize::from(chart.width);
    let points: Vec<f64> = s.points.iter().copied().collect();
    let shown = &points[points.len().saturating_sub(n)..];
    let top = shown
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let data: Vec<u64> = shown
        .iter()
        .map(|&v| {
            if top > 0.0 && v.is_finite() && v > 0.0 {
                ((v / top) * 1000.0).round() as u64
            } else {
                0
            }
        })
        .collect();
    f.render_widget(
        Sparkline::default()
            .data(&data)
            .max(1000)
            .style(Style::new().fg(Color::Cyan)),
        chart,
    );
}
