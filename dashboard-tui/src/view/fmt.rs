//! Formatting of figures, times and untrusted text for the terminal.

use ratatui::style::{Color, Modifier, Style};

/// A duration in nanoseconds as `870µs`, `12.3ms`, `1.25s`, `2m05s`.
pub fn duration_ns(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.0}µs", ns as f64 / 1e3)
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 1_000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.2}s", ms / 1e3)
    } else {
        let s = ns / 1_000_000_000;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
        }
    }
}

/// Whole seconds as the shortest of `45s`, `5m`, `2h`, `90s`.
pub fn secs(s: u64) -> String {
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Milliseconds as a duration.
pub fn ms(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return "-".into();
    }
    duration_ns((v * 1e6) as u64)
}

/// A rate per second.
pub fn rate(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1000.0 {
        format!("{:.1}k/s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}/s")
    } else {
        format!("{v:.2}/s")
    }
}

/// A figure in a few characters: `0`, `0.0123`, `1.23`, `12.3`, `123`, `1.23k`, `45.6M`,
/// `7.80G`, `1.2e-7`; `NaN`, `+Inf` and `-Inf` as such.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    for (scale, suffix) in [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if a >= scale {
            let x = v / scale;
            return if x.abs() >= 100.0 {
                format!("{x:.0}{suffix}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}{suffix}")
            } else {
                format!("{x:.2}{suffix}")
            };
        }
    }
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// A ratio in 0..1 as a percentage.
pub fn pct(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v == 0.0 {
        "0%".into()
    } else if v < 0.001 {
        "<0.1%".into()
    } else {
        format!("{:.1}%", v * 100.0)
    }
}

/// Unix nanoseconds as `HH:MM:SS.mmm` (UTC).
pub fn clock(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        day / 3600,
        (day % 3600) / 60,
        day % 60
    )
}

/// An integer with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Most characters of a body shown on one line of a list.
const LINE_MAX: usize = 1000;

/// Untrusted text on one line: at most `LINE_MAX` chars, newlines as `⏎`, tabs as a
/// space, other control characters (escape sequences included) as `�`.
pub fn one_line(s: &str) -> String {
    s.chars()
        .take(LINE_MAX)
        .map(|c| match c {
            '\n' => '⏎',
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Untrusted text for a pane: lines kept, tabs as spaces, other control characters as
/// `�`, at most `max` chars in all.
pub fn multi_line(s: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = 0;
    for line in s.split('\n') {
        let mut l = String::new();
        for c in line.chars() {
            n += 1;
            if n > max {
                l.push('…');
                out.push(l);
                return out;
            }
            l.push(match c {
                '\t' => ' ',
                c if c.is_control() => '\u{fffd}',
                c => c,
            });
        }
        out.push(l);
    }
    out
}

/// `text` word-wrapped into lines of at most `width` characters; a word longer than a
/// line is cut across lines.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_w = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        if cur_w > 0 && cur_w + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
            cur_w = 0;
        }
        while word.len() > width {
            if cur_w > 0 {
                lines.push(std::mem::take(&mut cur));
                cur_w = 0;
            }
            lines.push(word.drain(..width).collect());
        }
        if word.is_empty() {
            continue;
        }
        if cur_w > 0 {
            cur.push(' ');
            cur_w += 1;
        }
        cur_w += word.len();
        cur.extend(word);
    }
    if cur_w > 0 || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// A JSON attribute value as text: strings bare, everything else as JSON.
pub fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => one_line(s),
        other => one_line(&other.to_string()),
    }
}

/// A sparkline of `values` in one line of block characters.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let vals = &values[values.len().saturating_sub(width)..];
    let max = vals.iter().copied().fold(0.0_f64, f64::max);
    vals.iter()
        .map(|&v| {
            if max <= 0.0 || !v.is_finite() || v <= 0.0 {
                ' '
            } else {
                let i = ((v / max) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

/// Style of a severity.
pub fn severity_style(sev: &str) -> Style {
    match sev {
        "fatal" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "error" => Style::new().fg(Color::Red),
        "warn" => Style::new().fg(Color::Yellow),
        "info" => Style::new().fg(Color::Green),
        "debug" => Style::new().fg(Color::Blue),
        "trace" => Style::new().fg(Color::Magenta),
        _ => Style::new(),
    }
}

/// Colour of the `i`-th service of a trace; named ANSI colours only, so that light and
/// dark terminals both show them. Red is kept for errors.
pub fn service_color(i: usize) -> Color {
    const COLORS: [Color; 5] = [
        Color::Cyan,
        Color::Green,
        Color::Magenta,
        Color::Blue,
        Color::Yellow,
    ];
    COLORS[i % COLORS.len()]
}

/// Style of an alert state.
pub fn alert_style(state: &str) -> Style {
    match state {
        "firing" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "pending" => Style::new().fg(Color::Yellow),
        "resolved" => Style::new().fg(Color::Blue),
        _ => Style::new().fg(Color::Green),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_figures() {
        assert_eq!(duration_ns(999), "999ns");
        assert_eq!(duration_ns(87_400), "87µs");
        assert_eq!(duration_ns(1_234_000), "1.23ms");
        assert_eq!(duration_ns(245_000_000), "245ms");
        assert_eq!(duration_ns(1_250_000_000), "1.25s");
        assert_eq!(duration_ns(125 * 1_000_000_000), "2m05s");
        assert_eq!(duration_ns(u64::MAX), "5124095h34m");
        assert_eq!(ms(0.0), "-");
        assert_eq!(rate(1234.0), "1.2k/s");
        assert_eq!(rate(0.5), "0.50/s");
        assert_eq!(pct(0.0123), "1.2%");
        assert_eq!(pct(f64::NAN), "-");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(
            (secs(300), secs(7200), secs(90), secs(0)),
            ("5m".into(), "2h".into(), "90s".into(), "0s".into())
        );
        for (v, want) in [
            (0.0, "0"),
            (0.0123, "0.0123"),
            (0.5, "0.5"),
            (1.234, "1.23"),
            (12.34, "12.3"),
            (123.4, "123"),
            (1234.0, "1.23k"),
            (-45_600_000.0, "-45.6M"),
            (7.8e9, "7.80G"),
            (0.00000012, "1.2e-7"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(number(v), want, "{v}");
        }
        assert_eq!(clock(1_700_000_000_123_000_000), "22:13:20.123");
    }

    #[test]
    fn untrusted_text_cannot_move_the_cursor() {
        assert_eq!(
            one_line("a\nb\tc\u{1b}[2J\u{7}"),
            "a⏎b c\u{fffd}[2J\u{fffd}"
        );
        let long = "x".repeat(10_000_000);
        assert_eq!(one_line(&long).chars().count(), 1000);
        assert_eq!(multi_line("a\nb\u{1b}", 100), ["a", "b\u{fffd}"]);
        assert_eq!(multi_line("abcdef", 3), ["abc…"]);
    }

    #[test]
    fn wrap_breaks_at_words_and_cuts_long_ones() {
        assert_eq!(
            wrap("command: services, logs Q, traces S", 16),
            ["command:", "services, logs", "Q, traces S"]
        );
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij x", 4), ["abcd", "efgh", "ij x"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(sparkline(&[0.0, 1.0, 2.0, 4.0], 10), " ▃▅█");
        assert_eq!(sparkline(&[1.0, 2.0, 3.0], 2), "▆█");
        assert_eq!(sparkline(&[], 5), "");
    }
}
