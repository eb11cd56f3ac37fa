//! `[[tail]]`: log files the agent tails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, HumanDuration};
use crate::Violation;

/// Smallest accepted `max_line_length`.
const MIN_LINE_LENGTH: u64 = 16;
/// Largest accepted `max_line_length` (memory per file is bounded by about twice it).
const MAX_LINE_LENGTH: u64 = 16 << 20;

/// One `[[tail]]` entry: a group of files read the same way and shipped with the same
/// resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Glob patterns of the files to tail, e.g. `/var/log/shop/*.log`. Include rotated
    /// names (`app.log*`) to also finish files rotated while the agent was stopped.
    pub paths: Vec<String>,
    /// Glob patterns of files to leave out even though `paths` matches them, e.g.
    /// `*.gz`.
    pub exclude: Vec<String>,
    /// `service.name` of the records (empty: leave it to the agent's base resource).
    pub service: String,
    /// Resource attributes of the records, added over the agent's base resource.
    pub attributes: BTreeMap<String, String>,
    /// Where files found at start-up without a checkpoint are read from: `end` or
    /// `beginning`. Files that appear later are always read from the beginning.
    pub start_at: String,
    /// `text` (one record per line) or `json` (each line is a JSON object whose
    /// message, severity, timestamp and trace/span ids are picked from common field
    /// names; the other fields become attributes).
    pub format: String,
    /// Multi-line records (stack traces).
    pub multiline: MultilineConfig,
    /// Longest line (or multi-line record); longer ones are truncated to it and counted.
    pub max_line_length: ByteSize,
    /// How often files are checked for new data and the globs are expanded again.
    pub poll_interval: HumanDuration,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            exclude: Vec::new(),
            service: String::new(),
            attributes: BTreeMap::new(),
            start_at: "end".to_string(),
            format: "text".to_string(),
            multiline: MultilineConfig::default(),
            max_line_length: ByteSize::kib(64),
            poll_interval: HumanDuration::from_millis(250),
        }
    }
}

/// `[tail.multiline]`: how lines are joined into records.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultilineConfig {
    /// Regular expression; a line matching it starts a new record and other lines are
    /// appended to the current one (empty: every line is a record).
    pub start_pattern: String,
    /// A pending record is shipped after this long without a new line.
    pub timeout: HumanDuration,
}

impl Default for MultilineConfig {
    fn default() -> Self {
        Self {
            start_pattern: String::new(),
            timeout: HumanDuration::from_secs(1),
        }
    }
}

impl TailConfig {
    /// Whether files found at start-up without a checkpoint are read from the beginning.
    pub fn starts_at_beginning(&self) -> bool {
        self.start_at == "beginning"
    }

    /// Whether lines are parsed as JSON objects.
    pub fn is_json(&self) -> bool {
        self.format == "json"
    }

    /// Check the values; keys in errors are relative to the entry.
    pub fn validate(&self) -> Result<(), Violation> {
        let err = |k: &str, r: String| Err(Violation::new(k, r));
        if self.paths.is_empty() {
            return err("paths", "at least one glob pattern is needed".into());
        }
        for (key, list) in [("paths", &self.paths), ("exclude", &self.exclude)] {
            for p in list {
                if p.is_empty() {
                    return err(key, "patterns must not be empty".into());
                }
                if let Err(e) = glob::Pattern::new(p) {
                    return err(key, format!("invalid glob pattern {p:?}: {e}"));
                }
            }
        }
        for k in self.attributes.keys() {
            if k.is_empty() {
                return err("attributes", "attribute keys must not be empty".into());
            }
        }
        if !matches!(self.start_at.as_str(), "end" | "beginning") {
            return err(
                "start_at",
                format!("expected \"end\" or \"beginning\", got {:?}", self.start_at),
            );
        }
        if !matches!(self.format.as_str(), "text" | "json") {
            return err(
                "format",
                format!("expected \"text\" or \"json\", got {:?}", self.format),
            );
        }
        if !self.multiline.start_pattern.is_empty() {
            if let Err(e) = regex::bytes::Regex::new(&self.multiline.start_pattern) {
                return err("multiline.start_pattern", e.to_string());
            }
        }
        if self.multiline.timeout.get().is_zero() {
            return err("multiline.timeout", "must be greater than 0".into());
        }
        let len = self.max_line_length.get();
        if !(MIN_LINE_LENGTH..=MAX_LINE_LENGTH).contains(&len) {
            return err(
                "max_line_length",
                format!(
                    "must be between {} and {}, got {}",
                    ByteSize(MIN_LINE_LENGTH),
                    ByteSize(MAX_LINE_LENGTH),
                    self.max_line_length
                ),
            );
        }
        if self.poll_interval.get().is_zero() {
            return err("poll_interval", "must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{parsed, refused};
    use crate::AgentConfig;

    #[test]
    fn empty_entry_is_defaults_plus_paths() {
        let c: AgentConfig = parsed("a.toml", "[[tail]]\npaths = [\"/var/log/*.log\"]\n");
        let want = TailConfig {
            paths: vec!["/var/log/*.log".into()],
            ..TailConfig::default()
        };
        assert_eq!(c.tail, vec![want]);
        assert!(!c.tail[0].starts_at_beginning());
        assert!(!c.tail[0].is_json());
    }

    /// The block documented for `config/examples/agent.toml`, uncommented.
    const DOCUMENTED: &str = r#"
[[tail]]
paths = ["/var/log/shop/*.log"]
exclude = []
service = ""
attributes = {}
start_at = "end"
format = "text"
max_line_length = "64KiB"
poll_interval = "250ms"
[tail.multiline]
start_pattern = ""
timeout = "1s"
"#;

    #[test]
    fn documented_block_is_the_defaults() {
        let c: AgentConfig = parsed("a.toml", DOCUMENTED);
        let want = TailConfig {
            paths: vec!["/var/log/shop/*.log".into()],
            ..TailConfig::default()
        };
        assert_eq!(c.tail, vec![want]);
    }

    #[test]
    fn every_key_parses() {
        let text = r#"
[[tail]]
paths = ["/var/log/a/*.log", "/var/log/b.log"]
exclude = ["*.gz"]
service = "shop"
attributes = { team = "payments" }
start_at = "beginning"
format = "json"
max_line_length = "1MiB"
poll_interval = "100ms"
[tail.multiline]
start_pattern = '^\d{4}-'
timeout = "2s"
"#;
        let c: AgentConfig = parsed("a.toml", text);
        let t = &c.tail[0];
        assert!(t.starts_at_beginning());
        assert!(t.is_json());
        assert_eq!(t.multiline.start_pattern, r"^\d{4}-");
        assert_eq!(t.multiline.timeout, HumanDuration::from_secs(2));
        assert_eq!(t.max_line_length, ByteSize::mib(1));
        assert_eq!(
            t.attributes.get("team").map(String::as_str),
            Some("payments")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (body, key, reason) in [
            ("paths = []", "tail[0].paths", "at least one"),
            ("paths = [\"/a/[\"]", "tail[0].paths", "invalid glob"),
            (
                "paths = [\"/a\"]\nexclude = [\"[\"]",
                "tail[0].exclude",
                "invalid glob",
            ),
            (
                "paths = [\"/a\"]\nstart_at = \"middle\"",
                "tail[0].start_at",
                "\"middle\"",
            ),
            (
                "paths = [\"/a\"]\nformat = \"xml\"",
                "tail[0].format",
                "\"xml\"",
            ),
            (
                "paths = [\"/a\"]\nmultiline = { start_pattern = \"(\" }",
                "tail[0].multiline.start_pattern",
                "unclosed group",
            ),
            (
                "paths = [\"/a\"]\nmultiline = { timeout = \"0s\" }",
                "tail[0].multiline.timeout",
                "greater than 0",
            ),
            (
                "paths = [\"/a\"]\npoll_interval = \"0s\"",
                "tail[0].poll_interval",
                "greater than 0",
            ),
            (
                "paths = [\"/a\"]\nmax_line_length = 8",
                "tail[0].max_line_length",
                "between",
            ),
            (
                "paths = [\"/a\"]\nfollow = true",
                "tail[0].follow",
                "unknown field",
            ),
        ] {
            let text = format!("[[tail]]\n{body}\n");
            let e = refused::<AgentConfig>("a.toml", &text);
            assert_eq!(e.key(), Some(key), "{text}: {e}");
            assert!(e.to_string().contains(reason), "{text}: {e}");
        }
    }
}
