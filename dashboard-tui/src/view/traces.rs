//! Traces: the search line and result list with duration bars, and one trace as a
//! waterfall with a span detail pane.

use lookout_proto::api::{LogEntry, SpanView};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::{attribute_sections, field_line, fmt, DETAIL_KEY, SELECTED};
use crate::app::App;
use crate::client::FetchError;
use crate::state::traces::{OpenTrace, Waterfall};

/// Draw the traces view.
pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    match &app.traces.open {
        Some(o) => draw_trace(f, area, app, o),
        None => draw_list(f, area, app),
    }
}

/// `s` cut to `w` columns, with `…` when cut.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() > w {
        s.chars().take(w.saturating_sub(1)).collect::<String>() + "…"
    } else {
        s.to_string()
    }
}

fn state_symbol(state: &str) -> (&'static str, Style) {
    match state {
        "open" => ("○", Style::new().fg(Color::Yellow)),
        "updated_late" => ("◐", Style::new().fg(Color::Magenta)),
        _ => ("●", Style::new().fg(Color::Green)),
    }
}

fn draw_list(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.traces;
    let (status, rest) = super::query_bar(f, area, "search: ", &t.input, t.editing, &t.error);
    let mut st = vec![super::range_span(t.range)];
    if let Some(l) = &t.list {
        st.push(Span::raw(format!(
            "  {} traces  {:.1}ms",
            fmt::count(l.traces.len() as u64),
            l.took_ms
        )));
    }
    if t.input.text().is_empty() && !t.editing {
        st.push(Span::styled(
            "  e.g. service=checkout min=250ms error http.route=/cart",
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    if t.loading {
        st.push(Span::raw("  loading…"));
    }
    f.render_widget(Line::from(st), status);
    let traces = t.list.as_ref().map_or(&[][..], |l| &l.traces[..]);
    if traces.is_empty() {
        let empty = "No traces match.\n] widens the time range, / edits the search.";
        super::message(f, rest, super::placeholder(app, t.list.is_none(), empty));
        return;
    }
    let [head, rows_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(rest);
    let bar_w = (rest.width as usize / 4).clamp(6, 30);
    // From 160 columns on, the services of each trace get a column of their own.
    let svcs_w = if rest.width >= 160 {
        rest.width as usize / 4
    } else {
        0
    };
    let fixed = 2 + 13 + 9 + 6 + 5 + bar_w + 1 + svcs_w + usize::from(svcs_w > 0);
    let root_w = (rest.width as usize).saturating_sub(fixed).max(8);
    let svcs_head = if svcs_w > 0 {
        format!("{:<svcs_w$} ", "services")
    } else {
        String::new()
    };
    f.render_widget(
        Line::styled(
            format!(
                "  {:<12} {:>8} {:>5} {:>4} {:<root_w$} {svcs_head}{}",
                "start", "duration", "spans", "errs", "root", "duration bar"
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        head,
    );
    let max = traces
        .iter()
        .map(|t| t.duration_ns)
        .max()
        .unwrap_or(1)
        .max(1);
    let (start, end) = t.sel.window(rows_area.height as usize, traces.len());
    for (r, tr) in traces[start..end].iter().enumerate() {
        let (sym, sym_style) = state_symbol(&tr.state);
        let root = fmt::one_line(&format!("{}: {}", tr.root_service, tr.root_operation));
        let root = fit(&root, root_w);
        let filled = ((tr.duration_ns as u128 * bar_w as u128).div_ceil(max as u128)) as usize;
        let errs = if tr.error_count > 0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::styled(sym, sym_style),
            Span::raw(" "),
            Span::styled(
                format!("{:<12} ", fmt::clock(tr.start_unix_nano)),
                Style::new().add_modifier(Modifier::DIM),
            ),
            Span::raw(format!("{:>8} ", fmt::duration_ns(tr.duration_ns))),
            Span::raw(format!("{:>5} ", tr.span_count)),
            Span::styled(format!("{:>4} ", tr.error_count), errs),
            Span::raw(format!("{root:<root_w$} ")),
        ];
        if svcs_w > 0 {
            let svcs = fit(&fmt::one_line(&tr.services.join(",")), svcs_w);
            spans.push(Span::styled(
                format!("{svcs:<svcs_w$} "),
                Style::new().fg(Color::Cyan),
            ));
        }
        spans.push(Span::styled(
            "█".repeat(filled.clamp(1, bar_w)),
            if tr.error_count > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new().fg(Color::Cyan)
            },
        ));
        let mut line = Line::from(spans);
        if start + r == t.sel.selected() {
            line = line.style(SELECTED);
        }
        f.render_widget(
            line,
            Rect::new(rows_area.x, rows_area.y + r as u16, rows_area.width, 1),
        );
    }
}

fn draw_trace(f: &mut Frame, area: Rect, app: &App, o: &OpenTrace) {
    let Some(w) = &o.waterfall else {
        let mut lines = vec![Line::raw(format!("trace {}", o.id))];
        match &o.error {
            Some(e) => lines.push(Line::styled(fmt::one_line(e), Style::new().fg(Color::Red))),
            None => lines.extend(super::placeholder(app, o.loading, "")),
        }
        lines.push(Line::styled(
            "Esc goes back to the list",
            Style::new().add_modifier(Modifier::DIM),
        ));
        super::message(f, area, lines);
        return;
    };
    let (main, detail) = super::with_detail(area, o.detail, 120, 60, 50);
    draw_waterfall(f, main, o, w);
    if let (Some(d), Some(span)) = (detail, o.selected_span()) {
        draw_span_detail(f, d, o, w, span);
    }
    if let Some(scroll) = o.raw {
        draw_raw(f, area, o, scroll);
    }
}

/// The selected span's JSON in a popup over the trace, long lines wrapped, scrolled by
/// `scroll` lines (clamped to the end).
fn draw_raw(f: &mut Frame, area: Rect, o: &OpenTrace, scroll: u16) {
    let Some(json) = o.selected_json() else {
        return;
    };
    let w = if area.width >= 100 {
        area.width * 4 / 5
    } else {
        area.width
    };
    let r = Rect::new(area.x + (area.width - w) / 2, area.y, w, area.height);
    let inner_w = usize::from(w.saturating_sub(2)).max(1);
    let mut lines: Vec<Line> = Vec::new();
    for l in json.lines() {
        let chars: Vec<char> = fmt::one_line(l).chars().collect();
        for part in chars.chunks(inner_w) {
            lines.push(Line::raw(part.iter().collect::<String>()));
        }
    }
    let height = r.height.saturating_sub(2);
    let max = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_sub(height);
    f.render_widget(ratatui::widgets::Clear, r);
    f.render_widget(
        Paragraph::new(lines).scroll((scroll.min(max), 0)).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" Span JSON — j/k scroll, y copies it, Esc closes "),
        ),
        r,
    );
}

/// The summary line and warnings above the waterfall.
fn summary_lines(w: &Waterfall, max_warnings: usize) -> Vec<Line<'static>> {
    let t = &w.trace;
    let root = t
        .root_span_id
        .as_ref()
        .and_then(|id| t.spans.iter().find(|s| &s.span_id == id))
        .or_else(|| t.spans.first());
    let (sym, sym_style) = state_symbol(&t.state);
    let mut first = vec![
        Span::styled(format!("{sym} {} ", t.state), sym_style),
        Span::styled(t.trace_id.clone(), Style::new().add_modifier(Modifier::DIM)),
    ];
    if let Some(r) = root {
        first.push(Span::styled(
            format!(
                "  {}: {}",
                fmt::one_line(&r.service),
                fmt::one_line(&r.operation)
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    let mut lines = vec![
        Line::from(first),
        Line::from(vec![
            Span::raw(format!(
                "{}  {} spans  ",
                fmt::duration_ns(t.duration_ns),
                fmt::count(t.span_count)
            )),
            Span::styled(
                format!("{} errors", t.error_count),
                if t.error_count > 0 {
                    Style::new().fg(Color::Red)
                } else {
                    Style::new()
                },
            ),
            Span::raw(format!(
                "  {} services  {} orphans  {} warnings",
                t.services.len(),
                t.orphan_count,
                t.warnings.len()
            )),
        ]),
    ];
    for wn in t.warnings.iter().take(max_warnings) {
        lines.push(Line::styled(
            format!("⚠ {}: {}", wn.kind, fmt::one_line(&wn.message)),
            Style::new().fg(Color::Yellow),
        ));
    }
    if t.warnings.len() > max_warnings {
        lines.push(Line::styled(
            format!(
                "⚠ … {} more warnings (span detail shows each span's)",
                t.warnings.len() - max_warnings
            ),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

/// Columns `[a, b)` of `width` that the time range `[start, end)` (ns from trace start)
/// covers, at least one column.
fn cols(start: u64, end: u64, total: u64, width: usize) -> (usize, usize) {
    let total = total.max(1) as u128;
    let w = width as u128;
    let a = ((start as u128 * w) / total).min(w.saturating_sub(1)) as usize;
    let b = ((end as u128 * w).div_ceil(total)).min(w) as usize;
    (a, b.max(a + 1))
}

/// Draw the waterfall of `w` into `area`: summary, time axis and the visible rows.
pub fn draw_waterfall(f: &mut Frame, area: Rect, o: &OpenTrace, w: &Waterfall) {
    let max_warn = if area.height >= 30 { 3 } else { 1 };
    let summary = summary_lines(w, max_warn);
    let sh = (summary.len() as u16).min(area.height / 2);
    let [sum_area, axis, rows_area] = Layout::vertical([
        Constraint::Length(sh),
        Constraint::Length(1),
        Constraint::Min(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(summary), sum_area);

    let width = area.width as usize;
    let label_w = (width * 2 / 5).clamp(16, 60);
    let dur_w = 8;
    let bar_w = width.saturating_sub(label_w + dur_w + 2).max(1);
    let total = w.trace.duration_ns;
    f.render_widget(axis_line(label_w, bar_w, total), axis);

    let (start, stop) = o.sel.window(rows_area.height as usize, w.visible.len());
    for (r, &row_idx) in w.visible[start..stop].iter().enumerate() {
        let Some(span) = w.trace.spans.get(w.rows[row_idx].span) else {
            continue;
        };
        let y = rows_area.y + r as u16;
        let mut label_line = Line::from(row_label(w, row_idx, span, o.is_match(row_idx)));
        if start + r == o.sel.selected() {
            label_line = label_line.style(SELECTED);
        }
        f.render_widget(label_line, Rect::new(area.x, y, label_w as u16, 1));
        f.render_widget(
            Line::from(row_bar(w, row_idx, span, bar_w)),
            Rect::new(area.x + label_w as u16 + 1, y, bar_w as u16, 1),
        );
        f.render_widget(
            Line::raw(format!("{:>dur_w$}", fmt::duration_ns(span.duration_ns))).right_aligned(),
            Rect::new(
                area.x + (label_w + 1 + bar_w) as u16,
                y,
                (dur_w + 1).min(width.saturating_sub(label_w + 1 + bar_w)) as u16,
                1,
            ),
        );
    }
}

/// The time axis over the bars: 0, the middle and the end of the trace.
fn axis_line(label_w: usize, bar_w: usize, total: u64) -> Line<'static> {
    let mid = fmt::duration_ns(total / 2);
    let end = fmt::duration_ns(total);
    let mut axis_text = format!("{:<label_w$} 0", "span");
    let half = bar_w / 2;
    let pad = half.saturating_sub(1 + mid.chars().count() / 2);
    axis_text.push_str(&" ".repeat(pad));
    axis_text.push_str(&mid);
    let used = 1 + pad + mid.chars().count();
    let pad = bar_w.saturating_sub(used + end.chars().count());
    axis_text.push_str(&" ".repeat(pad));
    axis_text.push_str(&end);
    Line::styled(axis_text, Style::new().add_modifier(Modifier::BOLD))
}

/// The label of waterfall row `row_idx`: indentation, fold marker, markers, service,
/// operation.
fn row_label(w: &Waterfall, row_idx: usize, span: &SpanView, matched: bool) -> Vec<Span<'static>> {
    let row = &w.rows[row_idx];
    let err = span.status == "error";
    let depth = row.depth as usize;
    let indent = if depth > 12 {
        format!("{:>22}… ", depth)
    } else {
        " ".repeat(depth * 2)
    };
    let fold = if row.descendants == 0 {
        "  "
    } else if w.collapsed[row_idx] {
        "▸ "
    } else {
        "▾ "
    };
    let mut label = vec![Span::raw(indent), Span::raw(fold)];
    if w.collapsed[row_idx] {
        label.push(Span::styled(
            format!("+{} ", row.descendants),
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    if err {
        label.push(Span::styled(
            "!",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if span.skew_adjustment_ns != 0 {
        label.push(Span::styled("~", Style::new().fg(Color::Yellow)));
    }
    // A span matching the search stands out: bold and underlined in yellow.
    let found = Style::new()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    label.push(Span::styled(
        fmt::one_line(&span.service),
        if matched {
            found
        } else {
            Style::new().fg(fmt::service_color(row.service))
        },
    ));
    label.push(Span::raw(" "));
    label.push(Span::styled(
        fmt::one_line(&span.operation),
        if matched {
            found
        } else if err {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        },
    ));
    label
}

/// The bar of waterfall row `row_idx`, `bar_w` columns for the whole trace: critical
/// parts in full blocks, the rest shaded.
fn row_bar(w: &Waterfall, row_idx: usize, span: &SpanView, bar_w: usize) -> Vec<Span<'static>> {
    let total = w.trace.duration_ns;
    let (a, b) = cols(
        span.offset_ns,
        span.offset_ns.saturating_add(span.duration_ns),
        total,
        bar_w,
    );
    let mut cells = vec![false; b - a];
    for &(s, e) in &w.critical[row_idx] {
        let (ca, cb) = cols(s, e, total, bar_w);
        for c in ca.max(a)..cb.min(b) {
            cells[c - a] = true;
        }
    }
    let color = if span.status == "error" {
        Color::Red
    } else {
        fmt::service_color(w.rows[row_idx].service)
    };
    let bar_style = Style::new().fg(color);
    let mut spans = vec![Span::raw(" ".repeat(a))];
    let mut run = String::new();
    let mut run_crit = cells.first().copied().unwrap_or(false);
    for &c in &cells {
        if c != run_crit && !run.is_empty() {
            spans.push(Span::styled(std::mem::take(&mut run), bar_style));
            run_crit = c;
        }
        run.push(if c { '█' } else { '▒' });
    }
    if !run.is_empty() {
        spans.push(Span::styled(run, bar_style));
    }
    spans
}

/// Lines of the span detail pane.
pub fn span_detail_lines(
    span: &SpanView,
    w: &Waterfall,
    logs: Option<&Result<Vec<LogEntry>, FetchError>>,
) -> Vec<Line<'static>> {
    let mut lines = span_fields(span);
    for wn in w
        .trace
        .warnings
        .iter()
        .filter(|x| x.span_id.as_deref() == Some(span.span_id.as_str()))
    {
        lines.push(Line::styled(
            format!("⚠ {}: {}", wn.kind, fmt::one_line(&wn.message)),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines.extend(attribute_sections(&span.attributes, &span.resource));
    lines.extend(events_and_links(span));
    lines.push(Line::styled("logs of this span", DETAIL_KEY));
    lines.extend(span_log_lines(logs));
    lines
}

/// The span's own fields: name, kind, status, timing, ids and clock-skew shift.
fn span_fields(span: &SpanView) -> Vec<Line<'static>> {
    let status = if span.status_message.is_empty() {
        span.status.clone()
    } else {
        format!("{}: {}", span.status, fmt::one_line(&span.status_message))
    };
    let status_style = if span.status == "error" {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    let mut lines = vec![
        Line::styled(
            format!(
                "{}: {}",
                fmt::one_line(&span.service),
                fmt::one_line(&span.operation)
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        field_line("kind", span.kind.clone()),
        field_line("status", Span::styled(status, status_style)),
        field_line("duration", fmt::duration_ns(span.duration_ns)),
        field_line("offset", format!("+{}", fmt::duration_ns(span.offset_ns))),
        field_line("start", span.start.clone()),
        field_line("span_id", span.span_id.clone()),
        field_line(
            "parent",
            span.parent_span_id
                .clone()
                .unwrap_or_else(|| "(root)".into()),
        ),
        field_line("critical", if span.critical { "yes" } else { "no" }),
    ];
    if span.skew_adjustment_ns != 0 {
        lines.push(Line::styled(
            format!(
                "clock skew: shifted by {}{}",
                if span.skew_adjustment_ns < 0 {
                    "-"
                } else {
                    "+"
                },
                fmt::duration_ns(span.skew_adjustment_ns.unsigned_abs())
            ),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

/// The `events` and `links` sections, each left out when empty.
fn events_and_links(span: &SpanView) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if !span.events.is_empty() {
        lines.push(Line::styled("events", DETAIL_KEY));
        for e in &span.events {
            let attrs: Vec<String> = e
                .attributes
                .iter()
                .map(|(k, v)| format!("{}={}", fmt::one_line(k), fmt::value(v)))
                .collect();
            lines.push(Line::raw(format!(
                "  {} {} {}",
                e.timestamp.get(11..23).unwrap_or(&e.timestamp),
                fmt::one_line(&e.name),
                attrs.join(" ")
            )));
        }
    }
    if !span.links.is_empty() {
        lines.push(Line::styled("links", DETAIL_KEY));
        for l in &span.links {
            lines.push(Line::raw(format!("  {} / {}", l.trace_id, l.span_id)));
        }
    }
    lines
}

/// The span's log records, or where fetching them is.
fn span_log_lines(logs: Option<&Result<Vec<LogEntry>, FetchError>>) -> Vec<Line<'static>> {
    match logs {
        None => vec![Line::raw("  loading…")],
        Some(Err(e)) => vec![Line::styled(
            format!("  {}", fmt::one_line(&e.to_string())),
            Style::new().fg(Color::Red),
        )],
        Some(Ok(l)) if l.is_empty() => vec![Line::raw("  none")],
        Some(Ok(l)) => l
            .iter()
            .map(|e| {
                Line::from(vec![
                    Span::styled(
                        format!("  {} ", fmt::clock(e.timestamp_unix_nano)),
                        Style::new().add_modifier(Modifier::DIM),
                    ),
                    Span::styled(
                        format!("{:<5} ", e.severity),
                        fmt::severity_style(&e.severity),
                    ),
                    Span::raw(fmt::one_line(&e.body)),
                ])
            })
            .collect(),
    }
}

fn draw_span_detail(f: &mut Frame, area: Rect, o: &OpenTrace, w: &Waterfall, span: &SpanView) {
    let logs = o
        .span_logs
        .as_ref()
        .filter(|(id, _)| *id == span.span_id)
        .map(|(_, r)| r);
    f.render_widget(
        Paragraph::new(span_detail_lines(span, w, logs))
            .wrap(Wrap { trim: false })
            .scroll((o.detail_scroll, 0))
            .block(
                Block::new()
                    .borders(Borders::TOP | Borders::LEFT)
                    .title(" Span (Esc closes, J/K scroll) "),
            ),
        area,
    );
}
