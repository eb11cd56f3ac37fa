//! The traces view: a search line, the matching traces, and one open trace as a waterfall
//! with a span detail pane.

use std::collections::HashMap;

use lookout_proto::api::{LogEntry, TraceResponse, TracesResponse};

use super::input::LineInput;
use super::list::Selection;
use super::logs::RANGES;
use crate::client::{FetchError, TracesQuery};

/// Default time range index (1h) of the trace search.
pub const DEFAULT_RANGE: usize = 1;

/// Why the trace search line does not parse; each message names the term at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// A term that is neither `KEY=VALUE` nor `error`.
    #[error("`{0}`: expected KEY=VALUE or `error` (e.g. service=checkout min=250ms)")]
    NotKeyValue(String),
    /// `KEY=` or `=VALUE`.
    #[error("`{0}`: empty key or value")]
    EmptyKeyOrValue(String),
    /// `status=` with anything but `error`.
    #[error("`{0}`: only status=error is supported")]
    Status(String),
    /// `attr.=VALUE`.
    #[error("`{0}`: missing attribute key")]
    MissingAttributeKey(String),
    /// `min=` or `max=` with something that is not a duration.
    #[error("`{key}`: {error}")]
    Duration {
        /// The key as typed (`min`, `max_duration`, ...).
        key: String,
        /// Why the value is not a duration.
        error: lookout_config::DurationError,
    },
    /// `limit=` outside 1 to 10000.
    #[error("`limit`: expected 1 to 10000, got {0:?}")]
    Limit(String),
    /// An opening `"` without its closing one.
    #[error("unclosed double quote")]
    UnclosedQuote,
}

/// Parse the search line into query parameters of `GET /api/v1/traces`.
///
/// Terms are separated by spaces; values with spaces go in double quotes:
/// `service=checkout op="POST /pay" min=250ms max=2s error http.route=/cart limit=50`.
/// `KEY=VALUE` with a key that is not one of the search fields filters on a span
/// attribute (`attr.KEY=VALUE` says so explicitly).
pub fn parse_search(text: &str) -> Result<Vec<(String, String)>, SearchError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for term in split_terms(text)? {
        let lower = term.to_ascii_lowercase();
        if lower == "error" || lower == "errors" || lower == "status=error" {
            out.push(("status".into(), "error".into()));
            continue;
        }
        let Some((k, v)) = term.split_once('=') else {
            return Err(SearchError::NotKeyValue(term));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(SearchError::EmptyKeyOrValue(term));
        }
        let param = match k {
            "service" | "svc" => "service".to_string(),
            "operation" | "op" => "operation".to_string(),
            "min" | "min_duration" | "minduration" => "min_duration".to_string(),
            "max" | "max_duration" | "maxduration" => "max_duration".to_string(),
            "limit" => "limit".to_string(),
            "from" => "from".to_string(),
            "to" => "to".to_string(),
            "status" => return Err(SearchError::Status(term)),
            other => match other.strip_prefix("attr.") {
                Some("") => return Err(SearchError::MissingAttributeKey(term)),
                Some(k) => format!("attr.{k}"),
                None => format!("attr.{other}"),
            },
        };
        if param == "min_duration" || param == "max_duration" {
            lookout_config::parse_duration(v).map_err(|error| SearchError::Duration {
                key: k.to_string(),
                error,
            })?;
        }
        if param == "limit" && !matches!(v.parse::<u32>(), Ok(1..=10_000)) {
            return Err(SearchError::Limit(v.to_string()));
        }
        out.push((param, v.to_string()));
    }
    Ok(out)
}

fn split_terms(text: &str) -> Result<Vec<String>, SearchError> {
    let mut terms = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    terms.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(SearchError::UnclosedQuote);
    }
    if !cur.is_empty() {
        terms.push(cur);
    }
    Ok(terms)
}

/// One row of the waterfall, precomputed when the trace arrives so drawing is
/// proportional to the visible rows only.
#[derive(Debug, Clone, PartialEq)]
pub struct WaterfallRow {
    /// Index into `trace.spans`.
    pub span: usize,
    /// Tree depth.
    pub depth: u32,
    /// Index of the service in `Waterfall::services` (for colours).
    pub service: usize,
    /// Rows below this one in its subtree.
    pub descendants: usize,
}

/// An assembled trace ready to draw.
#[derive(Debug, Clone)]
pub struct Waterfall {
    /// The trace as the collector answered.
    pub trace: TraceResponse,
    /// One row per span, in the collector's depth-first order.
    pub rows: Vec<WaterfallRow>,
    /// Services in order of first appearance.
    pub services: Vec<String>,
    /// Rows hidden under a collapsed parent are skipped: indices into `rows` of the
    /// visible ones.
    pub visible: Vec<usize>,
    /// Collapsed rows (indices into `rows`).
    pub collapsed: Vec<bool>,
    /// Per row, the parts of the span on the critical path (ns from trace start).
    pub critical: Vec<Vec<(u64, u64)>>,
}

impl Waterfall {
    /// Precompute rows, service indices and subtree sizes.
    pub fn new(trace: TraceResponse) -> Waterfall {
        let mut services: Vec<String> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut rows = Vec::with_capacity(trace.spans.len());
        for (i, s) in trace.spans.iter().enumerate() {
            let svc = match index.get(s.service.as_str()) {
                Some(&n) => n,
                None => {
                    services.push(s.service.clone());
                    index.insert(s.service.as_str(), services.len() - 1);
                    services.len() - 1
                }
            };
            rows.push(WaterfallRow {
                span: i,
                depth: s.depth,
                service: svc,
                descendants: 0,
            });
        }
        // Subtree sizes from depth-first order: a row's subtree ends where a row at the
        // same or a lower depth starts.
        let mut stack: Vec<usize> = Vec::new();
        for i in 0..rows.len() {
            while let Some(&top) = stack.last() {
                if rows[top].depth >= rows[i].depth {
                    rows[top].descendants = i - top - 1;
                    stack.pop();
                } else {
                    break;
                }
            }
            stack.push(i);
        }
        for top in stack {
            rows[top].descendants = rows.len() - top - 1;
        }
        let n = rows.len();
        let mut critical = vec![Vec::new(); n];
        {
            let by_id: HashMap<&str, usize> = trace
                .spans
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span_id.as_str(), i))
                .collect();
            for seg in &trace.critical_path {
                if let Some(&i) = by_id.get(seg.span_id.as_str()) {
                    critical[i].push((seg.start_offset_ns, seg.end_offset_ns));
                }
            }
        }
        let mut w = Waterfall {
            trace,
            rows,
            services,
            visible: Vec::new(),
            collapsed: vec![false; n],
            critical,
        };
        w.recompute_visible();
        w
    }

    fn recompute_visible(&mut self) {
        self.visible.clear();
        let mut i = 0;
        while i < self.rows.len() {
            self.visible.push(i);
            i += if self.collapsed[i] {
                1 + self.rows[i].descendants
            } else {
                1
            };
        }
    }

    /// Collapse or expand the subtree under visible row `v`; returns the row's new
    /// visible index.
    pub fn toggle(&mut self, v: usize) -> usize {
        let Some(&row) = self.visible.get(v) else {
            return v;
        };
        if self.rows[row].descendants == 0 {
            return v;
        }
        self.collapsed[row] = !self.collapsed[row];
        self.recompute_visible();
        self.visible.iter().position(|&r| r == row).unwrap_or(0)
    }

    /// Rows (in depth-first order) whose span's service, operation, span id, status
    /// message, or an attribute key or value (of the span, its resource or its events)
    /// contains `text`, case-insensitively. Empty text matches nothing.
    pub fn find(&self, text: &str) -> Vec<usize> {
        let needle = text.trim().to_lowercase();
        if needle.is_empty() {
            return Vec::new();
        }
        let has = |s: &str| s.to_lowercase().contains(&needle);
        let in_map = |m: &serde_json::Map<String, serde_json::Value>| {
            m.iter().any(|(k, v)| {
                has(k)
                    || match v {
                        serde_json::Value::String(s) => has(s),
                        other => has(&other.to_string()),
                    }
            })
        };
        self.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                self.trace.spans.get(r.span).is_some_and(|s| {
                    has(&s.service)
                        || has(&s.operation)
                        || has(&s.span_id)
                        || has(&s.status_message)
                        || in_map(&s.attributes)
                        || in_map(&s.resource)
                        || s.events
                            .iter()
                            .any(|e| has(&e.name) || in_map(&e.attributes))
                })
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Unfold every collapsed row above `row` so that it shows; returns its visible index.
    pub fn reveal(&mut self, row: usize) -> Option<usize> {
        let mut changed = false;
        for c in 0..row.min(self.rows.len()) {
            if self.collapsed[c] && row <= c + self.rows[c].descendants {
                self.collapsed[c] = false;
                changed = true;
            }
        }
        if changed {
            self.recompute_visible();
        }
        self.visible.iter().position(|&r| r == row)
    }

    /// Visible index of the span with this id.
    pub fn find_span(&self, span_id: &str) -> Option<usize> {
        let row = self.trace.spans.iter().position(|s| s.span_id == span_id)?;
        self.visible.iter().position(|&r| r == row)
    }
}

/// A trace opened from the list, from a log line or by id.
#[derive(Debug, Default)]
pub struct OpenTrace {
    /// Trace id (hex).
    pub id: String,
    /// Sequence number of the latest request.
    pub seq: u64,
    /// Waiting for the first answer.
    pub loading: bool,
    /// The collector's error (e.g. trace not found).
    pub error: Option<String>,
    /// The trace, once loaded.
    pub waterfall: Option<Waterfall>,
    /// Selected visible row.
    pub sel: Selection,
    /// Span to select when the trace arrives (from a log line).
    pub focus_span: Option<String>,
    /// The span detail pane is open.
    pub detail: bool,
    /// Scroll of the detail pane, lines.
    pub detail_scroll: u16,
    /// Logs of the selected span, once fetched: span id and the result.
    pub span_logs: Option<(String, Result<Vec<LogEntry>, FetchError>)>,
    /// Sequence number of the span logs request.
    pub span_logs_seq: u64,
    /// Search inside the trace (`/`): the text.
    pub search: LineInput,
    /// The search line has the keyboard.
    pub searching: bool,
    /// Rows matching the search, in depth-first order.
    pub matches: Vec<usize>,
    /// The match the cursor went to last, an index into `matches`.
    pub current_match: usize,
    /// The selected span's JSON is shown in a popup, scrolled by this many lines.
    pub raw: Option<u16>,
}

impl OpenTrace {
    /// Run the search line: find the matching rows and go to the first one at or after
    /// the cursor. Returns what to tell the user.
    pub fn run_search(&mut self) -> String {
        let text = self.search.text().trim().to_string();
        let Some(w) = self.waterfall.as_ref() else {
            return "the trace has not arrived yet".into();
        };
        self.matches = w.find(&text);
        if text.is_empty() {
            return String::new();
        }
        if self.matches.is_empty() {
            return format!("no span matches {text:?}");
        }
        let here = w.visible.get(self.sel.selected()).copied().unwrap_or(0);
        self.current_match = self.matches.iter().position(|&r| r >= here).unwrap_or(0);
        self.go_to_match()
    }

    /// Go to the next (or previous) match, wrapping around. Returns what to tell the user.
    pub fn step_match(&mut self, forward: bool) -> String {
        let n = self.matches.len();
        if n == 0 {
            return if self.search.text().trim().is_empty() {
                "/ searches the trace".into()
            } else {
                format!("no span matches {:?}", self.search.text().trim())
            };
        }
        self.current_match = if forward {
            (self.current_match + 1) % n
        } else {
            (self.current_match + n - 1) % n
        };
        self.go_to_match()
    }

    /// Select the current match, unfolding what hides it.
    fn go_to_match(&mut self) -> String {
        let Some(&row) = self.matches.get(self.current_match) else {
            return String::new();
        };
        let Some(w) = self.waterfall.as_mut() else {
            return String::new();
        };
        if let Some(v) = w.reveal(row) {
            let n = w.visible.len();
            self.sel.select(v, n);
        }
        format!(
            "match {} of {} for {:?} (n next, N previous)",
            self.current_match + 1,
            self.matches.len(),
            self.search.text().trim()
        )
    }

    /// The selected span as the query API wrote it, pretty-printed.
    pub fn selected_json(&self) -> Option<String> {
        serde_json::to_string_pretty(self.selected_span()?).ok()
    }

    /// True when row `row` matches the search.
    pub fn is_match(&self, row: usize) -> bool {
        self.matches.binary_search(&row).is_ok()
    }

    /// Span id under the cursor.
    pub fn selected_span(&self) -> Option<&lookout_proto::api::SpanView> {
        let w = self.waterfall.as_ref()?;
        let row = *w.visible.get(self.sel.selected())?;
        w.trace.spans.get(row)
    }
}

/// State of the traces view.
#[derive(Debug)]
pub struct TracesState {
    /// The search line.
    pub input: LineInput,
    /// The search line has the keyboard.
    pub editing: bool,
    /// Index into [`RANGES`].
    pub range: usize,
    /// Latest answer to the search.
    pub list: Option<TracesResponse>,
    /// Sequence number of the search.
    pub seq: u64,
    /// A search is on its way.
    pub loading: bool,
    /// The search line does not parse, or the collector refused it.
    pub error: Option<String>,
    /// Selected trace in the list.
    pub sel: Selection,
    /// The trace shown as a waterfall (the list is hidden while one is open).
    pub open: Option<OpenTrace>,
}

impl Default for TracesState {
    fn default() -> Self {
        TracesState {
            input: LineInput::default(),
            editing: false,
            range: DEFAULT_RANGE,
            list: None,
            seq: 0,
            loading: false,
            error: None,
            sel: Selection::default(),
            open: None,
        }
    }
}

impl TracesState {
    /// The search as query parameters, or why the line does not parse.
    pub fn query(&self) -> Result<TracesQuery, SearchError> {
        let mut params = parse_search(self.input.text())?;
        if !params.iter().any(|(k, _)| k == "from") {
            if let Some(from) = RANGES[self.range.min(RANGES.len() - 1)].1 {
                params.push(("from".into(), from.into()));
            }
        }
        if !params.iter().any(|(k, _)| k == "limit") {
            params.push(("limit".into(), "200".into()));
        }
        Ok(TracesQuery { params })
    }

    /// Trace id under the cursor in the list.
    pub fn selected_id(&self) -> Option<String> {
        let l = self.list.as_ref()?;
        l.traces
            .get(self.sel.selected())
            .map(|t| t.trace_id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_become_query_parameters() {
        let p = parse_search(r#"service=checkout op="POST /pay" min=250ms max=2s error http.route=/cart attr.user=7 limit=50"#)
            .expect("parses");
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            p,
            [
                ("service", "checkout"),
                ("operation", "POST /pay"),
                ("min_duration", "250ms"),
                ("max_duration", "2s"),
                ("status", "error"),
                ("attr.http.route", "/cart"),
                ("attr.user", "7"),
                ("limit", "50"),
            ]
        );
        assert_eq!(parse_search("  ").expect("empty"), vec![]);
    }

    #[test]
    fn bad_search_terms_say_what_is_wrong() {
        for (text, needle) in [
            ("checkout", "expected KEY=VALUE"),
            ("min=fast", "`min`"),
            ("op=\"POST /pay", "unclosed double quote"),
            ("service=", "empty key or value"),
            ("status=ok", "only status=error"),
            ("limit=0", "`limit`"),
            ("attr.=x", "missing attribute key"),
        ] {
            let e = parse_search(text).expect_err(text);
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }
}
