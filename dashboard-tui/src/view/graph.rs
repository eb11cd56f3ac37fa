//! The service graph as a map: boxes and arrows laid out by
//! [`crate::state::graph_map`], scrolled to keep the selected service in view, with the
//! selected service's calls summed up under it.

use lookout_proto::api::DependencyEdge;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::fmt;
use crate::app::App;
use crate::state::graph_map::{edge_label, CellKind, GraphMap};

/// Draw the map of the service graph.
pub fn draw_map(f: &mut Frame, area: Rect, app: &App) {
    let g = &app.graph;
    let (Some(map), Some(data)) = (&g.map, &g.data) else {
        return;
    };
    let edges = &data.edges;
    let selected = g.selected();
    let [head, map_area, cycles, summary] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(u16::from(!map.not_drawn.is_empty())),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Line::from(vec![
            Span::styled(
                format!(
                    "services (last 1h): {}  calls between them: {}",
                    map.services.len(),
                    edges.len()
                ),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                "  callers left, callees right; calls ✕errors on the arrows",
                Style::new().add_modifier(Modifier::DIM),
            ),
        ]),
        head,
    );
    draw_cells(f, map_area, map, edges, selected.as_deref());
    if !map.not_drawn.is_empty() {
        let list: Vec<String> = map
            .not_drawn
            .iter()
            .filter_map(|&i| edges.get(i))
            .map(|e| format!("{} → {} {}", e.caller, e.callee, edge_label(e)))
            .collect();
        f.render_widget(
            Line::styled(
                fmt::one_line(&format!(
                    "↺ not drawn (cycles, self calls): {}",
                    list.join("; ")
                )),
                Style::new().fg(Color::Magenta),
            ),
            cycles,
        );
    }
    if let Some(sel) = &selected {
        f.render_widget(summary_line(sel, edges), summary);
    }
}

/// The selected service's callers and callees on one line.
fn summary_line(sel: &str, edges: &[DependencyEdge]) -> Line<'static> {
    let list = |incoming: bool| {
        let v: Vec<String> = edges
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
                format!("{other} ({})", edge_label(e))
            })
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    Line::from(vec![
        Span::styled(
            fmt::one_line(sel),
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(fmt::one_line(&format!(
            " ← {}  → {}  (m tables, ↵ traces, l logs)",
            list(true),
            list(false)
        ))),
    ])
}

/// The part of the map that fits `area`, scrolled so that the selected box shows.
fn draw_cells(
    f: &mut Frame,
    area: Rect,
    map: &GraphMap,
    edges: &[DependencyEdge],
    selected: Option<&str>,
) {
    let (w, h) = (usize::from(area.width), usize::from(area.height));
    let sel_box = selected.and_then(|s| map.box_of(s));
    let scroll = |start: usize, len: usize, view: usize, total: usize| {
        if total <= view || start + len <= view {
            0
        } else {
            // Centre the box, within the map.
            (start + len / 2)
                .saturating_sub(view / 2)
                .min(total.saturating_sub(view))
        }
    };
    let (sx, sy) = sel_box.map_or((0, 0), |b| {
        (
            scroll(b.x, b.w, w, map.width),
            scroll(b.y, b.h, h, map.height),
        )
    });
    let sel_idx = selected.and_then(|s| map.services.iter().position(|x| x == s));
    let touches = |e: usize| {
        edges.get(e).is_some_and(|e| {
            Some(e.caller.as_str()) == selected || Some(e.callee.as_str()) == selected
        })
    };
    let failed = |e: usize| edges.get(e).is_some_and(|e| e.errors > 0);
    let style = |kind: CellKind| match kind {
        CellKind::Empty => Style::new(),
        CellKind::Name(i) if Some(i) == sel_idx => {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
        CellKind::Name(_) => Style::new().fg(Color::Cyan),
        CellKind::Node(i) if Some(i) == sel_idx => Style::new().fg(Color::Yellow),
        CellKind::Node(_) => Style::new(),
        CellKind::Edge(e) | CellKind::Label(e) if touches(e) => {
            let s = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);
            if failed(e) && matches!(kind, CellKind::Label(_)) {
                s.fg(Color::Red)
            } else {
                s
            }
        }
        CellKind::Label(e) if failed(e) => Style::new().fg(Color::Red),
        CellKind::Edge(_) | CellKind::Label(_) => Style::new().add_modifier(Modifier::DIM),
    };
    let lines: Vec<Line> = (sy..(sy + h).min(map.height))
        .map(|y| {
            let mut spans: Vec<Span> = Vec::new();
            let mut run = String::new();
            let mut run_style = Style::new();
            for x in sx..(sx + w).min(map.width) {
                let c = map.cell(x, y);
                let st = style(c.kind);
                if st != run_style && !run.is_empty() {
                    spans.push(Span::styled(std::mem::take(&mut run), run_style));
                }
                run_style = st;
                run.push(c.ch);
            }
            if !run.is_empty() {
                spans.push(Span::styled(run, run_style));
            }
            Line::from(spans)
        })
        .collect();
    f.render_widget(Paragraph::new(lines), area);
}
