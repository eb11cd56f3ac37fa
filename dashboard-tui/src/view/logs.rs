//! Logs: query bar, records newest first, detail pane.

use lookout_proto::api::LogEntry;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::{attribute_sections, field_line, fmt, DETAIL_KEY, SELECTED};
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
        st.push(Span::styled(
            " (x clears)",
            Style::new().add_modifier(Modifier::DIM),
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
    if l.new_above > 0 {
        st.push(Span::styled(
            format!("  ↑{} new", fmt::count(l.new_above as u64)),
            Style::new().fg(Color::Green),
        ));
    }
    if l.newer_waiting {
        st.push(Span::styled(
            "  newer records: g or r loads them",
            Style::new().fg(Color::Yellow),
        ));
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
    // The service column grows with the width: 10 columns at 80, 25 at 200.
    let svc_w = (usize::from(area.width) / 8).clamp(10, 32);
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
            line = line.style(SELECTED);
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
    let severity = format!(
        "{} ({}{})",
        e.severity,
        e.severity_number,
        if e.severity_text.is_empty() {
            String::new()
        } else {
            format!(", {}", fmt::one_line(&e.severity_text))
        }
    );
    let mut lines = vec![
        field_line("time", e.timestamp.clone()),
        field_line("service", fmt::one_line(&e.service)),
        field_line(
            "severity",
            Span::styled(severity, fmt::severity_style(&e.severity)),
        ),
    ];
    if let Some(t) = &e.trace_id {
        let mut line = field_line("trace_id", t.clone());
        line.push_span(Span::styled(
            "  (t opens the trace)",
            Style::new().add_modifier(Modifier::DIM),
        ));
        lines.push(line);
    }
    if let Some(s) = &e.span_id {
        lines.push(field_line("span_id", s.clone()));
    }
    lines.push(Line::styled("body", DETAIL_KEY));
    for l in fmt::multi_line(&e.body, 20_000) {
        lines.push(Line::raw(format!("  {l}")));
    }
    lines.extend(attribute_sections(&e.attributes, &e.resource));
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
