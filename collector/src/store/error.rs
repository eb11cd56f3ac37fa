//! Why a search failed.

use super::partition::PartitionError;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query text is invalid (400).
    #[error("invalid query: {0}")]
    BadQuery(String),
    /// The index failed (500).
    #[error("search failed: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// A partition could not be opened for searching (500).
    #[error("search failed: {0}")]
    Partition(#[from] PartitionError),
}
