//! A store handle: one index's partitions together with the schema they are written in.
//! [`super::LogStore`], [`super::TraceStore`] and the legacy span index
//! ([`super::legacy::LegacySpanStore`]) are handles of their schemas, each with its own
//! searches.

use std::path::Path;
use std::sync::Arc;

use lookout_ingest::Signal;

use super::partition::{PartitionError, PartitionedIndex, WriterOptions};

/// The field handles of one index's schema; `Default` builds them.
pub trait IndexSchema: Clone + Default {
    /// The signal the index holds.
    const SIGNAL: Signal;
    /// The schema.
    fn schema(&self) -> &tantivy::schema::Schema;
}

/// One index: its partitions and its schema. Cheap to clone.
#[derive(Clone)]
pub struct StoreHandle<F> {
    pub(super) index: Arc<PartitionedIndex>,
    pub(super) fields: F,
}

impl<F: IndexSchema> StoreHandle<F> {
    /// Open the partitions under `dir`, written with `writer`.
    pub fn open(
        dir: &Path,
        width_secs: i64,
        writer: WriterOptions,
    ) -> Result<Self, PartitionError> {
        let fields = F::default();
        let index = PartitionedIndex::open_shared(
            dir,
            F::SIGNAL,
            fields.schema().clone(),
            width_secs,
            writer,
        )?;
        Ok(Self { index, fields })
    }

    /// The partitions.
    pub fn index(&self) -> &Arc<PartitionedIndex> {
        &self.index
    }
}
