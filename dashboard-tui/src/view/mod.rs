//! Drawing. Views read the [`App`] and never change it (except list scroll offsets,
//! which only drawing can know) and never do I/O.

pub mod alerts;
pub mod fmt;
pub mod graph;
pub mod logs;
pub mod metrics;
pub mod nodes;
pub mod services;
pub mod traces;

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::app::{App, Conn, View};
use crate::state::input::LineInput;

/// Smallest terminal the views are laid out for.
pub const MIN_WIDTH: u16 = 40;
/// Smallest terminal height the views are laid out for.
pub const MIN_HEIGHT: u16 = 10;

/// Draw the whole dashboard.
pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "Terminal too small: {}x{}. lookout-tui needs at least {MIN_WIDTH}x{MIN_HEIGHT}. q quits.",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, app);
    match app.view {
        View::Services => services::draw(f, body, app),
        View::Logs => logs::draw(f, body, app),
        View::Traces => traces::draw(f, body, app),
        View::Alerts => alerts::draw_alerts(f, body, app),
        View::Graph => alerts::draw_graph(f, body, app),
        View::Metrics => metrics::draw(f, body, app),
        View::Nodes => nodes::draw(f, body, app),
    }
    draw_footer(f, footer, app);
    if let Some(scroll) = app.help {
        draw_help(f, body, scroll);
    }
}

fn draw_header(f: &mut Frame, area: Rect, app: &App) {
    let mut spans = vec![Span::styled(
        " lookout ",
        Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
    )];
    let tabs = |short: bool| {
        let mut out = Vec::new();
        for (i, v) in View::ALL.iter().enumerate() {
            out.push(Span::raw(" "));
            let (style, text) = if *v == app.view {
                (
                    Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                    format!("{}:{}", i + 1, v.title()),
                )
            } else if short {
                (
                    Style::new().add_modifier(Modifier::DIM),
                    format!("{}", i + 1),
                )
            } else {
                (
                    Style::new().add_modifier(Modifier::DIM),
                    format!("{}:{}", i + 1, v.title()),
                )
            };
            out.push(Span::styled(text, style));
        }
        out
    };
    let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    // The long form when it fits beside the tabs, else the short one.
    let (long, short, style) = match &app.conn {
        Conn::Connecting => (
            "connecting…".to_string(),
            "…".to_string(),
            Style::new().fg(Color::Yellow),
        ),
        Conn::Up { latency } => {
            let s = format!("● {}ms", latency.as_millis());
            (s.clone(), s, Style::new().fg(Color::Green))
        }
        Conn::Down { failures, .. } => (
            format!("✕ unreachable ({failures}×), retrying"),
            format!("✕ down ({failures}×)"),
            bad,
        ),
        Conn::NotLookout { .. } => ("✕ not a Lookout API".into(), "✕ not Lookout".into(), bad),
    };
    // Every tab named when it fits beside the status; else only the current one is.
    let width = |s: &[Span]| s.iter().map(Span::width).sum::<usize>();
    let lead = width(&spans);
    let full = tabs(false);
    let fits = |tabs: &[Span], status: &str| {
        lead + width(tabs) + 1 + status.chars().count() <= usize::from(area.width)
    };
    let (tab_spans, text) = if fits(&full, &long) {
        (full, long)
    } else if fits(&full, &short) {
        (full, short)
    } else {
        (tabs(true), short)
    };
    spans.extend(tab_spans);
    let status = Span::styled(text, style);
    let status_w = status.width() as u16 + 1;
    let [left, right] =
        Layout::horizontal([Constraint::Min(1), Constraint::Length(status_w)]).areas(area);
    f.render_widget(Line::from(spans), left);
    f.render_widget(Line::from(status).right_aligned(), right);
}

/// Key hints for the footer in the current context.
pub fn hints(app: &App) -> &'static str {
    if app.help.is_some() {
        return "j/k scroll  ? or Esc close  q quit";
    }
    if app.editing() {
        return "Enter run  Esc cancel  ↑/↓ history  ^U clear  ^W word";
    }
    match app.view {
        View::Services => "↵ traces  l logs  d graph  / filter  s sort  w window  ? help  q quit",
        View::Logs => "/ query  ↵ detail  t trace  y copy id  f follow  [ ] range  ? help  q quit",
        View::Traces if app.traces.open.is_some() => {
            "↵ detail  / find  n/N next  y copy id  v JSON  space fold  Esc back  ? help"
        }
        View::Traces => {
            "/ search  ↵ open  e errors  y copy id  [ ] range  r refresh  ? help  q quit"
        }
        View::Alerts => "j/k rule  r refresh  Tab view  ? help  q quit",
        View::Graph => "j/k service  ↵ traces  l logs  m map/tables  Tab view  ? help  q quit",
        View::Metrics => "/ filter  a lookout_* series  j/k series  Esc clear  ? help  q quit",
        View::Nodes => "j/k node  r refresh  Tab view  ? help  q quit",
    }
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    if let Some(cmd) = &app.command {
        input_line(f, area, ":", cmd, true);
        return;
    }
    if let Some(o) = app.traces.open.as_ref().filter(|o| o.searching) {
        if app.view == View::Traces {
            input_line(f, area, "/", &o.search, true);
            return;
        }
    }
    let line = match &app.flash {
        Some(msg) => Line::styled(fmt::one_line(msg), Style::new().fg(Color::Yellow)),
        None => Line::styled(hints(app), Style::new().add_modifier(Modifier::DIM)),
    };
    f.render_widget(line, area);
}

/// A one-line input with a prompt; places the cursor when it has the keyboard.
pub fn input_line(f: &mut Frame, area: Rect, prompt: &str, input: &LineInput, focused: bool) {
    let prompt_w = prompt.chars().count() as u16;
    let text = fmt::one_line(input.text());
    let width = area.width.saturating_sub(prompt_w + 1) as usize;
    // Scroll the text so the cursor stays visible.
    let cursor = input.cursor();
    let skip = cursor.saturating_sub(width);
    let shown: String = text.chars().skip(skip).take(width).collect();
    let (shown, style) = if !focused && shown.is_empty() {
        (
            "(everything; / to edit)".to_string(),
            Style::new().add_modifier(Modifier::DIM),
        )
    } else {
        (shown, Style::new())
    };
    let line = Line::from(vec![
        Span::styled(
            prompt.to_string(),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(shown, style),
    ]);
    f.render_widget(line, area);
    if focused {
        let x = area.x + prompt_w + (cursor - skip) as u16;
        f.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    }
}

/// The query bar of a search view: the input line, a status line and, when the last
/// query was refused, the error under it. Returns the status line and the rest.
pub fn query_bar(
    f: &mut Frame,
    area: Rect,
    prompt: &str,
    input: &LineInput,
    editing: bool,
    error: &Option<String>,
) -> (Rect, Rect) {
    let err_h = u16::from(error.is_some());
    let [bar, status, err, rest] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(err_h),
        Constraint::Min(1),
    ])
    .areas(area);
    input_line(f, bar, prompt, input, editing);
    if let Some(e) = error {
        f.render_widget(error_line(e), err);
    }
    (status, rest)
}

/// Split `area` for a detail pane when `open`: beside the main part (which keeps
/// `side_pct` %) from `wide` columns on, else below it (main part keeps `top_pct` %).
pub fn with_detail(
    area: Rect,
    open: bool,
    wide: u16,
    side_pct: u16,
    top_pct: u16,
) -> (Rect, Option<Rect>) {
    if !open {
        return (area, None);
    }
    let [a, b] = if area.width >= wide {
        Layout::horizontal([
            Constraint::Percentage(side_pct),
            Constraint::Percentage(100 - side_pct),
        ])
        .areas(area)
    } else {
        Layout::vertical([
            Constraint::Percentage(top_pct),
            Constraint::Percentage(100 - top_pct),
        ])
        .areas(area)
    };
    (a, Some(b))
}

/// The time range preset `range` (an index into the presets) for a status line.
pub fn range_span(range: usize) -> Span<'static> {
    use crate::state::logs::RANGES;
    Span::styled(
        format!("range {}", RANGES[range.min(RANGES.len() - 1)].0),
        Style::new().fg(Color::Cyan),
    )
}

/// Style of the row or line under the cursor.
pub const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// `row` in the [`SELECTED`] style when it is under the cursor.
pub fn highlight(row: Row<'_>, selected: bool) -> Row<'_> {
    if selected {
        row.style(SELECTED)
    } else {
        row
    }
}

/// A table under a top border titled `title`, with `columns` as its header row in bold.
pub fn titled_table<'a>(
    columns: &[&'a str],
    rows: Vec<Row<'a>>,
    widths: impl IntoIterator<Item = Constraint>,
    title: String,
) -> Table<'a> {
    Table::new(rows, widths)
        .header(Row::new(columns.to_vec()).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::new().borders(Borders::TOP).title(title))
}

/// Style of the field names and section titles of detail panes.
pub const DETAIL_KEY: Style = Style::new().fg(Color::Cyan);

/// A line of a detail pane: the field name in a 10-column gutter, then the value.
pub fn field_line(name: &str, value: impl Into<Span<'static>>) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<10}"), DETAIL_KEY),
        value.into(),
    ])
}

/// The `attributes` and `resource` sections of a detail pane, each left out when empty:
/// the title, then one `key = value` line per attribute.
pub fn attribute_sections(
    attributes: &serde_json::Map<String, serde_json::Value>,
    resource: &serde_json::Map<String, serde_json::Value>,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for (title, map) in [("attributes", attributes), ("resource", resource)] {
        if map.is_empty() {
            continue;
        }
        lines.push(Line::styled(title, DETAIL_KEY));
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

/// A message in the middle of an area (loading, empty, unreachable).
pub fn message(f: &mut Frame, area: Rect, lines: Vec<Line<'_>>) {
    let w = usize::from(area.width.max(1));
    let rows: usize = lines.iter().map(|l| l.width().div_ceil(w).max(1)).sum();
    let h = u16::try_from(rows).unwrap_or(u16::MAX).min(area.height);
    let top = area.y + area.height.saturating_sub(h) / 2;
    let r = Rect::new(area.x, top, area.width, h);
    f.render_widget(
        Paragraph::new(lines).centered().wrap(Wrap { trim: true }),
        r,
    );
}

/// An error message on one line, in red.
pub fn error_line(e: &str) -> Line<'static> {
    Line::styled(fmt::one_line(e), Style::new().fg(Color::Red))
}

/// A view with nothing to show: the [`placeholder`], and the last error under it.
pub fn draw_empty(
    f: &mut Frame,
    area: Rect,
    app: &App,
    loading: bool,
    empty: &str,
    error: Option<&str>,
) {
    let mut lines = placeholder(app, loading, empty);
    lines.extend(error.map(error_line));
    message(f, area, lines);
}

/// The message shown in a view that has nothing to show: why, in the app's own words.
pub fn placeholder(app: &App, loading: bool, empty: &str) -> Vec<Line<'static>> {
    match &app.conn {
        Conn::Down { error, .. } => vec![
            Line::styled(
                format!("Cannot reach the collector at {}", app.collector),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Line::raw(fmt::one_line(error)),
            Line::raw(format!(
                "Retrying every {}s. Start it with: lookout-collector --demo",
                app.refresh.as_secs().max(1)
            )),
        ],
        Conn::NotLookout { error } => vec![
            Line::styled(
                fmt::one_line(error),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Line::raw(
                "Point --collector at the collector's query API (default http://127.0.0.1:7070), not an OTLP port.",
            ),
            Line::raw(format!("Retrying every {}s.", app.refresh.as_secs().max(1))),
        ],
        Conn::Connecting => vec![Line::raw(format!("Connecting to {}…", app.collector))],
        Conn::Up { .. } if loading => vec![Line::raw("Loading…")],
        Conn::Up { .. } => empty.lines().map(|l| Line::raw(l.to_string())).collect(),
    }
}

/// Every key, by context, for the help overlay.
pub const KEYS: &[(&str, &[(&str, &str)])] = &[
    (
        "Everywhere",
        &[
            ("Tab / Shift-Tab", "next / previous view"),
            ("1 … 7", "services, logs, traces, alerts, graph, metrics, nodes"),
            ("j k / ↓ ↑", "move"),
            ("PgDn PgUp / ^D ^U", "page down / up"),
            ("g G / Home End", "first / last"),
            ("/", "edit the query or filter"),
            ("Enter", "open"),
            ("Esc / h / ←", "back, close pane"),
            ("r / F5", "refresh now"),
            (
                ":",
                "command: services, logs Q, traces S, trace ID, alerts, graph, metrics, nodes, q",
            ),
            ("?", "this help"),
            ("q / ^C", "quit"),
        ],
    ),
    (
        "Editing a line",
        &[
            ("Enter / Esc", "run / stop editing"),
            ("↑ ↓", "history"),
            ("^A ^E / Home End", "start / end"),
            ("^U ^W", "clear to start / delete word"),
        ],
    ),
    (
        "Services",
        &[
            ("Enter", "traces of the service"),
            ("l", "logs of the service"),
            ("d", "service graph at the service"),
            ("s", "sort: name, rate, errors, p99"),
            (
                "w",
                "window of the figures: 1m, 5m, 15m, 1h (at most the collector's traces.red_window)",
            ),
            ("/", "filter by name"),
        ],
    ),
    (
        "Logs",
        &[
            (
                "/",
                "query: tantivy syntax, e.g. timeout AND severity:error",
            ),
            ("Enter", "detail pane with every attribute"),
            ("J K", "scroll the detail pane"),
            ("t", "open the trace of the log"),
            ("y", "copy the log's trace id to the clipboard"),
            (
                "f",
                "follow new logs (live tail); without it new ones join the top (↑N new)",
            ),
            ("[ ]", "shorter / longer time range"),
            (
                "x",
                "clear the service filter (a query naming a service replaces it)",
            ),
        ],
    ),
    (
        "Traces",
        &[
            (
                "/",
                "search: service=S op=O min=250ms max=2s error KEY=VALUE",
            ),
            ("Enter", "open the trace as a waterfall"),
            ("e", "only traces with errors, or all"),
            (
                "y",
                "copy the trace id to the clipboard (OSC 52: works over SSH; in tmux with set-clipboard on)",
            ),
            ("[ ]", "shorter / longer time range"),
            ("○ ● ◐", "trace open, complete, updated late"),
        ],
    ),
    (
        "Waterfall",
        &[
            ("Enter", "span detail: attributes, events, logs"),
            ("space", "fold / unfold the span's children"),
            (
                "/",
                "find spans by service, operation, span id, attribute or event text",
            ),
            ("n N", "next / previous span found (unfolds what hides it)"),
            ("y", "copy the trace id to the clipboard"),
            (
                "v",
                "the span's JSON as the API answered it: j/k scroll, y copies it, Esc closes",
            ),
            ("J K", "scroll the detail pane"),
            ("l", "logs of the trace"),
            ("█ ▒", "critical path / rest of a span"),
            ("! ~", "error span / clock skew adjusted"),
            ("Esc", "back to the list"),
        ],
    ),
    (
        "Alerts and graph",
        &[
            ("j k", "select a rule / a service"),
            ("Enter / l", "graph: traces / logs of the service"),
            (
                "m",
                "graph: the map (callers left, callees right, calls ✕errors on the arrows) or tables with avg and p95",
            ),
        ],
    ),
    (
        "Metrics",
        &[
            (
                "/",
                "filter series by name and labels (every word must match)",
            ),
            ("a", "show or hide the collector's own lookout_* series"),
            (
                "j k",
                "select a series: its chart, labels, min and max below",
            ),
            ("Esc", "clear the filter"),
        ],
    ),
    (
        "Nodes",
        &[
            (
                "j k",
                "select a member of the cluster (cluster mode; one node otherwise)",
            ),
            (
                "columns",
                "partitions it consumes, messages not yet delivered to it (lag), consumed and redelivered since it started",
            ),
            ("*", "the node the dashboard is connected to"),
        ],
    ),
];

/// Width of the key column of the help, indentation included.
const HELP_KEY_W: usize = 20;

/// The help's lines for a box `inner` columns wide: each key's text wraps under its
/// text column, so every word is readable at any width.
pub fn help_lines(inner: usize) -> Vec<Line<'static>> {
    let text_w = inner.saturating_sub(HELP_KEY_W).max(10);
    let mut lines = Vec::new();
    for (section, keys) in KEYS {
        lines.push(Line::styled(
            section.to_string(),
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        ));
        for (k, what) in *keys {
            for (i, part) in fmt::wrap(what, text_w).into_iter().enumerate() {
                let key = if i == 0 { *k } else { "" };
                lines.push(Line::from(vec![
                    Span::styled(
                        format!("  {key:<w$}", w = HELP_KEY_W - 2),
                        Style::new().fg(Color::Cyan),
                    ),
                    Span::raw(part),
                ]));
            }
        }
    }
    lines
}

fn draw_help(f: &mut Frame, area: Rect, scroll: u16) {
    let w = area.width.min(100);
    let h = area.height;
    let r = Rect::new(area.x + (area.width - w) / 2, area.y, w, h);
    let lines = help_lines(usize::from(w.saturating_sub(2)));
    let max_scroll = (lines.len() as u16).saturating_sub(h.saturating_sub(2));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll.min(max_scroll), 0))
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .title(" Keys — ? or Esc closes, j/k scroll "),
            ),
        r,
    );
}
