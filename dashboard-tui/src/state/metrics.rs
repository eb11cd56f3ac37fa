//! The metrics view: the collector's Prometheus exposition (`GET /metrics` on the API
//! port) scraped every refresh — the OTLP metrics received from services (`job` is their
//! `service.name`) and, on request, the collector's own `lookout_*` series — with a
//! bounded history per series for sparklines. Counters are kept as rates per second.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use super::input::LineInput;
use super::list::Selection;

/// Points of history kept per series (one per scrape).
pub const MAX_POINTS: usize = 120;

/// Most series kept; more are counted in [`MetricsState::not_kept`] and left out.
pub const MAX_SERIES: usize = 20_000;

/// Prefix of the collector's own series (self-metrics and span-derived RED series),
/// hidden unless asked for.
pub const SELF_PREFIX: &str = "lookout_";

/// One sample line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSample {
    /// Metric name, suffix included (`http_server_requests_total`).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Monotonic total: drawn as its rate per second between scrapes.
    Counter,
    /// A value as it is.
    Gauge,
}

/// A parsed exposition: samples with their kinds, and each family's help text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// Samples to keep (histogram buckets and `_created` lines are left out), with the
    /// kind the `# TYPE` lines give them.
    pub samples: Vec<(PromSample, SeriesKind)>,
    /// `# HELP` text per family.
    pub help: HashMap<String, String>,
}

/// Why a body is not a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a Prometheus text exposition: line {line}: {what}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

/// Parse a Prometheus text exposition (format 0.0.4, and the OpenMetrics text the same
/// way). Histogram buckets and `_created` series are left out: a histogram shows as its
/// `_count` and `_sum` rates.
pub fn parse_exposition(text: &str) -> Result<Exposition, ExpositionError> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut help: HashMap<String, String> = HashMap::new();
    let mut raw = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, char::is_whitespace);
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    types.insert(name.to_string(), kind.trim().to_string());
                }
                (Some("HELP"), Some(name), text) => {
                    help.insert(name.to_string(), text.unwrap_or("").trim().to_string());
                }
                _ => {}
            }
            continue;
        }
        let s = parse_sample(line).map_err(|what| ExpositionError { line: i + 1, what })?;
        raw.push(s);
    }
    let samples = raw
        .into_iter()
        .filter_map(|s| {
            let kind = kind_of(&s.name, &types)?;
            Some((s, kind))
        })
        .collect();
    Ok(Exposition { samples, help })
}

/// The kind of sample `name`, or `None` for lines that are not kept (buckets, `_created`).
fn kind_of(name: &str, types: &HashMap<String, String>) -> Option<SeriesKind> {
    if let Some(t) = types.get(name) {
        return Some(match t.as_str() {
            "counter" => SeriesKind::Counter,
            // A summary's quantile lines carry the family's own name.
            _ => SeriesKind::Gauge,
        });
    }
    for suffix in ["_total", "_count", "_sum", "_bucket", "_created"] {
        let Some(family) = name.strip_suffix(suffix) else {
            continue;
        };
        let t = types.get(family).map(String::as_str);
        return match (suffix, t) {
            ("_created", _) | ("_bucket", Some("histogram" | "gaugehistogram")) => None,
            ("_count" | "_sum", Some("histogram" | "summary")) => Some(SeriesKind::Counter),
            ("_total", _) | (_, Some("counter")) => Some(SeriesKind::Counter),
            _ => Some(SeriesKind::Gauge),
        };
    }
    Some(SeriesKind::Gauge)
}

/// One sample line: `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<PromSample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("`{}` is not a metric name", head(name)));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (l, tail) = parse_labels(after)?;
        labels = l;
        rest = tail;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("`{}` has no value", head(name)))?;
    let value = match value_text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("`{}` is not a number", head(v)))?,
    };
    Ok(PromSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels of a sample, in the order written.
type Labels = Vec<(String, String)>;

/// The labels after `{` up to the closing `}`, and what follows it.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("a label without `=`")?;
        let key = s[..eq].trim().to_string();
        let after = s[eq + 1..].trim_start();
        let mut chars = after.char_indices();
        if !matches!(chars.next(), Some((_, '"'))) {
            return Err(format!("label `{}` has no quoted value", head(&key)));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("label `{}` is not closed", head(&key)))?;
        labels.push((key, value));
        s = &after[end..];
    }
}

/// The start of a bad token, for an error message.
fn head(s: &str) -> String {
    s.chars().take(40).collect()
}

/// One series with its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name.
    pub name: String,
    /// Labels in the order the exposition wrote them.
    pub labels: Vec<(String, String)>,
    /// Drawn as a rate or as it is.
    pub kind: SeriesKind,
    /// The family's help text.
    pub help: String,
    /// Latest raw value, and when it was scraped.
    pub last: Option<(f64, Instant)>,
    /// Points, oldest first: rates per second for counters, values for gauges.
    pub points: VecDeque<f64>,
}

impl Series {
    /// `name{k="v",...}`, as the list shows and the filter matches it.
    pub fn id(&self) -> String {
        series_id(&self.name, &self.labels)
    }

    /// The newest point: the latest rate or value.
    pub fn latest(&self) -> Option<f64> {
        self.points.back().copied()
    }
}

fn series_id(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

/// The family a sample name belongs to, for its help text.
fn family(name: &str) -> &str {
    for suffix in ["_total", "_count", "_sum"] {
        if let Some(f) = name.strip_suffix(suffix) {
            return f;
        }
    }
    name
}

/// State of the metrics view.
#[derive(Debug, Default)]
pub struct MetricsState {
    /// Series by id, sorted.
    pub series: BTreeMap<String, Series>,
    /// The collector could not be scraped, or refused (shown under the filter).
    pub error: Option<String>,
    /// Text filter on series names and labels: every word must appear.
    pub filter: LineInput,
    /// The filter has the keyboard.
    pub editing: bool,
    /// Show the collector's own `lookout_*` series too.
    pub show_self: bool,
    /// Selected row of the filtered list.
    pub sel: Selection,
    /// Scrapes taken in.
    pub scrapes: u64,
    /// The view was opened: scraping goes on in the background so history builds up.
    pub active: bool,
    /// Series left out of the latest scrape because [`MAX_SERIES`] were kept.
    pub not_kept: usize,
}

impl MetricsState {
    /// Take in a scrape made at `at`: new points for every series, series gone from the
    /// exposition dropped, the cursor kept on its series.
    pub fn on_scrape(&mut self, exp: Exposition, at: Instant) {
        let keep = self.selected_id();
        let mut next: BTreeMap<String, Series> = BTreeMap::new();
        self.not_kept = 0;
        for (s, kind) in exp.samples {
            let id = series_id(&s.name, &s.labels);
            if next.contains_key(&id) {
                continue;
            }
            if next.len() >= MAX_SERIES {
                self.not_kept += 1;
                continue;
            }
            let mut series = self.series.remove(&id).unwrap_or_else(|| Series {
                help: exp.help.get(family(&s.name)).cloned().unwrap_or_default(),
                name: s.name.clone(),
                labels: s.labels.clone(),
                kind,
                last: None,
                points: VecDeque::new(),
            });
            let point = match (kind, series.last) {
                (SeriesKind::Gauge, _) => Some(s.value),
                (SeriesKind::Counter, Some((before, t0))) => {
                    let dt = at.saturating_duration_since(t0).as_secs_f64();
                    // A drop is a reset: everything since counts, as Prometheus' rate().
                    let inc = if s.value >= before {
                        s.value - before
                    } else {
                        s.value
                    };
                    (dt > 0.0).then(|| inc / dt)
                }
                (SeriesKind::Counter, None) => None,
            };
            if let Some(p) = point {
                series.points.push_back(p);
                while series.points.len() > MAX_POINTS {
                    series.points.pop_front();
                }
            }
            series.last = Some((s.value, at));
            next.insert(id, series);
        }
        self.series = next;
        self.scrapes += 1;
        self.error = None;
        let rows = self.rows();
        let idx = keep
            .and_then(|k| rows.iter().position(|s| s.id() == k))
            .unwrap_or(self.sel.selected());
        let n = rows.len();
        self.sel.select(idx, n);
    }

    /// Series after the self-metrics toggle and the text filter, sorted by id.
    pub fn rows(&self) -> Vec<&Series> {
        let words: Vec<String> = self
            .filter
            .text()
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        self.series
            .iter()
            .filter(|(_, s)| self.show_self || !s.name.starts_with(SELF_PREFIX))
            .filter(|(id, _)| {
                let id = id.to_lowercase();
                words.iter().all(|w| id.contains(w.as_str()))
            })
            .map(|(_, s)| s)
            .collect()
    }

    /// Series hidden because they are the collector's own.
    pub fn hidden_self(&self) -> usize {
        if self.show_self {
            return 0;
        }
        self.series
            .values()
            .filter(|s| s.name.starts_with(SELF_PREFIX))
            .count()
    }

    /// The series under the cursor.
    pub fn selected(&self) -> Option<&Series> {
        self.rows().get(self.sel.selected()).copied()
    }

    fn selected_id(&self) -> Option<String> {
        self.selected().map(Series::id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    const TEXT: &str = r#"# HELP http_server_requests_total Requests served.
# TYPE http_server_requests_total counter
http_server_requests_total{job="checkout",http_route="/pay"} 10
http_server_requests_total{job="checkout",http_route="/cart"} 5 1700000000000
# TYPE queue_depth gauge
queue_depth{job="worker",note="a \"quoted\"\nvalue, with } and ,"} 7.5
# TYPE req_duration_seconds histogram
req_duration_seconds_bucket{job="checkout",le="0.1"} 3
req_duration_seconds_bucket{job="checkout",le="+Inf"} 4
req_duration_seconds_sum{job="checkout"} 0.9
req_duration_seconds_count{job="checkout"} 4
# TYPE lookout_received_items counter
lookout_received_items_total{signal="logs"} 100
lookout_up 1
"#;

    #[test]
    fn an_exposition_parses_into_series_of_their_kind() {
        let e = parse_exposition(TEXT).unwrap();
        let got: Vec<(String, SeriesKind, f64)> = e
            .samples
            .iter()
            .map(|(s, k)| (series_id(&s.name, &s.labels), *k, s.value))
            .collect();
        use SeriesKind::*;
        assert_eq!(
            got,
            [
                (
                    r#"http_server_requests_total{job="checkout",http_route="/pay"}"#.into(),
                    Counter,
                    10.0
                ),
                (
                    r#"http_server_requests_total{job="checkout",http_route="/cart"}"#.into(),
                    Counter,
                    5.0
                ),
                (
                    "queue_depth{job=\"worker\",note=\"a \"quoted\"\nvalue, with } and ,\"}".into(),
                    Gauge,
                    7.5
                ),
                (
                    r#"req_duration_seconds_sum{job="checkout"}"#.into(),
                    Counter,
                    0.9
                ),
                (
                    r#"req_duration_seconds_count{job="checkout"}"#.into(),
                    Counter,
                    4.0
                ),
                (
                    r#"lookout_received_items_total{signal="logs"}"#.into(),
                    Counter,
                    100.0
                ),
                ("lookout_up".into(), Gauge, 1.0),
            ]
        );
        assert_eq!(e.help["http_server_requests_total"], "Requests served.");
    }

    #[test]
    fn what_is_not_an_exposition_says_where() {
        for (text, needle) in [
            (
                "<html><body>",
                "line 1: `<html><body>` is not a metric name",
            ),
            ("x{a=\"1\" 2", "line 1: a label without `=`"),
            ("ok 1\nx{a=1} 2", "line 2: label `a` has no quoted value"),
            ("x{a=\"1} 2", "label `a` is not closed"),
            ("x one", "`one` is not a number"),
        ] {
            let e = parse_exposition(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn counters_become_rates_gauges_stay_and_history_is_bounded() {
        let t0 = Instant::now();
        let mut m = MetricsState::default();
        let at = |v: f64, g: f64| Exposition {
            samples: vec![
                (
                    PromSample {
                        name: "jobs_total".into(),
                        labels: vec![("job".into(), "a".into())],
                        value: v,
                    },
                    SeriesKind::Counter,
                ),
                (
                    PromSample {
                        name: "depth".into(),
                        labels: vec![],
                        value: g,
                    },
                    SeriesKind::Gauge,
                ),
            ],
            help: HashMap::new(),
        };
        m.on_scrape(at(100.0, 3.0), t0);
        m.on_scrape(at(120.0, 4.0), t0 + Duration::from_secs(2));
        // A reset: 120 → 6 counts 6 over the next 2 s.
        m.on_scrape(at(6.0, 5.0), t0 + Duration::from_secs(4));
        let rows = m.rows();
        assert_eq!(rows[0].name, "depth");
        assert_eq!(Vec::from(rows[0].points.clone()), [3.0, 4.0, 5.0]);
        assert_eq!(Vec::from(rows[1].points.clone()), [10.0, 3.0]);
        for i in 0..(MAX_POINTS as u64 * 2) {
            m.on_scrape(at(6.0, 1.0), t0 + Duration::from_secs(6 + i));
        }
        assert_eq!(m.rows()[0].points.len(), MAX_POINTS);
        // A series gone from the exposition goes from the list.
        m.on_scrape(Exposition::default(), t0 + Duration::from_secs(1000));
        assert!(m.rows().is_empty());
    }

    #[test]
    fn the_filter_and_the_self_metrics_toggle_choose_the_rows_and_keep_the_cursor() {
        let mut m = MetricsState::default();
        m.on_scrape(parse_exposition(TEXT).unwrap(), Instant::now());
        let ids = |m: &MetricsState| m.rows().iter().map(|s| s.id()).collect::<Vec<_>>();
        assert_eq!(ids(&m).len(), 5, "lookout_* hidden: {:?}", ids(&m));
        assert_eq!(m.hidden_self(), 2);
        m.show_self = true;
        assert_eq!(ids(&m).len(), 7);
        m.filter.set("CHECKOUT route");
        assert_eq!(
            ids(&m),
            [
                r#"http_server_requests_total{job="checkout",http_route="/cart"}"#,
                r#"http_server_requests_total{job="checkout",http_route="/pay"}"#
            ]
        );
        m.sel.select(1, 2);
        m.on_scrape(parse_exposition(TEXT).unwrap(), Instant::now());
        assert_eq!(
            m.selected().map(Series::id).as_deref(),
            Some(r#"http_server_requests_total{job="checkout",http_route="/pay"}"#)
        );
    }
}
