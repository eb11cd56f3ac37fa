//! `/metrics` for Prometheus: the exposition writer shared by every source
//! ([`expo`]), the OpenTelemetry → Prometheus conversion rules ([`convert`]) and the store
//! of OTLP metrics received from services ([`store`]), fed from the WAL by its own thread
//! ([`window`]).

pub mod convert;
pub mod expo;
pub mod store;
pub mod window;

pub use expo::{Exemplar, Exposition, Format, Kind};
pub use store::{MetricStore, SeriesSnapshot, SeriesValue, StoreConfig, StoreMetrics};

/// Validation of expositions with `promtool`, shared by the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::io::Write;
    use std::process::{Command, Stdio};

    const PROMTOOL: &str = "/usr/bin/promtool";

    fn have_promtool() -> bool {
        let ok = std::path::Path::new(PROMTOOL).exists();
        if !ok {
            eprintln!(
                "skipping promtool validation: {PROMTOOL} is missing (apt-get install prometheus)"
            );
        }
        ok
    }

    /// `promtool check metrics` must parse `text`; with `lint`, its linter must find no
    /// problem either (OTLP names chosen by services, such as `_milliseconds` units, are
    /// lint problems but valid).
    pub(crate) fn promtool_check_metrics(text: &str, lint: bool) {
        if !have_promtool() {
            return;
        }
        let mut child = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        // Exit code 3: lint problems only; 1: the exposition did not parse.
        let parsed = o.status.success() || o.status.code() == Some(3);
        assert!(parsed, "promtool: {out}\n{text}");
        if lint {
            assert!(
                o.status.success() && out.trim().is_empty(),
                "promtool lint: {out}\n{text}"
            );
        }
    }

    /// Parse an OpenMetrics exposition with Prometheus' own OpenMetrics parser
    /// (`promtool tsdb create-blocks-from openmetrics`). That command needs a timestamp
    /// on every sample, so one is inserted before each sample's exemplar.
    pub(crate) fn promtool_check_openmetrics(om: &str) {
        if !have_promtool() {
            return;
        }
        let mut stamped = String::new();
        for line in om.lines() {
            if line.starts_with('#') {
                stamped.push_str(line);
            } else {
                match line.find(" # {") {
                    Some(i) => {
                        stamped.push_str(&line[..i]);
                        stamped.push_str(" 1700000000");
                        stamped.push_str(&line[i..]);
                    }
                    None => {
                        stamped.push_str(line);
                        stamped.push_str(" 1700000000");
                    }
                }
            }
            stamped.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.om");
        std::fs::write(&input, &stamped).unwrap();
        let o = Command::new(PROMTOOL)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(dir.path().join("blocks"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool rejected the OpenMetrics exposition: {}{}\n{stamped}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
