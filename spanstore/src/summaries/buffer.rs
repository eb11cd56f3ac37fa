//! The in-memory side of a summary block: versions appended as the tracker writes them.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use super::{Summary, SummaryQuery};

/// Summaries collected for one block.
#[derive(Debug, Default)]
pub struct SummaryBuffer {
    pub(super) rows: Vec<Arc<Summary>>,
    /// Each trace's newest row.
    newest: HashMap<[u8; 16], u32, FxBuildHasher>,
    bytes: usize,
}

impl SummaryBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.bytes + self.newest.len() * 24
    }

    /// Add a version (shared with whoever keeps it for writing again); versions of a
    /// trace arrive in order, newest last.
    pub fn push(&mut self, s: Arc<Summary>) {
        self.bytes += s.memory_bytes();
        self.newest.insert(s.trace_id, self.rows.len() as u32);
        self.rows.push(s);
    }

    /// The newest version of `trace_id` held here.
    pub fn latest(&self, trace_id: &[u8; 16]) -> Option<&Summary> {
        self.newest
            .get(trace_id)
            .and_then(|&r| self.rows.get(r as usize))
            .map(|s| &**s)
    }

    /// Rows matching `q` that are their trace's newest here.
    pub fn search<'a>(&'a self, q: &'a SummaryQuery) -> impl Iterator<Item = &'a Summary> + 'a {
        self.rows.iter().enumerate().filter_map(move |(i, s)| {
            (s.matches(q) && self.newest.get(&s.trace_id) == Some(&(i as u32))).then_some(&**s)
        })
    }

    /// Services and `(service, operation)` pairs held.
    pub fn names(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.rows.iter().flat_map(|s| {
            s.services
                .iter()
                .map(|v| (v.as_str(), None))
                .chain(s.ops.iter().map(|(a, b)| (a.as_str(), Some(b.as_str()))))
        })
    }
}
