//! One exposition writer for every source of `/metrics` (self-metrics, RED, service
//! graph, OTLP metrics), in two formats:
//!
//! - the Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), the default;
//! - OpenMetrics 1.0 text (`application/openmetrics-text; version=1.0.0`), only when the
//!   scraper asks for it in `Accept`: counters are declared without `_total` in `# TYPE`,
//!   families carry `# UNIT` where known, counter samples and histogram buckets may carry
//!   an exemplar (`# {trace_id="..."} value timestamp`), and the exposition ends with
//!   `# EOF`.
//!
//! Sample names are the same in both formats (counters always end in `_total`), so a
//! Prometheus server stores the same series whichever format it negotiated. The writer
//! keeps the names it has written: a family whose name or sample names collide with an
//! earlier family is skipped whole (sources are written in a fixed order, so the
//! collector's own metrics win over OTLP metrics of the same name).

use std::collections::HashSet;
use std::fmt::Write as _;

/// Content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Longest exemplar label set OpenMetrics allows (names and values, in characters).
const MAX_EXEMPLAR_LABEL_CHARS: usize = 128;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// Pick the format from an `Accept` header: OpenMetrics when the client lists
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) with a quality at
    /// least that of the best text type (`text/plain`, `text/*`, `*/*`); ties go to the
    /// type listed first. Anything else (no header, `*/*`, protobuf only) is text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        // (q, -position) of the best candidate of each format.
        let mut best_om: Option<(f64, isize)> = None;
        let mut best_text: Option<(f64, isize)> = None;
        for (pos, range) in accept.split(',').enumerate() {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f64;
            let mut version: Option<String> = None;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
                match k.as_str() {
                    "q" => {
                        q = v
                            .parse::<f64>()
                            .ok()
                            .filter(|q| q.is_finite())
                            .unwrap_or(0.0)
                    }
                    "version" => version = Some(v.to_string()),
                    _ => {}
                }
            }
            if q <= 0.0 {
                continue;
            }
            let rank = (q, -(pos as isize));
            let slot = match media.as_str() {
                "application/openmetrics-text"
                    if version
                        .as_deref()
                        .is_none_or(|v| v == "1.0.0" || v == "0.0.1") =>
                {
                    &mut best_om
                }
                "text/plain" | "text/*" | "*/*" => &mut best_text,
                _ => continue,
            };
            if slot.is_none_or(|b| rank > b) {
                *slot = Some(rank);
            }
        }
        match (best_om, best_text) {
            (Some(om), Some(text)) if om > text => Format::OpenMetrics,
            (Some(_), None) => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter; samples are `{name}_total`.
    Counter,
    /// Gauge; samples are `{name}`.
    Gauge,
    /// Classic histogram: `{name}_bucket{le=...}`, `{name}_sum`, `{name}_count`.
    Histogram,
    /// Summary: `{name}{quantile=...}`, `{name}_sum`, `{name}_count`.
    Summary,
    /// Info (value 1): `{name}_info`; a gauge named `{name}_info` in the text format.
    Info,
    /// Untyped (`untyped` in text, `unknown` in OpenMetrics); samples are `{name}`.
    Unknown,
}

impl Kind {
    /// Suffixes of the sample names of a family of this kind.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total"],
            Kind::Gauge | Kind::Unknown => &[""],
            Kind::Histogram => &["_bucket", "_sum", "_count"],
            Kind::Summary => &["", "_sum", "_count"],
            Kind::Info => &["_info"],
        }
    }
}

/// An exemplar: the trace of one observation counted in a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// Span id, when known.
    pub span_id: Option<[u8; 8]>,
    /// Observed value (for counters, the increment).
    pub value: f64,
    /// When it was observed, Unix nanoseconds.
    pub timestamp_ns: Option<u64>,
}

/// Writes one exposition. Families are started with [`Exposition::family`], then their
/// samples are written with the method of their kind; labels are passed rendered
/// (`a="x",b="y"`, escaped, without braces; see [`push_labels`]).
pub struct Exposition {
    format: Format,
    out: String,
    /// Family names and sample names written so far.
    names: HashSet<String>,
    /// Name of the current family; `None` while a colliding family is being skipped.
    current: Option<String>,
    skipped: Vec<String>,
}

impl Exposition {
    /// An empty exposition in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            out: String::with_capacity(64 << 10),
            names: HashSet::new(),
            current: None,
            skipped: Vec::new(),
        }
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether exemplars are written (OpenMetrics only); sources can skip finding them.
    pub fn wants_exemplars(&self) -> bool {
        self.format == Format::OpenMetrics
    }

    /// Families skipped because their names collided with earlier ones.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Start a family. `name` is the family name: for counters without `_total`, for
    /// info metrics without `_info`. `unit` (may be empty) is written in OpenMetrics when
    /// it is the name's suffix. Returns `false` (and skips every sample until the next
    /// family) when the name or a sample name was already written.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str, unit: &str) -> bool {
        let collides = self.names.contains(name)
            || kind
                .suffixes()
                .iter()
                .any(|s| self.names.contains(&format!("{name}{s}")));
        if collides {
            self.current = None;
            self.skipped.push(name.to_string());
            return false;
        }
        self.names.insert(name.to_string());
        for s in kind.suffixes() {
            self.names.insert(format!("{name}{s}"));
        }
        let out = &mut self.out;
        match self.format {
            Format::Text => {
                let (suffix, ty) = match kind {
                    Kind::Counter => ("_total", "counter"),
                    Kind::Gauge => ("", "gauge"),
                    Kind::Histogram => ("", "histogram"),
                    Kind::Summary => ("", "summary"),
                    Kind::Info => ("_info", "gauge"),
                    Kind::Unknown => ("", "untyped"),
                };
                if !help.is_empty() {
                    let _ = write!(out, "# HELP {name}{suffix} ");
                    push_escaped(out, help, false);
                    out.push('\n');
                }
                let _ = writeln!(out, "# TYPE {name}{suffix} {ty}");
            }
            Format::OpenMetrics => {
                let ty = match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                    Kind::Summary => "summary",
                    Kind::Info => "info",
                    Kind::Unknown => "unknown",
                };
                let _ = writeln!(out, "# TYPE {name} {ty}");
                if !unit.is_empty()
                    && name.len() > unit.len()
                    && name.ends_with(unit)
                    && name[..name.len() - unit.len()].ends_with('_')
                {
                    let _ = writeln!(out, "# UNIT {name} {unit}");
                }
                if !help.is_empty() {
                    let _ = write!(out, "# HELP {name} ");
                    push_escaped(out, help, true);
                    out.push('\n');
                }
            }
        }
        self.current = Some(name.to_string());
        true
    }

    /// One sample line: `{family}{suffix}{labels[,extra]} value[ # exemplar]`.
    fn sample(
        &mut self,
        suffix: &str,
        labels: &str,
        extra: Option<(&str, f64)>,
        value: Value,
        exemplar: Option<&Exemplar>,
    ) {
        let Some(name) = self.current.as_deref() else {
            return;
        };
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        if !labels.is_empty() || extra.is_some() {
            out.push('{');
            out.push_str(labels);
            if let Some((k, v)) = extra {
                if !labels.is_empty() {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                push_f64(out, v);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        match value {
            Value::F(v) => push_f64(out, v),
            Value::U(v) => {
                let _ = write!(out, "{v}");
            }
        }
        if let (Some(e), Format::OpenMetrics) = (exemplar, self.format) {
            push_exemplar(out, e);
        }
        out.push('\n');
    }

    /// A counter sample (`{name}_total`), with an exemplar in OpenMetrics.
    pub fn counter(&mut self, labels: &str, value: f64, exemplar: Option<&Exemplar>) {
        self.sample("_total", labels, None, Value::F(value), exemplar);
    }

    /// A gauge (or untyped) sample.
    pub fn gauge(&mut self, labels: &str, value: f64) {
        self.sample("", labels, None, Value::F(value), None);
    }

    /// An info sample (`{name}_info ... 1`).
    pub fn info(&mut self, labels: &str) {
        self.sample("_info", labels, None, Value::U(1), None);
    }

    /// One histogram bucket: the count of observations `<= le` (cumulative).
    pub fn bucket(&mut self, labels: &str, le: f64, cumulative: u64, exemplar: Option<&Exemplar>) {
        let le = Some(("le", le));
        self.sample("_bucket", labels, le, Value::U(cumulative), exemplar);
    }

    /// One summary quantile.
    pub fn quantile(&mut self, labels: &str, quantile: f64, value: f64) {
        let quantile = Some(("quantile", quantile));
        self.sample("", labels, quantile, Value::F(value), None);
    }

    /// `{name}_sum` of a histogram or summary.
    pub fn sum(&mut self, labels: &str, sum: f64) {
        self.sample("_sum", labels, None, Value::F(sum), None);
    }

    /// `{name}_count` of a histogram or summary.
    pub fn count(&mut self, labels: &str, count: u64) {
        self.sample("_count", labels, None, Value::U(count), None);
    }

    /// A whole histogram: `bounds` are the finite upper bounds, ascending;
    /// `cumulative[i]` counts observations `<= bounds[i]`, and its last element (one more
    /// than `bounds`) is the `+Inf` bucket, which is also written as `_count`.
    /// `exemplar(i)` gives bucket `i`'s exemplar (asked only in OpenMetrics).
    pub fn histogram(
        &mut self,
        labels: &str,
        bounds: &[f64],
        cumulative: &[u64],
        sum: Option<f64>,
        exemplar: &dyn Fn(usize) -> Option<Exemplar>,
    ) {
        let want = self.wants_exemplars();
        let mut total = 0u64;
        for (i, c) in cumulative.iter().enumerate() {
            // Monotonic even if the source was not.
            total = total.max(*c);
            let le = bounds.get(i).copied().unwrap_or(f64::INFINITY);
            let ex = if want { exemplar(i) } else { None };
            self.bucket(labels, le, total, ex.as_ref());
            if le.is_infinite() {
                break;
            }
        }
        if cumulative.len() <= bounds.len() {
            // No +Inf bucket given.
            self.bucket(labels, f64::INFINITY, total, None);
        }
        if let Some(s) = sum {
            self.sum(labels, s);
        }
        self.count(labels, total);
    }

    /// The exposition, with `# EOF` in OpenMetrics.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

enum Value {
    F(f64),
    U(u64),
}

fn push_exemplar(out: &mut String, e: &Exemplar) {
    out.push_str(" # {trace_id=\"");
    push_hex(out, &e.trace_id);
    out.push('"');
    if let Some(span) = &e.span_id {
        // trace_id (8 + 32) and span_id (7 + 16) stay well under the limit.
        const { assert!(8 + 32 + 7 + 16 <= MAX_EXEMPLAR_LABEL_CHARS) };
        out.push_str(",span_id=\"");
        push_hex(out, span);
        out.push('"');
    }
    out.push_str("} ");
    push_f64(out, e.value);
    if let Some(ts) = e.timestamp_ns {
        let _ = write!(out, " {}.{:09}", ts / 1_000_000_000, ts % 1_000_000_000);
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Append a float as both formats expect: `+Inf`, `-Inf`, `NaN`, integers without a
/// fraction, and otherwise the shortest text that reads back to the same value
/// (exponent form for very large or small magnitudes).
pub fn push_f64(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        // Exact: |v| < 2^53.
        let _ = write!(out, "{}", v as i64);
    } else if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e21) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A float formatted by [`push_f64`].
pub fn fmt_f64(v: f64) -> String {
    let mut s = String::new();
    push_f64(&mut s, v);
    s
}

/// Append `v` escaped: `\` → `\\`, newline → `\n`, and `"` → `\"` when `quotes` (label
/// values in both formats; HELP text in OpenMetrics).
pub fn push_escaped(out: &mut String, v: &str, quotes: bool) {
    if !v.contains(['\\', '\n', '"']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Append rendered labels `k="v",...` (keys must already be valid label names; values
/// are escaped). Nothing for an empty list.
pub fn push_labels<K: AsRef<str>, V: AsRef<str>>(out: &mut String, labels: &[(K, V)]) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k.as_ref());
        out.push_str("=\"");
        push_escaped(out, v.as_ref(), true);
        out.push('"');
    }
}

/// Rendered labels, see [`push_labels`].
pub fn render_labels<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> String {
    let mut s = String::new();
    push_labels(&mut s, labels);
    s
}

/// `collector`, registered on `registry` (for structs of metrics built field by field).
pub fn registered<C>(registry: &prometheus::Registry, collector: C) -> Result<C, prometheus::Error>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

/// Render the prometheus crate's families (the collector's self-metrics) through `w`.
/// Counters named `..._total` keep their name; a counter without the suffix gets it.
pub fn write_prometheus_families(w: &mut Exposition, families: &[prometheus::proto::MetricFamily]) {
    use prometheus::proto::MetricType;
    let mut labels = String::new();
    for mf in families {
        let name = mf.name();
        let ty = mf.get_field_type();
        let (family, kind) = match ty {
            MetricType::COUNTER => (name.strip_suffix("_total").unwrap_or(name), Kind::Counter),
            MetricType::GAUGE => (name, Kind::Gauge),
            MetricType::HISTOGRAM => (name, Kind::Histogram),
            MetricType::SUMMARY => (name, Kind::Summary),
            MetricType::UNTYPED => (name, Kind::Unknown),
        };
        let unit = ["seconds", "bytes"]
            .into_iter()
            .find(|u| family.ends_with(&format!("_{u}")))
            .unwrap_or("");
        if !w.family(family, kind, mf.help(), unit) {
            continue;
        }
        for m in mf.get_metric() {
            labels.clear();
            let pairs: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            push_labels(&mut labels, &pairs);
            match ty {
                MetricType::COUNTER => w.counter(&labels, m.get_counter().value(), None),
                MetricType::GAUGE => w.gauge(&labels, m.get_gauge().value()),
                MetricType::UNTYPED => w.gauge(&labels, m.untyped.value()),
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    let mut bounds = Vec::with_capacity(h.get_bucket().len());
                    let mut cumulative = Vec::with_capacity(h.get_bucket().len() + 1);
                    for b in h.get_bucket() {
                        if b.upper_bound().is_finite() {
                            bounds.push(b.upper_bound());
                            cumulative.push(b.cumulative_count());
                        }
                    }
                    cumulative.push(h.get_sample_count());
                    w.histogram(
                        &labels,
                        &bounds,
                        &cumulative,
                        Some(h.get_sample_sum()),
                        &|_| None,
                    );
                }
                MetricType::SUMMARY => {
                    let s = m.get_summary();
                    for q in s.get_quantile() {
                        w.quantile(&labels, q.quantile(), q.value());
                    }
                    w.sum(&labels, s.sample_sum());
                    w.count(&labels, s.sample_count());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn negotiation() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        let prom3 = "application/openmetrics-text;version=1.0.0;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::negotiate(Some(prom3)), Format::OpenMetrics);
        for (accept, want) in [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text; version=\"1.0.0\", */*"),
                Format::OpenMetrics,
            ),
            (
                Some("text/plain, application/openmetrics-text"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (Some("application/vnd.google.protobuf"), Format::Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn floats() {
        for (v, s) in [
            (0.0, "0"),
            (-0.0, "0"),
            (3.0, "3"),
            (-7.0, "-7"),
            (0.005, "0.005"),
            (1.5, "1.5"),
            (1e-7, "1e-7"),
            (2.5e21, "2.5e21"),
            (1e15, "1000000000000000"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(fmt_f64(v), s);
            if v.is_finite() {
                assert_eq!(s.parse::<f64>().unwrap(), v);
            }
        }
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        push_labels(&mut s, &[("a", "x\"y\\z\nw"), ("b", "plain")]);
        assert_eq!(s, r#"a="x\"y\\z\nw",b="plain""#);
        let mut w = Exposition::new(Format::Text);
        w.family("g", Kind::Gauge, "say \"hi\"\\\nbye", "");
        let t = w.finish();
        assert!(t.starts_with("# HELP g say \"hi\"\\\\\\nbye\n"), "{t}");
        let mut w = Exposition::new(Format::OpenMetrics);
        w.family("g", Kind::Gauge, "say \"hi\"", "");
        let t = w.finish();
        assert!(t.contains("# HELP g say \\\"hi\\\"\n"), "{t}");
    }

    #[test]
    fn formats_and_duplicates() {
        let ex = Exemplar {
            trace_id: [0xab; 16],
            span_id: None,
            value: 0.25,
            timestamp_ns: Some(1_700_000_000_500_000_000),
        };
        let write = |format| {
            let mut w = Exposition::new(format);
            assert!(w.family("req_duration_seconds", Kind::Counter, "Time.", "seconds"));
            w.counter("a=\"1\"", 2.0, Some(&ex));
            assert!(w.family("lat_seconds", Kind::Histogram, "Latency.", "seconds"));
            w.histogram("", &[0.1, 1.0], &[1, 3, 4], Some(2.5), &|i| {
                (i == 1).then_some(ex)
            });
            // Collides with the counter's family name, then with a sample name.
            assert!(!w.family("req_duration_seconds", Kind::Gauge, "", ""));
            w.gauge("", 1.0);
            assert!(!w.family("lat_seconds_count", Kind::Gauge, "", ""));
            w.gauge("", 1.0);
            assert!(w.family("target", Kind::Info, "Target metadata.", ""));
            w.info("job=\"j\"");
            assert_eq!(w.skipped().len(), 2);
            w.finish()
        };
        let text = write(Format::Text);
        assert_eq!(
            text,
            "# HELP req_duration_seconds_total Time.\n\
             # TYPE req_duration_seconds_total counter\n\
             req_duration_seconds_total{a=\"1\"} 2\n\
             # HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"0.1\"} 1\n\
             lat_seconds_bucket{le=\"1\"} 3\n\
             lat_seconds_bucket{le=\"+Inf\"} 4\n\
             lat_seconds_sum 2.5\n\
             lat_seconds_count 4\n\
             # HELP target_info Target metadata.\n\
             # TYPE target_info gauge\n\
             target_info{job=\"j\"} 1\n"
        );
        let om = write(Format::OpenMetrics);
        let id = "ab".repeat(16);
        assert_eq!(
            om,
            format!(
                "# TYPE req_duration_seconds counter\n\
                 # UNIT req_duration_seconds seconds\n\
                 # HELP req_duration_seconds Time.\n\
                 req_duration_seconds_total{{a=\"1\"}} 2 # {{trace_id=\"{id}\"}} 0.25 1700000000.500000000\n\
                 # TYPE lat_seconds histogram\n\
                 # UNIT lat_seconds seconds\n\
                 # HELP lat_seconds Latency.\n\
                 lat_seconds_bucket{{le=\"0.1\"}} 1\n\
                 lat_seconds_bucket{{le=\"1\"}} 3 # {{trace_id=\"{id}\"}} 0.25 1700000000.500000000\n\
                 lat_seconds_bucket{{le=\"+Inf\"}} 4\n\
                 lat_seconds_sum 2.5\n\
                 lat_seconds_count 4\n\
                 # TYPE target info\n\
                 # HELP target Target metadata.\n\
                 target_info{{job=\"j\"}} 1\n\
                 # EOF\n"
            )
        );
    }

    #[test]
    fn self_metrics_render_in_both_formats() {
        let registry = prometheus::Registry::new();
        let receiver = lookout_ingest::ReceiverMetrics::register(&registry, "lookout").unwrap();
        receiver
            .accepted_items
            .with_label_values(&["logs", "grpc"])
            .inc_by(3);
        let wal = crate::wal::WalMetrics::register(&registry).unwrap();
        wal.fsync_seconds.observe(0.002);
        wal.bytes.set(10);
        let mut w = Exposition::new(Format::Text);
        crate::metrics::render(&registry, &mut w);
        let text = w.finish();
        assert!(text.contains(
            "# TYPE lookout_receiver_accepted_items_total counter\nlookout_receiver_accepted_items_total{signal=\"logs\",transport=\"grpc\"} 3\n"
        ), "{text}");
        assert!(text.contains("lookout_wal_fsync_duration_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(text.contains("lookout_wal_fsync_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        crate::prom::testing::promtool_check_metrics(&text, true);
        let mut w = Exposition::new(Format::OpenMetrics);
        crate::metrics::render(&registry, &mut w);
        let om = w.finish();
        assert!(
            om.contains("# TYPE lookout_receiver_accepted_items counter\n"),
            "{om}"
        );
        assert!(om.contains("# UNIT lookout_wal_fsync_duration_seconds seconds\n"));
        assert!(om.ends_with("# EOF\n"));
        crate::prom::testing::promtool_check_openmetrics(&om);
    }
}
