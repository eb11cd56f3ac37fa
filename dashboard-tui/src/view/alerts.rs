//! Alerts (rules, instances, notifications, receivers) and the service graph.

use lookout_proto::api::AlertRuleStatus;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Wrap};
use ratatui::Frame;

use super::{fmt, highlight, titled_table, SELECTED};
use crate::app::App;
use crate::state::list::Selection;

fn value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Draw the alerts view.
pub fn draw_alerts(f: &mut Frame, area: Rect, app: &App) {
    let a = &app.alerts;
    let Some(d) = a.data.as_ref().filter(|d| !d.rules.is_empty()) else {
        let empty = "No alert rules. Add [[alerts]] to the collector's config\n(see config/examples/collector.toml).";
        super::draw_empty(f, area, app, a.data.is_none(), empty, a.error.as_deref());
        return;
    };
    let rules_h = (d.rules.len() as u16 + 2).min(area.height / 2).max(3);
    let warn_h = d.warnings.len().min(2) as u16;
    let [rules_area, inst_area, recv_area, warn_area] = Layout::vertical([
        Constraint::Length(rules_h),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(warn_h),
    ])
    .areas(area);
    let warnings: Vec<Line> = d
        .warnings
        .iter()
        .take(2)
        .map(|w| Line::styled(fmt::one_line(w), Style::new().fg(Color::Yellow)))
        .collect();
    f.render_widget(Paragraph::new(warnings), warn_area);
    draw_rules(f, rules_area, &d.rules, &a.sel);
    if let Some(rule) = d.rules.get(a.sel.selected()) {
        f.render_widget(
            Paragraph::new(instance_lines(rule))
                .wrap(Wrap { trim: false })
                .block(
                    Block::new()
                        .borders(Borders::TOP)
                        .title(format!(" Instances of {} ", fmt::one_line(&rule.name))),
                ),
            inst_area,
        );
    }
    let recv: Vec<String> = d
        .receivers
        .iter()
        .map(|r| {
            format!(
                "{} ({}): {} delivered, {} failed, {} pending",
                r.name, r.kind, r.delivered, r.failed, r.pending
            )
        })
        .collect();
    f.render_widget(
        Line::styled(
            fmt::one_line(&format!("receivers: {}", recv.join("; "))),
            Style::new().add_modifier(Modifier::DIM),
        ),
        recv_area,
    );
}

/// The table of rules, the selected one highlighted.
fn draw_rules(f: &mut Frame, area: Rect, rules: &[AlertRuleStatus], sel: &Selection) {
    let (start, end) = sel.window(area.height.saturating_sub(2) as usize, rules.len());
    let rows: Vec<Row> = rules[start..end]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let firing = r.instances.iter().filter(|i| i.state == "firing").count();
            let scope = match (&r.service, &r.operation) {
                (Some(s), Some(o)) => format!(" [{s} {o}]"),
                (Some(s), None) => format!(" [{s}]"),
                _ => String::new(),
            };
            let row = Row::new(vec![
                Cell::from(r.state.clone()).style(fmt::alert_style(&r.state)),
                Cell::from(fmt::one_line(&r.name)),
                Cell::from(fmt::one_line(&format!(
                    "{} {} {}{scope}",
                    r.signal,
                    r.op,
                    value(r.threshold)
                ))),
                Cell::from(r.window.clone()),
                Cell::from(r.for_.clone()),
                Cell::from(format!("{firing}/{}", r.instances.len())),
            ]);
            highlight(row, start + i == sel.selected())
        })
        .collect();
    f.render_widget(
        titled_table(
            &["state", "rule", "condition", "window", "for", "firing"],
            rows,
            [
                Constraint::Length(9),
                Constraint::Min(12),
                Constraint::Min(20),
                Constraint::Length(6),
                Constraint::Length(6),
                Constraint::Length(6),
            ],
            format!(" Rules ({}) ", rules.len()),
        ),
        area,
    );
}

/// The instances of a rule, each with its notifications under it.
fn instance_lines(rule: &AlertRuleStatus) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if rule.instances.is_empty() {
        lines.push(Line::raw("No data for this rule yet."));
    }
    for inst in &rule.instances {
        let labels: Vec<String> = inst
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(Line::from(vec![
            Span::styled(format!("{:<9}", inst.state), fmt::alert_style(&inst.state)),
            Span::raw(fmt::one_line(&labels.join(" "))),
            Span::raw(format!(
                "  value {}  since {}",
                inst.value.map_or("-".into(), value),
                inst.since.get(11..19).unwrap_or(&inst.since)
            )),
        ]));
        for n in &inst.notifications {
            let style = match n.result.as_str() {
                "delivered" => Style::new().fg(Color::Green),
                "failed" => Style::new().fg(Color::Red),
                _ => Style::new().fg(Color::Yellow),
            };
            let mut spans = vec![
                Span::raw(format!(
                    "    → {} {} at {}: ",
                    fmt::one_line(&n.receiver),
                    n.status,
                    n.queued_at.get(11..19).unwrap_or(&n.queued_at)
                )),
                Span::styled(format!("{} ({} attempts)", n.result, n.attempts), style),
            ];
            if let Some(e) = &n.error {
                spans.push(Span::styled(
                    format!(" {}", fmt::one_line(e)),
                    Style::new().fg(Color::Red),
                ));
            }
            lines.push(Line::from(spans));
        }
    }
    lines
}

/// Draw the service graph view: the map, or (`m`) services on the left with the
/// callers and callees of the selected one on the right.
pub fn draw_graph(f: &mut Frame, area: Rect, app: &App) {
    let g = &app.graph;
    let services = g.services();
    if services.is_empty() {
        let empty = "No dependencies in the last hour.\nEdges come from client → server and producer → consumer span pairs.";
        super::draw_empty(f, area, app, g.data.is_none(), empty, g.error.as_deref());
        return;
    }
    if !g.table {
        super::graph::draw_map(f, area, app);
        return;
    }
    let list_w = (area.width / 3).clamp(14, 30);
    let [list_area, right] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(20)]).areas(area);
    let (start, end) = g
        .sel
        .window(list_area.height.saturating_sub(1) as usize, services.len());
    let mut lines = vec![Line::styled(
        "services (last 1h)",
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for (i, s) in services[start..end].iter().enumerate() {
        let mut l = Line::raw(fmt::one_line(s));
        if start + i == g.sel.selected() {
            l = l.style(SELECTED);
        }
        lines.push(l);
    }
    f.render_widget(Paragraph::new(lines), list_area);

    let Some(sel) = g.selected() else {
        return;
    };
    let edges = g.data.as_ref().map_or(&[][..], |d| &d.edges[..]);
    let [callers_area, callees_area] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    for (area, title, incoming) in [
        (callers_area, format!(" Callers of {sel} "), true),
        (callees_area, format!(" {sel} calls "), false),
    ] {
        let rows: Vec<Row> = edges
            .iter()
            .filter(|e| {
                if incoming {
                    e.callee == sel
                } else {
                    e.caller == sel
                }
            })
            .map(|e| {
                let other = if incoming { &e.caller } else { &e.callee };
                let err = if e.errors > 0 {
                    Style::new().fg(Color::Red)
                } else {
                    Style::new()
                };
                Row::new(vec![
                    Cell::from(format!(
                        "{} {}",
                        if incoming { "←" } else { "→" },
                        fmt::one_line(other)
                    )),
                    Cell::from(fmt::count(e.calls)),
                    Cell::from(fmt::count(e.errors)).style(err),
                    Cell::from(fmt::ms(e.avg_ms)),
                    Cell::from(fmt::ms(e.p95_ms)),
                ])
            })
            .collect();
        let empty = rows.is_empty();
        let table = titled_table(
            &["service", "calls", "errors", "avg", "p95"],
            rows,
            [
                Constraint::Min(14),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(7),
            ],
            fmt::one_line(&title),
        );
        if empty {
            f.render_widget(
                Paragraph::new("  none").block(
                    Block::new()
                        .borders(Borders::TOP)
                        .title(fmt::one_line(&title)),
                ),
                area,
            );
        } else {
            f.render_widget(table, area);
        }
    }
}
