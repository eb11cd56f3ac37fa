//! Prometheus metrics of the tailer (`lookout_agent_tail_*`).
//!
//! The `tail` label is the index of the `[[tail]]` entry (`"0"`, `"1"`, ...): never a
//! file path, so the label set stays bounded however many files are rotated.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and gauges of the log tailer, registered on a [`Registry`].
#[derive(Clone)]
pub struct TailMetrics {
    /// Lines read (before multi-line joining), by entry.
    pub(crate) lines: IntCounterVec,
    /// Bytes read from files, by entry.
    pub(crate) bytes: IntCounterVec,
    /// Records durably appended to the buffer, by entry.
    pub(crate) records: IntCounterVec,
    /// Records truncated to `max_line_length`, by entry.
    pub(crate) truncated: IntCounterVec,
    /// Lines of `format = "json"` entries that were not a JSON object, by entry.
    pub(crate) non_json: IntCounterVec,
    /// Files currently open, by entry.
    pub(crate) files: IntGaugeVec,
    /// Rotations seen, by entry and kind (`rename`, `truncate`, `delete`).
    pub(crate) rotations: IntCounterVec,
    /// Problems, by kind (`permission`, `open`, `read`, `binary`, `glob`, `sink`,
    /// `checkpoint`).
    pub(crate) errors: IntCounterVec,
}

impl TailMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        fn counter(
            r: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let files = IntGaugeVec::new(
            Opts::new(
                "lookout_agent_tail_files_watched",
                "Log files currently open by the tailer.",
            ),
            &["tail"],
        )?;
        registry.register(Box::new(files.clone()))?;
        Ok(Self {
            lines: counter(
                registry,
                "lookout_agent_tail_lines_read_total",
                "Lines read from tailed files.",
                &["tail"],
            )?,
            bytes: counter(
                registry,
                "lookout_agent_tail_bytes_read_total",
                "Bytes read from tailed files.",
                &["tail"],
            )?,
            records: counter(
                registry,
                "lookout_agent_tail_records_total",
                "Log records from tailed files stored in the disk buffer.",
                &["tail"],
            )?,
            truncated: counter(
                registry,
                "lookout_agent_tail_truncated_records_total",
                "Lines or multi-line records cut to max_line_length.",
                &["tail"],
            )?,
            non_json: counter(
                registry,
                "lookout_agent_tail_non_json_lines_total",
                "Records of format = \"json\" entries that were not a JSON object (kept as text).",
                &["tail"],
            )?,
            files,
            rotations: counter(
                registry,
                "lookout_agent_tail_rotations_total",
                "File rotations seen, by kind (rename, truncate, delete).",
                &["tail", "kind"],
            )?,
            errors: counter(
                registry,
                "lookout_agent_tail_errors_total",
                "Tailer problems, by kind (permission, open, read, binary, glob, sink, checkpoint).",
                &["kind"],
            )?,
        })
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }
}
