//! `[[tail]]`: log files the agent tails.

use serde::Deserialize;

/// One `[[tail]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Glob patterns of the files to tail.
    pub paths: Vec<String>,
}

impl TailConfig {
    /// Check the values; keys in errors are relative to the entry.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.paths.is_empty() {
            return Err(("paths".into(), "at least one glob pattern is needed".into()));
        }
        Ok(())
    }
}
