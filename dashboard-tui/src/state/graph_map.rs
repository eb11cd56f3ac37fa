//! The service graph laid out as a map of boxes and arrows, computed once per answer of
//! `/api/v1/dependencies`: callers on the left, callees on the right, in layers (the
//! longest call path decides a service's layer), each service a box with one row per
//! edge in or out, edges routed with box-drawing lines through the gaps between layers
//! and labelled with their calls and errors.
//!
//! Calls that close a cycle (and a service calling itself) cannot point right; they are
//! listed under the map instead of drawn ([`GraphMap::not_drawn`]).

use std::collections::HashMap;

use lookout_proto::api::DependencyEdge;

/// Longest service name drawn in a box; longer ones are cut with `…`.
const NAME_MAX: usize = 24;

/// What a cell of the map shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    /// Nothing.
    Empty,
    /// A line or an arrow of edge `i` (an index into the answer's edges).
    Edge(usize),
    /// The calls and errors label of edge `i`.
    Label(usize),
    /// The box of service `i` (an index into [`GraphMap::services`]).
    Node(usize),
    /// The name of service `i` inside its box.
    Name(usize),
}

/// One cell: a character and what it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The character.
    pub ch: char,
    /// What it belongs to (for colours).
    pub kind: CellKind,
}

/// Where a service's box is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeBox {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
    /// Layer, from 0 (callers of nobody's) to the right.
    pub layer: usize,
}

/// The laid-out service graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphMap {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height` cells, row by row.
    pub cells: Vec<Cell>,
    /// Service names, sorted.
    pub services: Vec<String>,
    /// The box of each service, in the order of `services`.
    pub boxes: Vec<NodeBox>,
    /// Edges (indices into the answer) not drawn: self calls and calls closing a cycle.
    pub not_drawn: Vec<usize>,
}

impl GraphMap {
    /// The cell at column `x`, row `y`.
    pub fn cell(&self, x: usize, y: usize) -> Cell {
        self.cells.get(y * self.width + x).copied().unwrap_or(Cell {
            ch: ' ',
            kind: CellKind::Empty,
        })
    }

    /// The map as text, one string per row (for tests and debugging).
    pub fn text(&self) -> Vec<String> {
        (0..self.height)
            .map(|y| (0..self.width).map(|x| self.cell(x, y).ch).collect())
            .collect()
    }

    /// The box of service `name`.
    pub fn box_of(&self, name: &str) -> Option<NodeBox> {
        let i = self.services.iter().position(|s| s == name)?;
        self.boxes.get(i).copied()
    }
}

/// The label of an edge: calls, and errors when there are some.
pub fn edge_label(e: &DependencyEdge) -> String {
    let calls = compact(e.calls);
    if e.errors > 0 {
        format!("{calls} ✕{}", compact(e.errors))
    } else {
        calls
    }
}

fn compact(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{}M", n / 1_000_000),
    }
}

/// A hop of an edge between two adjacent layers; long edges pass through placeholder
/// nodes in the layers between.
#[derive(Debug, Clone, Copy)]
struct Seg {
    from: usize,
    to: usize,
    edge: usize,
}

/// Connection bits of a line cell.
const UP: u8 = 1;
const DOWN: u8 = 2;
const LEFT: u8 = 4;
const RIGHT: u8 = 8;

fn line_char(bits: u8) -> char {
    match bits {
        b if b == LEFT | RIGHT => '─',
        b if b == UP | DOWN => '│',
        b if b == RIGHT | DOWN => '┌',
        b if b == LEFT | DOWN => '┐',
        b if b == UP | RIGHT => '└',
        b if b == UP | LEFT => '┘',
        b if b == UP | DOWN | RIGHT => '├',
        b if b == UP | DOWN | LEFT => '┤',
        b if b == LEFT | RIGHT | DOWN => '┬',
        b if b == LEFT | RIGHT | UP => '┴',
        b if b == UP | DOWN | LEFT | RIGHT => '┼',
        b if b & (LEFT | RIGHT) != 0 => '─',
        b if b & (UP | DOWN) != 0 => '│',
        _ => ' ',
    }
}

/// A canvas of line bits and text, turned into cells at the end.
struct Canvas {
    w: usize,
    h: usize,
    bits: Vec<u8>,
    owner: Vec<Option<usize>>,
    text: Vec<Option<Cell>>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            bits: vec![0; w * h],
            owner: vec![None; w * h],
            text: vec![None; w * h],
        }
    }

    fn add(&mut self, x: usize, y: usize, bits: u8, edge: usize) {
        if x < self.w && y < self.h {
            self.bits[y * self.w + x] |= bits;
            self.owner[y * self.w + x] = Some(edge);
        }
    }

    fn put(&mut self, x: usize, y: usize, ch: char, kind: CellKind) {
        if x < self.w && y < self.h {
            self.text[y * self.w + x] = Some(Cell { ch, kind });
        }
    }

    fn hline(&mut self, x0: usize, x1: usize, y: usize, edge: usize) {
        for x in x0..=x1 {
            let mut b = 0;
            if x > x0 {
                b |= LEFT;
            }
            if x < x1 {
                b |= RIGHT;
            }
            self.add(x, y, b, edge);
        }
    }

    fn vline(&mut self, x: usize, y0: usize, y1: usize, edge: usize) {
        let (a, b) = (y0.min(y1), y0.max(y1));
        for y in a..=b {
            let mut bits = 0;
            if y > a {
                bits |= UP;
            }
            if y < b {
                bits |= DOWN;
            }
            self.add(x, y, bits, edge);
        }
    }

    fn cells(self) -> Vec<Cell> {
        (0..self.w * self.h)
            .map(|i| match self.text[i] {
                Some(c) => c,
                None if self.bits[i] != 0 => Cell {
                    ch: line_char(self.bits[i]),
                    kind: self.owner[i].map_or(CellKind::Empty, CellKind::Edge),
                },
                None => Cell {
                    ch: ' ',
                    kind: CellKind::Empty,
                },
            })
            .collect()
    }
}

/// Lay out the service graph of `edges`.
pub fn layout(edges: &[DependencyEdge]) -> GraphMap {
    let mut services: Vec<String> = edges
        .iter()
        .flat_map(|e| [e.caller.clone(), e.callee.clone()])
        .collect();
    services.sort();
    services.dedup();
    let n = services.len();
    if n == 0 {
        return GraphMap::default();
    }
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let ends = |e: &DependencyEdge| {
        Some((
            *index.get(e.caller.as_str())?,
            *index.get(e.callee.as_str())?,
        ))
    };

    // Calls out of each service, by callee name; a depth-first search in name order
    // finds the calls that close a cycle (to a service still on the stack).
    let mut out: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    let mut not_drawn = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        match ends(e) {
            Some((a, b)) if a != b => out[a].push((b, i)),
            _ => not_drawn.push(i),
        }
    }
    for o in &mut out {
        o.sort();
    }
    let mut state = vec![0u8; n]; // 0 new, 1 on the stack, 2 done
    let mut post = Vec::with_capacity(n);
    let mut back = vec![false; edges.len()];
    for root in 0..n {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some((v, next)) = stack.last().copied() {
            if let Some(&(w, e)) = out[v].get(next) {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                match state[w] {
                    0 => {
                        state[w] = 1;
                        stack.push((w, 0));
                    }
                    1 => back[e] = true,
                    _ => {}
                }
            } else {
                state[v] = 2;
                post.push(v);
                stack.pop();
            }
        }
    }
    for (i, b) in back.iter().enumerate() {
        if *b {
            not_drawn.push(i);
        }
    }
    not_drawn.sort_unstable();
    let dag: Vec<(usize, usize, usize)> = out
        .iter()
        .enumerate()
        .flat_map(|(a, o)| o.iter().map(move |&(b, e)| (a, b, e)))
        .filter(|&(_, _, e)| !back[e])
        .collect();

    // Layers: the longest path from a service nobody calls, in topological order.
    let mut layer = vec![0usize; n];
    for &v in post.iter().rev() {
        for &(w, e) in &out[v] {
            if !back[e] {
                layer[w] = layer[w].max(layer[v] + 1);
            }
        }
    }
    let layers_n = layer.iter().max().map_or(1, |m| m + 1);

    // Placeholder nodes carry long edges through the layers between their ends.
    let mut node_layer = layer.clone();
    let mut segs: Vec<Seg> = Vec::new();
    for &(a, b, e) in &dag {
        let mut prev = a;
        for l in layer[a] + 1..layer[b] {
            let d = node_layer.len();
            node_layer.push(l);
            segs.push(Seg {
                from: prev,
                to: d,
                edge: e,
            });
            prev = d;
        }
        segs.push(Seg {
            from: prev,
            to: b,
            edge: e,
        });
    }
    let total = node_layer.len();
    let is_real = |v: usize| v < n;
    // Hops out of and into each node.
    let mut seg_out: Vec<Vec<usize>> = vec![Vec::new(); total];
    let mut seg_in: Vec<Vec<usize>> = vec![Vec::new(); total];
    for (i, s) in segs.iter().enumerate() {
        seg_out[s.from].push(i);
        seg_in[s.to].push(i);
    }

    // Order within layers: by name, then barycentre sweeps to uncross edges.
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layers_n];
    for v in 0..total {
        layers[node_layer[v]].push(v);
    }
    let mut pos = vec![0f64; total];
    let set_pos = |layers: &Vec<Vec<usize>>, pos: &mut Vec<f64>| {
        for l in layers {
            for (i, &v) in l.iter().enumerate() {
                pos[v] = i as f64;
            }
        }
    };
    set_pos(&layers, &mut pos);
    for _ in 0..3 {
        for l in 1..layers_n {
            let key: HashMap<usize, f64> = layers[l]
                .iter()
                .map(|&v| {
                    let preds: Vec<f64> = seg_in[v].iter().map(|&i| pos[segs[i].from]).collect();
                    let k = if preds.is_empty() {
                        pos[v]
                    } else {
                        preds.iter().sum::<f64>() / preds.len() as f64
                    };
                    (v, k)
                })
                .collect();
            layers[l].sort_by(|a, b| key[a].total_cmp(&key[b]));
            set_pos(&layers, &mut pos);
        }
        for l in (0..layers_n.saturating_sub(1)).rev() {
            let key: HashMap<usize, f64> = layers[l]
                .iter()
                .map(|&v| {
                    let succs: Vec<f64> = seg_out[v].iter().map(|&i| pos[segs[i].to]).collect();
                    let k = if succs.is_empty() {
                        pos[v]
                    } else {
                        succs.iter().sum::<f64>() / succs.len() as f64
                    };
                    (v, k)
                })
                .collect();
            layers[l].sort_by(|a, b| key[a].total_cmp(&key[b]));
            set_pos(&layers, &mut pos);
        }
    }

    // Sizes: a box has a row per edge in or out (at least one) between its borders.
    let ins = |v: usize| seg_in[v].len();
    let outs = |v: usize| seg_out[v].len();
    let name_w = |v: usize| services[v].chars().count().min(NAME_MAX);
    let height_of = |v: usize| {
        if is_real(v) {
            2 + ins(v).max(outs(v)).max(1)
        } else {
            1
        }
    };
    let mut y = vec![0usize; total];
    let mut map_h = 0;
    for l in &layers {
        let mut cur = 0;
        for &v in l {
            y[v] = cur;
            cur += height_of(v) + 1;
        }
        map_h = map_h.max(cur.saturating_sub(1));
    }
    let col_w: Vec<usize> = layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|&v| if is_real(v) { name_w(v) + 4 } else { 1 })
                .max()
                .unwrap_or(1)
        })
        .collect();
    // Rows where each hop leaves its source and enters its target, in the order of the
    // other ends, so that the lines do not cross at the boxes.
    let mut out_row: Vec<usize> = vec![0; segs.len()];
    let mut in_row: Vec<usize> = vec![0; segs.len()];
    for v in 0..total {
        let mut o = seg_out[v].clone();
        o.sort_by_key(|&i| (y[segs[i].to], segs[i].to));
        for (k, i) in o.into_iter().enumerate() {
            out_row[i] = if is_real(v) { y[v] + 1 + k } else { y[v] };
        }
        let mut ins_v = seg_in[v].clone();
        ins_v.sort_by_key(|&i| (y[segs[i].from], segs[i].from));
        for (k, i) in ins_v.into_iter().enumerate() {
            in_row[i] = if is_real(v) { y[v] + 1 + k } else { y[v] };
        }
    }
    // Gaps: a column per hop for its vertical line, then room for the labels.
    let label_of = |s: &Seg| {
        if is_real(s.to) {
            edges.get(s.edge).map_or(String::new(), edge_label)
        } else {
            String::new()
        }
    };
    let mut gap_w = vec![0usize; layers_n.saturating_sub(1)];
    for (l, g) in gap_w.iter_mut().enumerate() {
        let in_gap: Vec<&Seg> = segs.iter().filter(|s| node_layer[s.from] == l).collect();
        let label = in_gap
            .iter()
            .map(|s| label_of(s).chars().count())
            .max()
            .unwrap_or(0);
        *g = in_gap.len() + label + 5;
    }
    let mut col_x = vec![0usize; layers_n];
    for l in 1..layers_n {
        col_x[l] = col_x[l - 1] + col_w[l - 1] + gap_w[l - 1];
    }
    let map_w = col_x[layers_n - 1] + col_w[layers_n - 1];

    let mut c = Canvas::new(map_w, map_h.max(1));
    // Hops, gap by gap.
    for l in 0..layers_n.saturating_sub(1) {
        let gap_x = col_x[l] + col_w[l];
        let mut hops: Vec<usize> = (0..segs.len())
            .filter(|&i| node_layer[segs[i].from] == l)
            .collect();
        order_hops(&mut hops, &out_row, &in_row);
        let k = hops.len();
        for (j, &i) in hops.iter().enumerate() {
            let s = segs[i];
            let xv = gap_x + 1 + j;
            let (ya, yb) = (out_row[i], in_row[i]);
            // From the source's right side (its box, or across a placeholder's column).
            let x0 = if is_real(s.from) {
                col_x[l] + name_w(s.from) + 3
            } else {
                col_x[l]
            };
            let xt = col_x[l + 1];
            c.hline(x0, xv, ya, s.edge);
            c.vline(xv, ya, yb, s.edge);
            if is_real(s.to) {
                c.hline(xv, xt.saturating_sub(1), yb, s.edge);
                c.put(xt.saturating_sub(1), yb, '▶', CellKind::Edge(s.edge));
                let label = label_of(&s);
                let lw = label.chars().count();
                let lx = xt.saturating_sub(2 + lw).max(gap_x + k + 2);
                for (d, ch) in label.chars().enumerate() {
                    c.put(lx + d, yb, ch, CellKind::Label(s.edge));
                }
            } else {
                c.hline(xv, xt + col_w[l + 1].saturating_sub(1), yb, s.edge);
            }
        }
    }
    // Placeholders run straight across their column (done by the hops above); boxes.
    let mut boxes = vec![
        NodeBox {
            x: 0,
            y: 0,
            w: 0,
            h: 0,
            layer: 0,
        };
        n
    ];
    for v in 0..n {
        let (x, top, w, h) = (col_x[layer[v]], y[v], name_w(v) + 4, height_of(v));
        boxes[v] = NodeBox {
            x,
            y: top,
            w,
            h,
            layer: layer[v],
        };
        let node = CellKind::Node(v);
        for dx in 0..w {
            let (t, b) = match dx {
                0 => ('┌', '└'),
                d if d == w - 1 => ('┐', '┘'),
                _ => ('─', '─'),
            };
            c.put(x + dx, top, t, node);
            c.put(x + dx, top + h - 1, b, node);
        }
        for dy in 1..h - 1 {
            c.put(x, top + dy, '│', node);
            let leaves = seg_out[v].iter().any(|&i| out_row[i] == top + dy);
            c.put(x + w - 1, top + dy, if leaves { '├' } else { '│' }, node);
            for dx in 1..w - 1 {
                c.put(x + dx, top + dy, ' ', node);
            }
        }
        // Untrusted text: control characters (escape sequences) are not drawn.
        let name: Vec<char> = services[v]
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        let shown: String = if name.len() > NAME_MAX {
            name[..NAME_MAX - 1].iter().collect::<String>() + "…"
        } else {
            name.iter().collect()
        };
        for (d, ch) in shown.chars().enumerate() {
            c.put(x + 2 + d, top + 1, ch, CellKind::Name(v));
        }
    }
    GraphMap {
        width: map_w,
        height: map_h.max(1),
        cells: c.cells(),
        services,
        boxes,
        not_drawn,
    }
}

/// Order the hops of one gap, whose vertical lines take a column each from the left: a
/// hop leaving at a row where another enters must come first, or its stub would run
/// along the other's last stretch. Otherwise by the rows they join.
fn order_hops(hops: &mut Vec<usize>, out_row: &[usize], in_row: &[usize]) {
    hops.sort_by_key(|&i| (out_row[i], in_row[i]));
    let k = hops.len();
    let mut before: Vec<Vec<usize>> = vec![Vec::new(); k];
    let mut indeg = vec![0usize; k];
    for a in 0..k {
        for b in 0..k {
            if a != b && out_row[hops[a]] == in_row[hops[b]] {
                before[a].push(b);
                indeg[b] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..k).filter(|&a| indeg[a] == 0).collect();
    let mut done = Vec::with_capacity(k);
    let mut taken = vec![false; k];
    while done.len() < k {
        let a = match ready.first().copied() {
            Some(a) => {
                ready.remove(0);
                a
            }
            // A cycle of constraints: take the first left, as sorted.
            None => match (0..k).find(|&a| !taken[a]) {
                Some(a) => a,
                None => break,
            },
        };
        if taken[a] {
            continue;
        }
        taken[a] = true;
        done.push(hops[a]);
        for &b in &before[a] {
            indeg[b] = indeg[b].saturating_sub(1);
            if indeg[b] == 0 && !taken[b] {
                ready.push(b);
                ready.sort_unstable();
            }
        }
    }
    *hops = done;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(a: &str, b: &str, calls: u64, errors: u64) -> DependencyEdge {
        DependencyEdge {
            caller: a.into(),
            callee: b.into(),
            calls,
            errors,
            avg_ms: 1.0,
            p95_ms: 2.0,
            inferred: false,
        }
    }

    #[test]
    fn a_shop_is_drawn_callers_left_callees_right() {
        let m = layout(&[
            edge("frontend", "checkout", 1200, 30),
            edge("checkout", "payment", 1150, 92),
            edge("checkout", "inventory", 24_000, 0),
        ]);
        let text = m.text().join("\n");
        let layer = |s: &str| m.box_of(s).map(|b| b.layer);
        assert_eq!(layer("frontend"), Some(0));
        assert_eq!(layer("checkout"), Some(1));
        assert_eq!((layer("inventory"), layer("payment")), (Some(2), Some(2)));
        assert!(m.not_drawn.is_empty());
        for needle in [
            "│ frontend ├",
            "1200 ✕30─▶│ checkout ├",
            "24k─▶│ inventory │",
            "1150 ✕92─▶│ payment │",
        ] {
            assert!(text.contains(needle), "{needle:?} missing:\n{text}");
        }
        // The boxes are closed, and every arrow ends at a box.
        let b = m.box_of("checkout").expect("checkout");
        assert_eq!(m.cell(b.x, b.y).ch, '┌');
        assert_eq!(m.cell(b.x + b.w - 1, b.y + b.h - 1).ch, '┘');
        assert_eq!(b.h, 4, "two calls out: two rows");
        for y in 0..m.height {
            for x in 0..m.width {
                if m.cell(x, y).ch == '▶' {
                    assert!(matches!(m.cell(x + 1, y).kind, CellKind::Node(_)), "{text}");
                }
            }
        }
    }

    #[test]
    fn long_edges_pass_between_layers_and_cycles_are_listed_not_drawn() {
        let m = layout(&[
            edge("a", "b", 1, 0),
            edge("b", "c", 1, 0),
            edge("a", "c", 5, 0),
            edge("c", "a", 7, 1),
            edge("d", "d", 2, 0),
        ]);
        let text = m.text().join("\n");
        assert_eq!(
            ["a", "b", "c", "d"].map(|s| m.box_of(s).map(|b| b.layer)),
            [Some(0), Some(1), Some(2), Some(0)]
        );
        // c → a closes a cycle; d → d calls itself.
        assert_eq!(m.not_drawn, [3, 4]);
        // a → c runs past b's layer to c: two arrows into c.
        let c = m.box_of("c").expect("c");
        let arrows = (0..m.height)
            .filter(|&y| m.cell(c.x - 1, y).ch == '▶')
            .count();
        assert_eq!(arrows, 2, "{text}");
        assert!(text.contains("5─▶│") && text.contains("1─▶│"), "{text}");
    }

    #[test]
    fn any_graph_lays_out_with_arrows_into_boxes_and_no_overlaps() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..200 {
            let n = 1 + next(14);
            let edges: Vec<DependencyEdge> = (0..next(30))
                .map(|_| {
                    let a = format!("svc-{}", next(n));
                    let b = format!("svc-{}", next(n));
                    edge(&a, &b, next(5000), next(3))
                })
                .collect();
            let m = layout(&edges);
            assert_eq!(m.cells.len(), m.width * m.height, "round {round}");
            let text = m.text().join("\n");
            for y in 0..m.height {
                for x in 0..m.width {
                    if m.cell(x, y).ch == '▶' {
                        assert!(
                            matches!(m.cell(x + 1, y).kind, CellKind::Node(_)),
                            "round {round}: an arrow into nothing\n{text}"
                        );
                    }
                }
            }
            for (i, a) in m.boxes.iter().enumerate() {
                for b in &m.boxes[i + 1..] {
                    let apart = a.x + a.w <= b.x
                        || b.x + b.w <= a.x
                        || a.y + a.h <= b.y
                        || b.y + b.h <= a.y;
                    assert!(apart, "round {round}: boxes overlap\n{text}");
                }
            }
        }
    }

    #[test]
    fn nothing_to_draw() {
        assert_eq!(layout(&[]), GraphMap::default());
        let m = layout(&[edge("x", "x", 1, 0)]);
        assert_eq!(m.services, ["x"]);
        assert_eq!(m.not_drawn, [0]);
    }
}
