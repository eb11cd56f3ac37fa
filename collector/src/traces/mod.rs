//! Distributed traces: assembly of stored spans into a tree, completeness tracking,
//! RED metrics and the service graph derived from spans at ingest.

pub mod assemble;
pub mod entry;
pub mod graph;
pub mod metrics;
pub mod red;
pub mod tracker;
