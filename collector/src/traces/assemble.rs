//! Assembly of stored spans into the trace the API returns: de-duplication, the tree from
//! parent ids (orphans, self parents and cycles reported, never followed forever), the
//! root, clock-skew adjustment as Jaeger's `ClockSkew` adjuster does it, depth and offset
//! of each span, and the critical path as Jaeger UI computes it. Every walk is iterative:
//! a trace may be a chain of 100k spans.

use std::collections::HashMap;

use lookout_proto::api::{CriticalSegment, SpanView, TraceResponse, TraceWarning};

use lookout_ingest::values::rfc3339;

/// Most spans assembled; the rest (latest starts) are left out with a warning.
pub const MAX_ASSEMBLE_SPANS: usize = 100_000;

fn warn(kind: &str, span_id: Option<&str>, message: String) -> TraceWarning {
    TraceWarning {
        kind: kind.to_string(),
        span_id: span_id.map(str::to_string),
        message,
    }
}

fn host(s: &SpanView) -> Option<&str> {
    s.resource.get("host.name").and_then(|v| v.as_str())
}

/// Whether two spans ran on different machines (or, without host names, in different
/// services): only then can their clocks disagree.
fn different_hosts(a: &SpanView, b: &SpanView) -> bool {
    match (host(a), host(b)) {
        (Some(x), Some(y)) => x != y,
        _ => a.service != b.service,
    }
}

fn end(s: &SpanView) -> u64 {
    s.start_unix_nano.saturating_add(s.duration_ns)
}

/// Assemble `spans` (any order, as stored) into the trace the API returns.
pub fn assemble(trace_id: &str, state: &str, spans: Vec<SpanView>) -> TraceResponse {
    let mut warnings = Vec::new();
    let (mut spans, index) = dedup(sort_and_truncate(spans, &mut warnings), &mut warnings);
    let n = spans.len();
    let (mut parent, mut orphan) = link_parents(&spans, &index, &mut warnings);
    break_cycles(&spans, &mut parent, &mut orphan, &mut warnings);
    // Spans are sorted by start, so each child list is too.
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = *p {
            children[p].push(i);
        }
    }
    let (root, top) = roots(&spans, &parent, &orphan, &mut warnings);
    let orphan_count = orphan.iter().filter(|o| **o).count() as u64;
    let walk = walk_adjusting_skew(&mut spans, &parent, &children, &top);
    skew_warnings(&spans, &parent, &walk, &mut warnings);

    let start = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
    let trace_end = spans.iter().map(end).max().unwrap_or(start);
    for (i, s) in spans.iter_mut().enumerate() {
        s.depth = walk.depth[i];
        s.offset_ns = s.start_unix_nano.saturating_sub(start);
        s.critical = false;
    }
    let critical_path = match root.or_else(|| top.first().copied()) {
        Some(r) => critical_path(&spans, &parent, &children, r, start),
        None => Vec::new(),
    };
    let on_path: std::collections::HashSet<String> =
        critical_path.iter().map(|c| c.span_id.clone()).collect();
    for s in spans.iter_mut() {
        s.critical = on_path.contains(&s.span_id);
    }

    let mut services: Vec<String> = spans.iter().map(|s| s.service.clone()).collect();
    services.sort();
    services.dedup();
    let error_count = spans.iter().filter(|s| s.status == "error").count() as u64;
    let root_span_id = root.map(|r| spans[r].span_id.clone());
    // Emit in tree order.
    let mut slots: Vec<Option<SpanView>> = spans.into_iter().map(Some).collect();
    let ordered: Vec<SpanView> = walk.order.iter().filter_map(|&i| slots[i].take()).collect();
    TraceResponse {
        trace_id: trace_id.to_string(),
        state: state.to_string(),
        root_span_id,
        start: rfc3339(start),
        start_unix_nano: start,
        duration_ns: trace_end.saturating_sub(start),
        span_count: n as u64,
        error_count,
        orphan_count,
        services,
        spans: ordered,
        critical_path,
        warnings,
    }
}

/// Earliest first (so that de-duplication keeps the earliest copy), at most
/// [`MAX_ASSEMBLE_SPANS`].
fn sort_and_truncate(mut spans: Vec<SpanView>, warnings: &mut Vec<TraceWarning>) -> Vec<SpanView> {
    spans.sort_by(|a, b| {
        a.start_unix_nano
            .cmp(&b.start_unix_nano)
            .then_with(|| a.span_id.cmp(&b.span_id))
    });
    if spans.len() > MAX_ASSEMBLE_SPANS {
        warnings.push(warn(
            "truncated",
            None,
            format!(
                "trace has {} spans; the {MAX_ASSEMBLE_SPANS} earliest are shown",
                spans.len()
            ),
        ));
        spans.truncate(MAX_ASSEMBLE_SPANS);
    }
    spans
}

/// One span per span id (the earliest), and where each id is.
fn dedup(
    spans: Vec<SpanView>,
    warnings: &mut Vec<TraceWarning>,
) -> (Vec<SpanView>, HashMap<String, usize>) {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(spans.len());
    let mut dups: HashMap<String, u64> = HashMap::new();
    let mut kept = Vec::with_capacity(spans.len());
    for s in spans {
        if index.contains_key(&s.span_id) {
            *dups.entry(s.span_id.clone()).or_default() += 1;
            continue;
        }
        index.insert(s.span_id.clone(), kept.len());
        kept.push(s);
    }
    let mut dup_ids: Vec<(String, u64)> = dups.into_iter().collect();
    dup_ids.sort();
    for (id, n) in dup_ids {
        warnings.push(warn(
            "duplicate_span_id",
            Some(&id),
            format!("span id {id} appears {} times; the earliest is kept", n + 1),
        ));
    }
    (kept, index)
}

/// Each span's parent, and whether it is an orphan (its parent is itself or missing).
fn link_parents(
    spans: &[SpanView],
    index: &HashMap<String, usize>,
    warnings: &mut Vec<TraceWarning>,
) -> (Vec<Option<usize>>, Vec<bool>) {
    let n = spans.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut orphan = vec![false; n];
    for (i, s) in spans.iter().enumerate() {
        let Some(p) = s.parent_span_id.as_deref() else {
            continue;
        };
        if p == s.span_id {
            warnings.push(warn(
                "self_parent",
                Some(&s.span_id),
                format!("span {} names itself as parent", s.span_id),
            ));
            orphan[i] = true;
            continue;
        }
        match index.get(p) {
            Some(&pi) => parent[i] = Some(pi),
            None => {
                warnings.push(warn(
                    "missing_parent",
                    Some(&s.span_id),
                    format!("parent {p} of span {} is not in the trace", s.span_id),
                ));
                orphan[i] = true;
            }
        }
    }
    (parent, orphan)
}

/// Walk up from each span; meeting a span of the current walk closes a cycle, which is
/// broken at that span.
fn break_cycles(
    spans: &[SpanView],
    parent: &mut [Option<usize>],
    orphan: &mut [bool],
    warnings: &mut Vec<TraceWarning>,
) {
    let n = spans.len();
    let mut mark = vec![0u8; n]; // 0 new, 1 on the current walk, 2 done
    let mut path = Vec::new();
    for start in 0..n {
        let mut cur = start;
        path.clear();
        loop {
            match mark[cur] {
                2 => break,
                1 => {
                    parent[cur] = None;
                    orphan[cur] = true;
                    warnings.push(warn(
                        "parent_cycle",
                        Some(&spans[cur].span_id),
                        format!(
                            "parent ids form a cycle through span {}; it is shown as a top-level span",
                            spans[cur].span_id
                        ),
                    ));
                    break;
                }
                _ => {
                    mark[cur] = 1;
                    path.push(cur);
                    match parent[cur] {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
            }
        }
        for &i in &path {
            mark[i] = 2;
        }
    }
}

/// The root (the earliest span without a parent that is not an orphan) and the top-level
/// spans, root first, then by start.
fn roots(
    spans: &[SpanView],
    parent: &[Option<usize>],
    orphan: &[bool],
    warnings: &mut Vec<TraceWarning>,
) -> (Option<usize>, Vec<usize>) {
    let n = spans.len();
    let roots: Vec<usize> = (0..n)
        .filter(|&i| parent[i].is_none() && !orphan[i])
        .collect();
    let root = roots.first().copied();
    if roots.len() > 1 {
        warnings.push(warn(
            "multiple_roots",
            None,
            format!(
                "{} spans have no parent; the earliest is the root",
                roots.len()
            ),
        ));
    }
    if root.is_none() && n > 0 {
        warnings.push(warn(
            "no_root",
            None,
            "no span without a parent: the root is missing".into(),
        ));
    }
    let mut top: Vec<usize> = (0..n).filter(|&i| parent[i].is_none()).collect();
    top.sort_by_key(|&i| (Some(i) != root, spans[i].start_unix_nano, i));
    (root, top)
}

/// The depth-first walk of the tree, parents before children.
struct Walk {
    /// Spans in tree order.
    order: Vec<usize>,
    /// Depth of each span.
    depth: Vec<u32>,
    /// Clock-skew adjustment of each span, ns.
    shift: Vec<i128>,
}

/// Walk the tree depth first, and move each span that does not fit in its parent across
/// a host boundary into it (Jaeger's `ClockSkew` adjuster); children move with their
/// parent.
fn walk_adjusting_skew(
    spans: &mut [SpanView],
    parent: &[Option<usize>],
    children: &[Vec<usize>],
    top: &[usize],
) -> Walk {
    let n = spans.len();
    let mut walk = Walk {
        order: Vec::with_capacity(n),
        depth: vec![0u32; n],
        shift: vec![0i128; n],
    };
    let mut stack: Vec<usize> = top.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        walk.order.push(i);
        if let Some(p) = parent[i] {
            walk.depth[i] = walk.depth[p].saturating_add(1);
            // Move with the parent first, then fit inside it if the clocks disagree.
            let mut total = walk.shift[p];
            let start = i128::from(spans[i].start_unix_nano) + total;
            let dur = i128::from(spans[i].duration_ns);
            let (ps, pd) = (
                i128::from(spans[p].start_unix_nano),
                i128::from(spans[p].duration_ns),
            );
            if different_hosts(&spans[i], &spans[p])
                && (start < ps || start + dur > ps + pd)
                && dur <= pd
            {
                let adjusted = ps + (pd - dur) / 2;
                total += adjusted - start;
            }
            walk.shift[i] = total;
        }
        // Apply now: children read the adjusted parent.
        let shift = walk.shift[i];
        if shift != 0 {
            let s = &mut spans[i];
            let new = (i128::from(s.start_unix_nano) + shift).clamp(0, i128::from(u64::MAX));
            s.start_unix_nano = u64::try_from(new).unwrap_or(0);
            s.start = rfc3339(s.start_unix_nano);
            s.skew_adjustment_ns =
                i64::try_from(shift).unwrap_or(if shift < 0 { i64::MIN } else { i64::MAX });
        }
        for &c in children[i].iter().rev() {
            stack.push(c);
        }
    }
    walk
}

/// A warning for each span moved by more than its parent.
fn skew_warnings(
    spans: &[SpanView],
    parent: &[Option<usize>],
    walk: &Walk,
    warnings: &mut Vec<TraceWarning>,
) {
    for &i in &walk.order {
        let Some(p) = parent[i] else {
            continue;
        };
        if walk.shift[i] == walk.shift[p] {
            continue;
        }
        let s = &spans[i];
        let own = walk.shift[i] - walk.shift[p];
        warnings.push(warn(
            "clock_skew",
            Some(&s.span_id),
            format!(
                "span {} ({} on {}) did not fit in its parent ({} on {}); moved by {:.3} ms",
                s.span_id,
                s.service,
                host(s).unwrap_or("unknown host"),
                spans[p].service,
                host(&spans[p]).unwrap_or("unknown host"),
                own as f64 / 1e6
            ),
        ));
    }
}

/// Jaeger UI's critical path: from the root, descend into the last-finishing child; the
/// time after it finishes belongs to the parent; then continue with the child that
/// finished last before that child started; what is left belongs to the parent. Children
/// are clipped to their parent first (children outside it are ignored).
fn critical_path(
    spans: &[SpanView],
    parent: &[Option<usize>],
    children: &[Vec<usize>],
    root: usize,
    trace_start: u64,
) -> Vec<CriticalSegment> {
    let n = spans.len();
    // Clipped bounds, top-down from the root.
    let mut lo = vec![0u64; n];
    let mut hi = vec![0u64; n];
    let mut inside = vec![false; n];
    lo[root] = spans[root].start_unix_nano;
    hi[root] = end(&spans[root]);
    inside[root] = true;
    let mut stack = vec![root];
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); n];
    while let Some(p) = stack.pop() {
        for &c in &children[p] {
            let (s, e) = (
                spans[c].start_unix_nano.max(lo[p]),
                end(&spans[c]).min(hi[p]),
            );
            if s < e || (s == e && spans[c].duration_ns == 0 && s > lo[p] && s < hi[p]) {
                lo[c] = s;
                hi[c] = e;
                inside[c] = true;
                kids[p].push(c);
                stack.push(c);
            }
        }
        // Last finishing first.
        kids[p].sort_by(|a, b| hi[*b].cmp(&hi[*a]).then_with(|| lo[*b].cmp(&lo[*a])));
    }
    let mut rev: Vec<(usize, u64, u64)> = Vec::new();
    let mut pos = vec![0usize; n];
    let mut cur = root;
    let mut cursor: Option<u64> = None;
    // Each span is entered at most once from its parent and left at most once.
    let mut steps = 0usize;
    loop {
        steps += 1;
        if steps > 4 * n + 4 {
            break;
        }
        let until = cursor.unwrap_or(hi[cur]);
        // The cursor only moves earlier, and children are by end descending: resume the
        // scan where it stopped (linear over a fan-out of 100k).
        let list = &kids[cur];
        let mut k = pos[cur];
        while k < list.len() && cursor.is_some_and(|c| hi[list[k]] >= c) {
            k += 1;
        }
        pos[cur] = k + 1;
        let next = list.get(k).copied();
        match next {
            Some(c) => {
                if hi[c] < until {
                    rev.push((cur, hi[c], until));
                }
                cur = c;
                cursor = None;
            }
            None => {
                if lo[cur] < until {
                    rev.push((cur, lo[cur], until));
                }
                if cur == root {
                    break;
                }
                match parent[cur] {
                    Some(p) => {
                        cursor = Some(lo[cur]);
                        cur = p;
                    }
                    None => break,
                }
            }
        }
    }
    rev.reverse();
    let mut out: Vec<CriticalSegment> = Vec::with_capacity(rev.len());
    for (i, s, e) in rev {
        let (s, e) = (s.saturating_sub(trace_start), e.saturating_sub(trace_start));
        if let Some(last) = out.last_mut() {
            if last.span_id == spans[i].span_id && last.end_offset_ns == s {
                last.end_offset_ns = e;
                continue;
            }
        }
        out.push(CriticalSegment {
            span_id: spans[i].span_id.clone(),
            start_offset_ns: s,
            end_offset_ns: e,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::{json, Map};

    use super::*;

    const MS: u64 = 1_000_000;

    fn sp(id: &str, parent: Option<&str>, svc: &str, host: &str, start: u64, end: u64) -> SpanView {
        let mut resource = Map::new();
        resource.insert("host.name".into(), json!(host));
        SpanView {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            depth: 0,
            offset_ns: 0,
            skew_adjustment_ns: 0,
            critical: false,
            service: svc.into(),
            operation: format!("op-{id}"),
            kind: "server".into(),
            start: rfc3339(start),
            start_unix_nano: start,
            duration_ns: end.saturating_sub(start),
            status: "unset".into(),
            status_message: String::new(),
            attributes: Map::new(),
            resource,
            events: vec![],
            links: vec![],
        }
    }

    fn kinds(t: &TraceResponse) -> Vec<&str> {
        t.warnings.iter().map(|w| w.kind.as_str()).collect()
    }

    fn by<'a>(t: &'a TraceResponse, id: &str) -> &'a SpanView {
        t.spans.iter().find(|s| s.span_id == id).unwrap()
    }

    #[test]
    fn shuffled_three_levels() {
        let t0 = 1_000 * MS;
        let spans = vec![
            sp("c", Some("b"), "s", "h", t0 + 20 * MS, t0 + 30 * MS),
            sp("a", None, "s", "h", t0, t0 + 100 * MS),
            sp("d", Some("a"), "s", "h", t0 + 50 * MS, t0 + 60 * MS),
            sp("b", Some("a"), "s", "h", t0 + 10 * MS, t0 + 40 * MS),
        ];
        let t = assemble("t", "complete", spans);
        let order: Vec<&str> = t.spans.iter().map(|s| s.span_id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(t.root_span_id.as_deref(), Some("a"));
        assert_eq!(by(&t, "c").depth, 2);
        assert_eq!(by(&t, "c").offset_ns, 20 * MS);
        assert_eq!(t.duration_ns, 100 * MS);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    }

    #[test]
    fn missing_self_and_cyclic_parents() {
        let spans = vec![
            sp("r", None, "s", "h", 0, 10),
            sp("o", Some("zz"), "s", "h", 1, 2),
            sp("self", Some("self"), "s", "h", 1, 2),
            sp("x", Some("y"), "s", "h", 3, 4),
            sp("y", Some("z"), "s", "h", 3, 4),
            sp("z", Some("x"), "s", "h", 3, 4),
            sp("p", Some("q"), "s", "h", 5, 6),
            sp("q", Some("p"), "s", "h", 5, 6),
        ];
        let t = assemble("t", "open", spans);
        let k = kinds(&t);
        assert!(k.contains(&"missing_parent"));
        assert!(k.contains(&"self_parent"));
        assert_eq!(k.iter().filter(|k| **k == "parent_cycle").count(), 2);
        assert_eq!(t.orphan_count, 4);
        assert_eq!(t.spans.len(), 8);
        assert_eq!(t.spans[0].span_id, "r");
        assert_eq!(by(&t, "o").depth, 0);
    }

    #[test]
    fn duplicates_and_roots() {
        let spans = vec![
            sp("a", None, "s", "h", 0, 10),
            sp("a", None, "s", "h", 5, 10),
            sp("b", None, "s", "h", 1, 10),
        ];
        let t = assemble("t", "open", spans);
        assert_eq!(t.span_count, 2);
        assert_eq!(kinds(&t), ["duplicate_span_id", "multiple_roots"]);
        assert_eq!(t.root_span_id.as_deref(), Some("a"));
        let none = assemble("t", "open", vec![sp("a", Some("x"), "s", "h", 0, 1)]);
        assert!(kinds(&none).contains(&"no_root"));
        assert_eq!(none.root_span_id, None);
        assert_eq!(none.critical_path.len(), 1);
    }

    #[test]
    fn clock_skew_is_adjusted_like_jaeger() {
        let t0 = 10_000 * MS;
        let spans = vec![
            sp("p", None, "api", "h1", t0, t0 + 100 * MS),
            // 90 ms child reported 50 ms before its parent on another host.
            sp("c", Some("p"), "db", "h2", t0 - 50 * MS, t0 + 40 * MS),
            sp("g", Some("c"), "db", "h2", t0 - 40 * MS, t0 - 30 * MS),
            // Same host: never adjusted.
            sp("same", Some("p"), "api", "h1", t0 - 5 * MS, t0 + 5 * MS),
            // Longer than its parent: not adjusted.
            sp("long", Some("p"), "x", "h3", t0 - 5 * MS, t0 + 200 * MS),
        ];
        let t = assemble("t", "complete", spans);
        let c = by(&t, "c");
        assert_eq!(c.start_unix_nano, t0 + 5 * MS);
        assert_eq!(c.skew_adjustment_ns, 55 * MS as i64);
        let g = by(&t, "g");
        assert_eq!(g.start_unix_nano, t0 + 15 * MS);
        assert_eq!(g.skew_adjustment_ns, 55 * MS as i64);
        assert_eq!(by(&t, "same").skew_adjustment_ns, 0);
        assert_eq!(by(&t, "long").skew_adjustment_ns, 0);
        let skews: Vec<_> = t
            .warnings
            .iter()
            .filter(|w| w.kind == "clock_skew")
            .collect();
        assert_eq!(skews.len(), 1);
        assert_eq!(skews[0].span_id.as_deref(), Some("c"));
    }

    fn seg(t: &TraceResponse) -> Vec<(String, u64, u64)> {
        t.critical_path
            .iter()
            .map(|s| {
                (
                    s.span_id.clone(),
                    s.start_offset_ns / MS,
                    s.end_offset_ns / MS,
                )
            })
            .collect()
    }

    #[test]
    fn critical_path_overlapping_children() {
        let spans = vec![
            sp("root", None, "s", "h", 0, 100 * MS),
            sp("a", Some("root"), "s", "h", 10 * MS, 40 * MS),
            sp("b", Some("root"), "s", "h", 30 * MS, 90 * MS),
        ];
        let t = assemble("t", "complete", spans);
        // b ends last; a ended at 40, after b started at 30, so it is not on the path.
        assert_eq!(
            seg(&t),
            [
                ("root".to_string(), 0, 30),
                ("b".to_string(), 30, 90),
                ("root".to_string(), 90, 100)
            ]
        );
        assert!(by(&t, "b").critical);
        assert!(!by(&t, "a").critical);
    }

    #[test]
    fn critical_path_sequential_and_clipped() {
        let spans = vec![
            sp("root", None, "s", "h", 0, 100 * MS),
            sp("a", Some("root"), "s", "h", 10 * MS, 40 * MS),
            sp("b", Some("root"), "s", "h", 50 * MS, 90 * MS),
            sp("late", Some("root"), "s", "h", 120 * MS, 130 * MS),
        ];
        let t = assemble("t", "complete", spans);
        assert_eq!(
            seg(&t),
            [
                ("root".to_string(), 0, 10),
                ("a".to_string(), 10, 40),
                ("root".to_string(), 40, 50),
                ("b".to_string(), 50, 90),
                ("root".to_string(), 90, 100)
            ]
        );
        assert_eq!(t.duration_ns, 130 * MS);
    }

    #[test]
    fn long_chain_and_wide_fan_out() {
        let n = 100_000usize;
        let chain: Vec<SpanView> = (0..n)
            .map(|i| {
                let parent = (i > 0).then(|| format!("{:x}", i - 1));
                sp(
                    &format!("{i:x}"),
                    parent.as_deref(),
                    "s",
                    "h",
                    i as u64,
                    (2 * n - i) as u64,
                )
            })
            .collect();
        let t = assemble("t", "complete", chain);
        assert_eq!(t.spans.last().unwrap().depth, (n - 1) as u32);
        assert!(t.warnings.is_empty());
        let fan: Vec<SpanView> = std::iter::once(sp("root", None, "s", "h", 0, 10 * n as u64))
            .chain((0..n - 1).map(|i| {
                sp(
                    &format!("c{i}"),
                    Some("root"),
                    "s",
                    "h",
                    i as u64,
                    i as u64 + 5,
                )
            }))
            .collect();
        let t = assemble("t", "complete", fan);
        assert_eq!(t.span_count, n as u64);
        let mut over: Vec<SpanView> = (0..n + 10)
            .map(|i| sp(&format!("{i}"), None, "s", "h", i as u64, i as u64 + 1))
            .collect();
        over.reverse();
        let t = assemble("t", "complete", over);
        assert_eq!(t.span_count, n as u64);
        assert!(kinds(&t).contains(&"truncated"));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let spans = vec![
            sp("r", None, "a", "h1", 0, u64::MAX),
            sp("c", Some("r"), "b", "h2", u64::MAX - 10, u64::MAX),
            sp("d", Some("r"), "b", "h2", 0, 0),
        ];
        let t = assemble("t", "complete", spans);
        assert_eq!(t.span_count, 3);
        assert_eq!(t.duration_ns, u64::MAX);
    }
}
