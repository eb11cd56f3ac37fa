//! The nodes view: the members of the cluster, the partitions each consumes and its lag.

use lookout_proto::api::{ClusterMember, ClusterResponse};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Wrap};
use ratatui::Frame;

use super::{field_line, fmt, highlight, titled_table};
use crate::app::App;
use crate::state::list::Selection;
use crate::state::nodes::ranges;

/// Draw the nodes view.
pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let n = &app.nodes;
    let Some(d) = n.data.as_ref().filter(|d| d.enabled) else {
        let empty = "One node: cluster mode is off. With [cluster] in the collectors' config\n\
                     they share the load through NATS JetStream, and this view lists them\n\
                     (README: \"Running a cluster\").";
        super::draw_empty(f, area, app, n.data.is_none(), empty, n.error.as_deref());
        return;
    };
    let warn_h = d.warnings.len().min(3) as u16;
    // The table as tall as its rows (header, border, a blank line under), the selected
    // member and the warnings right under it.
    let rows_h = (d.members.len() as u16).saturating_add(3);
    let [summary, table, detail, warnings, _] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Max(rows_h),
        Constraint::Length(3),
        Constraint::Length(warn_h),
        Constraint::Min(0),
    ])
    .areas(area);
    f.render_widget(summary_line(d), summary);
    draw_members(f, table, d, &n.sel);
    if let Some(m) = d.members.get(n.sel.selected()) {
        f.render_widget(
            Paragraph::new(detail_lines(m)).wrap(Wrap { trim: false }),
            detail,
        );
    }
    let lines: Vec<Line> = d
        .warnings
        .iter()
        .take(3)
        .map(|w| Line::styled(fmt::one_line(w), Style::new().fg(Color::Yellow)))
        .collect();
    f.render_widget(Paragraph::new(lines), warnings);
}

/// The cluster at a glance: members, partitions, the answering node, the alert leader
/// and partitions no one consumes.
fn summary_line(d: &ClusterResponse) -> Line<'static> {
    let consumers = d.members.iter().filter(|m| m.consume).count();
    let mut spans = vec![Span::raw(format!(
        "{} members ({consumers} consuming) · {} partitions · via {}",
        d.members.len(),
        d.partitions,
        fmt::one_line(&d.node),
    ))];
    if !d.connected {
        spans.push(Span::styled(
            " (not connected to NATS)",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(Span::raw(format!(
        " · alerts by {}",
        d.alerts_leader.as_deref().map_or("–".into(), fmt::one_line)
    )));
    if !d.unowned.is_empty() {
        spans.push(Span::styled(
            format!(" · unowned {}", ranges(&d.unowned)),
            Style::new().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

fn figure(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), fmt::count)
}

/// The members, one row each, the selected one highlighted.
fn draw_members(f: &mut Frame, area: Rect, d: &ClusterResponse, sel: &Selection) {
    let (start, end) = sel.window(area.height.saturating_sub(2) as usize, d.members.len());
    let rows: Vec<Row> = d.members[start..end]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let me = if m.node == d.node { "*" } else { " " };
            let role = if m.consume { "member" } else { "gateway" };
            let lag_style = match m.lag_messages {
                Some(l) if l > 0 => Style::new().fg(Color::Yellow),
                _ => Style::new(),
            };
            let row = Row::new(vec![
                Cell::from(format!("{me}{}", fmt::one_line(&m.node))),
                Cell::from(role),
                Cell::from(ranges(&m.partitions)),
                Cell::from(figure(m.lag_messages)).style(lag_style),
                Cell::from(figure(m.consumed_messages)),
                Cell::from(figure(m.redelivered_messages)),
            ]);
            highlight(row, start + i == sel.selected())
        })
        .collect();
    f.render_widget(
        titled_table(
            &["node", "role", "partitions", "lag", "consumed", "redeliv."],
            rows,
            [
                Constraint::Min(10),
                Constraint::Length(7),
                Constraint::Min(12),
                Constraint::Length(8),
                Constraint::Length(11),
                Constraint::Length(8),
            ],
            format!(" Nodes ({}) ", d.members.len()),
        ),
        area,
    );
}

/// The selected member: where its API answers and the partitions it holds.
fn detail_lines(m: &ClusterMember) -> Vec<Line<'static>> {
    vec![
        field_line("api", Span::raw(fmt::one_line(&m.api))),
        field_line(
            "holds",
            Span::raw(match m.partitions.len() {
                0 => "no partition".to_string(),
                1 => format!("1 partition: {}", ranges(&m.partitions)),
                n => format!("{n} partitions: {}", ranges(&m.partitions)),
            }),
        ),
    ]
}
