//! Logs: query bar, records newest first, detail pane.

use lookout_proto::api::LogEntry;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::fmt;
use crate::app::App;
use crate::state::logs::RANGES;

/// Draw the logs view.
pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let l = &app.logs;
    let (status, rest) = super::query_bar(f, area, "query: ", &l.input, l.editing, &l.error);
    let mut st = vec![super::range_span(l.range)];
    if let Some(svc) = &l.service {
        st.push(Span::raw("  service "));
        st.push(Span::styled(
            fmt::one_line(svc),
            Style::new().fg(Color::Cyan),
        ));
    }
    if l.loaded {
        st.push(Span::raw(format!(
            "  {} of {} matches  {:.1}ms",
            fmt::count(l.entries.len() as u64),
            fmt::count(l.total),
            l.took_ms
        )));
    }
    if l.follow {
        st.push(Span::styled(
            "  FOLLOWING",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ));
    }
    if l.loading || l.loading_older {
        st.push(Span::raw("  loading…"));
    }
    f.render_widget(Line::from(st), status);

    if l.entries.is_empty() {
        let range = RANGES[l.range.min(RANGES.len() - 1)].0;
        let empty = format!(
            "No logs match in the last {range}.\n] widens the time range, / edits the query."
        );
        super::message(f, rest, super::placeholder(app, !l.loaded, &empty));
        return;
    }
    let (list_area, detail_area) = super::with_detail(rest, l.detail, 140, 55, 40);
    draw_list(f, list_area, app);
    if let (Some(area), Some(e)) = (detail_area, l.selected()) {
        draw_detail(f, area, e, l.detail_scroll);
    }
}

fn draw_list(f: &mut Frame, area: Rect, app: &App) {
    let l = &app.logs;
    let (start, end) = l.sel.window(area.height as usize, l.entries.len());
    let svc_w = if area.width >= 100 { 16 } else { 10 };
    for (row, (i, e)) in l.entries[start..end]
        .iter()
        .enumerate()
        .map(|(r, e)| (r, (start + r, e)))
    {
        let sev = fmt::severity_style(&e.severity);
        let mut service = fmt::one_line(&e.service);
        if service.chars().count() > svc_w {
            service = service.chars().take(svc_w - 1).collect::<String>() + "…";
        }
        let mut spans = vec![
            Span::styled(
                fmt::clock(e.timestamp_unix_nano),
                Style::new().add_modifier(Modifier::DIM),
            ),
            Span::raw(" "),
            Span::styled(format!("{:<5}", short_sev(&e.severity)), sev),
            Span::raw(" "),
            Span::styled(format!("{service:<svc_w$}"), Style::new().fg(Color::Cyan)),
            Span::raw(" "),
        ];
        if e.trace_id.is_some() {
            spans.push(Span::styled("◆ ", Style::new().fg(Color::Magenta)));
        }
        spans.push(Span::raw(fmt::one_line(&e.body)));
        let mut line = Line::from(spans);
        if i == l.sel.selected() {
            line = line.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        f.render_widget(line, Rect::new(area.x, area.y + row as u16, area.width, 1));
    }
}

fn short_sev(s: &str) -> &str {
    match s {
        "unspecified" => "-",
        other => other,
    }
}

/// Lines of the detail pane of one record.
pub fn detail_lines(e: &LogEntry) -> Vec<Line<'static>> {
    let key = Style::new().fg(Color::Cyan);
    let mut lines = vec![
        Line::from(vec![
            Span::styled("time      ", key),
            Span::raw(e.timestamp.clone()),
        ]),
        Line::from(vec![
            Span::styled("service   ", key),
            Span::raw(fmt::one_line(&e.service)),
        ]),
        Line::from(vec![
            Span::styled("severity  ", key),
            Span::styled(
                format!(
                    "{} ({}{})",
                    e.severity,
                    e.severity_number,
                    if e.severity_text.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", fmt::one_line(&e.severity_text))
                    }
                ),
                fmt::severity_style(&e.severity),
            ),
        ]),
    ];
    if let Some(t) = &e.trace_id {
        lines.push(Line::from(vec![
            Span::styled("trace_id  ", key),
            Span::raw(t.clone()),
            Span::styled(
                "  (t opens the trace)",
                Style::new().add_modifier(Modifier::DIM),
            ),
        ]));
    }
    if let Some(s) = &e.span_id {
        lines.push(Line::from(vec![
            Span::styled("span_id   ", key),
            Span::raw(s.clone()),
        ]));
    }
    lines.push(Line::styled("body", key));
    for l in fmt::multi_line(&e.body, 20_000) {
        lines.push(Line::raw(format!("  {l}")));
    }
    for (title, map) in [("attributes", &e.attributes), ("resource", &e.resource)] {
        if map.is_empty() {
            continue;
        }
        lines.push(Line::styled(title, key));
        for (k, v) in map {
            lines.push(Line::from(vec![
                Span::styled(
                    format!("  {}", fmt::one_line(k)),
                    Style::new().fg(Color::Blue),
                ),
                Span::raw(" = "),
                Span::raw(fmt::value(v)),
            ]));
        }
    }
    lines
}

fn draw_detail(f: &mut Frame, area: Rect, e: &LogEntry, scroll: u16) {
    f.render_widget(
        Paragraph::new(detail_lines(e))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0))
            .block(
                Block::new()
                    .borders(Borders::TOP)
                    .title(" Log record (Esc closes, J/K scroll) "),
            ),
        area,
    );
}
