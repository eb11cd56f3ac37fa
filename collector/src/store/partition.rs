//! Time-partitioned tantivy indexes: one index per partition of ingest time, so retention
//! removes whole directories and never rewrites anything.
//!
//! Each commit records, in tantivy's commit payload, the highest WAL sequence number it
//! covers and the event-time range of the partition; start-up reads them back to know where
//! WAL replay starts and which partitions a time range can skip.
//!
//! A partition's reader (a segment reader per segment: term-info stores, fast-field and
//! field-norm headers) is opened by the first search and closed again after
//! [`READER_IDLE`](super::writer::READER_IDLE) without one, so a week of retained partitions costs memory only while
//! queries reach them. Reader and writer share the partition's one `Index`, whose segment
//! inventory keeps a merge from deleting files an open searcher still reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tantivy::schema::Schema;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};

use super::writer::{PartitionStats, Partitions};
use lookout_ingest::fsutil;
use lookout_ingest::signal::Signal;

/// Errors of the partitioned index.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// tantivy failed.
    #[error("index error in {path}: {source}")]
    Tantivy {
        /// Partition directory.
        path: PathBuf,
        /// The error.
        source: tantivy::TantivyError,
    },
    /// A filesystem error.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A span block cannot be read.
    #[error("{0}")]
    Block(std::sync::Arc<lookout_spanstore::BlockError>),
    /// A partition on disk has a schema this build cannot read.
    #[error("partition {path} has an incompatible schema: {reason}")]
    Schema {
        /// Partition directory.
        path: PathBuf,
        /// The first difference found.
        reason: SchemaMismatch,
    },
}

/// How a partition's schema on disk differs from the one this build reads it with.
#[derive(Debug, thiserror::Error)]
pub enum SchemaMismatch {
    /// A field of this build is not on disk.
    #[error("field {id} ({name}) is missing")]
    Missing {
        /// Field number.
        id: u32,
        /// Its name here.
        name: String,
    },
    /// The field with this number has another name on disk.
    #[error("field {id} is {on_disk:?} on disk, {here:?} here")]
    Renamed {
        /// Field number.
        id: u32,
        /// Its name on disk.
        on_disk: String,
        /// Its name here.
        here: String,
    },
    /// The field holds another type of value on disk.
    #[error("field {name:?} holds {on_disk:?} on disk, {here:?} here")]
    Retyped {
        /// Field name.
        name: String,
        /// Value type on disk.
        on_disk: tantivy::schema::Type,
        /// Value type here.
        here: tantivy::schema::Type,
    },
}

/// What a commit records about its partition.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionMeta {
    /// Highest WAL sequence number committed into this partition.
    pub lsn: u64,
    /// Earliest event time in the partition (Unix ns); `u64::MAX` when empty.
    pub min_ts: u64,
    /// Latest event time in the partition (Unix ns).
    pub max_ts: u64,
}

impl PartitionMeta {
    fn empty() -> Self {
        Self {
            lsn: 0,
            min_ts: u64::MAX,
            max_ts: 0,
        }
    }
}

/// What a lookup over every partition found, and the partitions it could not read.
#[derive(Debug, Default)]
pub struct Lookup<T> {
    /// What the readable partitions hold.
    pub found: T,
    /// Partitions left out because they could not be opened.
    pub unreadable: Vec<PartitionError>,
}

impl<T> Lookup<T> {
    /// The same partitions' answer, transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Lookup<U> {
        Lookup {
            found: f(self.found),
            unreadable: self.unreadable,
        }
    }
}

/// One partition: an index and, while searched, its reader.
pub struct Partition {
    /// Start of the partition, Unix seconds of ingest time.
    pub start: i64,
    path: PathBuf,
    index: Index,
    /// The reader while open, reloaded after each commit, with the time of its last use.
    reader: Mutex<Option<(IndexReader, Instant)>>,
    meta: RwLock<PartitionMeta>,
    /// Documents in the last commit.
    docs: AtomicU64,
}

impl Partition {
    /// Committed metadata.
    pub fn meta(&self) -> PartitionMeta {
        *self.meta.read()
    }

    /// A searcher over the last commit, opening the reader if it is closed. A partition
    /// that cannot be opened (a damaged segment file) fails here, naming its directory;
    /// the others are unaffected.
    pub fn searcher(&self) -> Result<Searcher, PartitionError> {
        let mut slot = self.reader.lock();
        if let Some((reader, used)) = slot.as_mut() {
            *used = Instant::now();
            return Ok(reader.searcher());
        }
        let reader: IndexReader = self
            .index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|source| PartitionError::Tantivy {
                path: self.path.clone(),
                source,
            })?;
        let searcher = reader.searcher();
        *slot = Some((reader, Instant::now()));
        Ok(searcher)
    }

    /// Documents in the last commit, without opening the reader.
    pub fn num_docs(&self) -> u64 {
        self.docs.load(Ordering::Relaxed)
    }

    /// Whether the reader is open.
    pub fn reader_open(&self) -> bool {
        self.reader.lock().is_some()
    }

    /// Close the reader if no search used it for `idle`. Searchers handed out keep their
    /// segments open until dropped.
    fn close_idle_reader(&self, idle: Duration) -> bool {
        let mut slot = self.reader.lock();
        if slot
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() >= idle)
        {
            *slot = None;
            return true;
        }
        false
    }

    /// After a commit: reload an open reader (a closed one sees the commit when opened) and
    /// count the documents.
    fn committed(&self) -> tantivy::Result<()> {
        if let Some((reader, _)) = self.reader.lock().as_ref() {
            reader.reload()?;
        }
        let metas = self.index.load_metas()?;
        let docs = metas.segments.iter().map(|s| u64::from(s.num_docs())).sum();
        self.docs.store(docs, Ordering::Relaxed);
        Ok(())
    }
}

/// Memory and threads of the writers that [`Partitions::open_writer`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// Indexing memory of a writer, bytes.
    pub memory: usize,
    /// Indexing threads of a writer.
    pub threads: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            memory: 15_000_000,
            threads: 1,
        }
    }
}

/// A signal's partitions.
pub struct PartitionedIndex {
    /// Which signal this stores.
    pub signal: Signal,
    dir: PathBuf,
    schema: Schema,
    width_secs: i64,
    partitions: RwLock<BTreeMap<i64, Arc<Partition>>>,
    writer_options: WriterOptions,
}

impl PartitionedIndex {
    /// Open every partition under `dir`, creating `dir` if needed.
    pub fn open(
        dir: &Path,
        signal: Signal,
        schema: Schema,
        width_secs: i64,
    ) -> Result<Self, PartitionError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PartitionError::Io { path, source }
        };
        fsutil::create_dir_all(dir).map_err(io(dir))?;
        let mut partitions = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let Some(start) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let path = entry.path();
            if !path.join("meta.json").exists() {
                // Created but never committed: nothing in it.
                let _ = fs::remove_dir_all(&path);
                continue;
            }
            let p = open_partition(&path, start, schema.clone())?;
            partitions.insert(start, Arc::new(p));
        }
        Ok(Self {
            signal,
            dir: dir.to_path_buf(),
            schema,
            width_secs: width_secs.max(1),
            partitions: RwLock::new(partitions),
            writer_options: WriterOptions::default(),
        })
    }

    /// Open the partitions of a store handle: under `dir`, written with `writer`.
    pub fn open_shared(
        dir: &Path,
        signal: Signal,
        schema: Schema,
        width_secs: i64,
        writer: WriterOptions,
    ) -> Result<Arc<Self>, PartitionError> {
        let mut index = Self::open(dir, signal, schema, width_secs)?;
        index.writer_options = writer;
        Ok(Arc::new(index))
    }

    /// The schema of every partition.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Highest WAL sequence number committed in any partition.
    pub fn checkpoint(&self) -> u64 {
        self.partitions
            .read()
            .values()
            .map(|p| p.meta().lsn)
            .max()
            .unwrap_or(0)
    }

    /// Partition start for an ingest time in Unix seconds.
    pub fn key_for(&self, unix_secs: i64) -> i64 {
        unix_secs.div_euclid(self.width_secs) * self.width_secs
    }

    /// Partitions that may hold events in `[from_ns, to_ns]`, newest first.
    pub fn snapshot(&self, from_ns: u64, to_ns: u64) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .values()
            .rev()
            .filter(|p| {
                let m = p.meta();
                m.min_ts <= to_ns && m.max_ts >= from_ns
            })
            .cloned()
            .collect()
    }

    /// Every partition, newest first.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().rev().cloned().collect()
    }

    /// Searchers over every partition, newest first, leaving out those that cannot be
    /// opened: for lookups by id, which answer from the rest and report what they could
    /// not read rather than fail because of one damaged partition.
    pub fn readable(&self) -> Lookup<Vec<Searcher>> {
        let mut out = Lookup::<Vec<Searcher>>::default();
        for part in self.all() {
            match part.searcher() {
                Ok(s) => out.found.push(s),
                Err(e) => out.unreadable.push(e),
            }
        }
        out
    }

    /// Open (or create) the partition starting at `start` for writing.
    pub fn writer(
        &self,
        start: i64,
        memory: usize,
        threads: usize,
    ) -> Result<(Arc<Partition>, IndexWriter<TantivyDocument>), PartitionError> {
        let existing = self.partitions.read().get(&start).cloned();
        let part = match existing {
            Some(p) => p,
            None => {
                let path = self.dir.join(start.to_string());
                fsutil::create_dir_all(&path).map_err(|source| PartitionError::Io {
                    path: path.clone(),
                    source,
                })?;
                let p = Arc::new(open_partition(&path, start, self.schema.clone())?);
                self.partitions.write().insert(start, p.clone());
                p
            }
        };
        let writer = part
            .index
            .writer_with_num_threads(threads, memory)
            .map_err(|source| PartitionError::Tantivy {
                path: self.dir.join(start.to_string()),
                source,
            })?;
        if self.signal == Signal::Traces {
            // Span and trace indexes take many small commits and are read by term
            // lookups only: merging in wider tiers cuts the write cost (~8% more spans/s
            // measured) for a few more segments per lookup.
            let mut policy = tantivy::merge_policy::LogMergePolicy::default();
            policy.set_min_num_segments(16);
            writer.set_merge_policy(Box::new(policy));
        }
        Ok((part, writer))
    }

    /// Commit `writer` with `meta` and make the new documents searchable.
    pub fn commit(
        &self,
        part: &Partition,
        writer: &mut IndexWriter<TantivyDocument>,
        meta: PartitionMeta,
    ) -> Result<(), PartitionError> {
        let path = self.dir.join(part.start.to_string());
        let tv = |source| PartitionError::Tantivy {
            path: path.clone(),
            source,
        };
        let mut prepared = writer.prepare_commit().map_err(tv)?;
        prepared.set_payload(&serde_json::to_string(&meta).unwrap_or_default());
        prepared.commit().map_err(tv)?;
        *part.meta.write() = meta;
        part.committed().map_err(tv)?;
        Ok(())
    }

    /// Close the readers of partitions other than `keep` that no search used for `idle`;
    /// returns how many were closed.
    pub fn close_idle_readers(&self, idle: Duration, keep: Option<i64>) -> usize {
        self.all()
            .iter()
            .filter(|p| Some(p.start) != keep && p.close_idle_reader(idle))
            .count()
    }

    /// Partitions whose reader is open.
    pub fn open_readers(&self) -> usize {
        self.all().iter().filter(|p| p.reader_open()).count()
    }

    /// Remove partitions that ended before `cutoff_secs`, except `keep`.
    pub fn remove_older_than(&self, cutoff_secs: i64, keep: Option<i64>) -> usize {
        let doomed: Vec<i64> = self
            .partitions
            .read()
            .keys()
            .copied()
            .filter(|s| s.saturating_add(self.width_secs) <= cutoff_secs && Some(*s) != keep)
            .collect();
        for start in &doomed {
            self.partitions.write().remove(start);
            let path = self.dir.join(start.to_string());
            match fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(signal = %self.signal, partition = %path.display(), "removed partition past retention")
                }
                Err(e) => {
                    tracing::warn!(signal = %self.signal, partition = %path.display(), error = %e, "cannot remove partition")
                }
            }
        }
        doomed.len()
    }

    /// Committed documents and bytes on disk, over all partitions.
    pub fn stats(&self) -> (u64, u64) {
        let parts = self.all();
        let docs = parts.iter().map(|p| p.num_docs()).sum();
        let bytes = parts
            .iter()
            .map(|p| dir_size(&self.dir.join(p.start.to_string())))
            .sum();
        (docs, bytes)
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.partitions.read().len()
    }

    /// Whether there is no partition.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open writer of one partition, with what its next commit records.
pub struct TantivyWriter {
    /// The partition.
    pub part: Arc<Partition>,
    /// Its writer.
    pub writer: IndexWriter<TantivyDocument>,
    /// WAL position and event-time range, as of the documents added.
    pub meta: PartitionMeta,
}

impl Partitions for PartitionedIndex {
    type Writer = TantivyWriter;
    type Error = PartitionError;

    fn checkpoint(&self) -> u64 {
        PartitionedIndex::checkpoint(self)
    }

    fn key_for(&self, unix_secs: i64) -> i64 {
        PartitionedIndex::key_for(self, unix_secs)
    }

    fn open_writer(&self, key: i64) -> Result<TantivyWriter, PartitionError> {
        let o = self.writer_options;
        let (part, writer) = self.writer(key, o.memory, o.threads)?;
        let meta = meta_for_writing(&part);
        Ok(TantivyWriter { part, writer, meta })
    }

    fn commit(&self, w: &mut TantivyWriter, lsn: u64) -> Result<(), PartitionError> {
        w.meta.lsn = w.meta.lsn.max(lsn);
        PartitionedIndex::commit(self, &w.part, &mut w.writer, w.meta)
    }

    fn close_writer(&self, w: TantivyWriter) {
        if let Err(e) = w.writer.wait_merging_threads() {
            tracing::warn!(signal = %self.signal, error = %e, "index merge did not finish cleanly");
        }
    }

    fn remove_older_than(&self, cutoff_secs: i64, keep: Option<i64>) -> usize {
        PartitionedIndex::remove_older_than(self, cutoff_secs, keep)
    }

    fn close_idle_readers(&self, idle: Duration, keep: Option<i64>) {
        PartitionedIndex::close_idle_readers(self, idle, keep);
    }

    fn stats(&self) -> PartitionStats {
        let (docs, bytes) = PartitionedIndex::stats(self);
        PartitionStats {
            docs,
            bytes,
            partitions: self.len(),
            open_readers: self.open_readers(),
        }
    }
}

/// Start `meta` tracking for a writer that continues `part`.
pub fn meta_for_writing(part: &Partition) -> PartitionMeta {
    let m = part.meta();
    if m.lsn == 0 && m.max_ts == 0 {
        PartitionMeta::empty()
    } else {
        m
    }
}

fn open_partition(path: &Path, start: i64, schema: Schema) -> Result<Partition, PartitionError> {
    let tv = |source| PartitionError::Tantivy {
        path: path.to_path_buf(),
        source,
    };
    let dir =
        tantivy::directory::MmapDirectory::open(path).map_err(|e| PartitionError::Tantivy {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    // An existing partition keeps the schema it was written with: options may change
    // between versions (a field no longer indexed, say) as long as every field keeps its
    // number, name and value type.
    let index = if Index::exists(&dir).map_err(|e| tv(e.into()))? {
        let index = Index::open(dir).map_err(tv)?;
        compatible(&index.schema(), &schema).map_err(|reason| PartitionError::Schema {
            path: path.to_path_buf(),
            reason,
        })?;
        index
    } else {
        Index::create(dir, schema, tantivy::IndexSettings::default()).map_err(tv)?
    };
    let metas = index.load_metas().map_err(tv)?;
    let docs = metas.segments.iter().map(|s| u64::from(s.num_docs())).sum();
    let meta = metas
        .payload
        .and_then(|p| serde_json::from_str::<PartitionMeta>(&p).ok())
        .unwrap_or_else(PartitionMeta::empty);
    Ok(Partition {
        start,
        path: path.to_path_buf(),
        index,
        reader: Mutex::new(None),
        meta: RwLock::new(meta),
        docs: AtomicU64::new(docs),
    })
}

/// Whether an index written with `stored` can be read with the field handles of `current`:
/// every current field has the same number, name and value type there.
fn compatible(stored: &Schema, current: &Schema) -> Result<(), SchemaMismatch> {
    for (field, entry) in current.fields() {
        let id = field.field_id();
        let Some(old) = stored.fields().nth(id as usize).map(|(_, e)| e) else {
            return Err(SchemaMismatch::Missing {
                id,
                name: entry.name().to_string(),
            });
        };
        if old.name() != entry.name() {
            return Err(SchemaMismatch::Renamed {
                id,
                on_disk: old.name().to_string(),
                here: entry.name().to_string(),
            });
        }
        if old.field_type().value_type() != entry.field_type().value_type() {
            return Err(SchemaMismatch::Retyped {
                name: entry.name().to_string(),
                on_disk: old.field_type().value_type(),
                here: entry.field_type().value_type(),
            });
        }
    }
    Ok(())
}

fn dir_size(path: &Path) -> u64 {
    fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tantivy::schema::{FAST, INDEXED, STORED};

    use super::*;

    fn schema() -> Schema {
        let mut b = Schema::builder();
        b.add_u64_field("ts", INDEXED | FAST | STORED);
        b.build()
    }

    fn write(idx: &PartitionedIndex, start: i64, ts: u64, lsn: u64) {
        let (part, mut w) = idx.writer(start, 15_000_000, 1).unwrap();
        let f = idx.schema().get_field("ts").unwrap();
        let mut doc = TantivyDocument::default();
        doc.add_u64(f, ts);
        w.add_document(doc).unwrap();
        idx.commit(
            &part,
            &mut w,
            PartitionMeta {
                lsn,
                min_ts: ts,
                max_ts: ts,
            },
        )
        .unwrap();
    }

    #[test]
    fn retention_removes_whole_old_partitions_and_checkpoint_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        for (i, start) in [0i64, 3600, 7200].into_iter().enumerate() {
            write(&idx, start, 1_000 * (i as u64 + 1), 10 * (i as u64 + 1));
        }
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.checkpoint(), 30);
        // Only partitions that ended before the cutoff go; the one being written stays.
        assert_eq!(idx.remove_older_than(7200, None), 2);
        assert!(!dir.path().join("0").exists());
        assert!(!dir.path().join("3600").exists());
        assert!(dir.path().join("7200").exists());
        assert_eq!(idx.remove_older_than(1_000_000, Some(7200)), 0);
        drop(idx);
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.checkpoint(), 30);
        assert_eq!(idx.stats().0, 1);
    }

    #[test]
    fn partitions_written_with_other_field_options_still_open_but_other_fields_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        write(&idx, 0, 100, 1);
        drop(idx);
        // Same field, no longer indexed: opens, and keeps the data and checkpoint.
        let mut b = Schema::builder();
        b.add_u64_field("ts", FAST | STORED);
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, b.build(), 3600).unwrap();
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.checkpoint(), 1);
        assert_eq!(idx.stats().0, 1);
        drop(idx);
        // Another name for field 0: refused, naming the partition and the field.
        let mut b = Schema::builder();
        b.add_u64_field("time", FAST | STORED);
        let e = PartitionedIndex::open(dir.path(), Signal::Logs, b.build(), 3600)
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("incompatible schema"), "{msg}");
        assert!(msg.contains("\"ts\" on disk"), "{msg}");
        // Another value type: refused too.
        let mut b = Schema::builder();
        b.add_i64_field("ts", FAST | STORED);
        let e = PartitionedIndex::open(dir.path(), Signal::Logs, b.build(), 3600)
            .err()
            .unwrap();
        assert!(e.to_string().contains("holds"), "{e}");
    }

    #[test]
    fn readers_open_on_search_and_close_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        write(&idx, 0, 100, 1);
        write(&idx, 3600, 200, 2);
        assert_eq!(idx.open_readers(), 0, "writing opens no reader");
        assert_eq!(idx.stats().0, 2, "counts come from the commits");
        let parts = idx.all();
        assert_eq!(parts[1].searcher().unwrap().num_docs(), 1);
        assert_eq!(idx.open_readers(), 1);
        // Idle for less than the limit: stays open.
        assert_eq!(idx.close_idle_readers(Duration::from_secs(3600), None), 0);
        let held = parts[1].searcher().unwrap();
        assert_eq!(parts[0].searcher().unwrap().num_docs(), 1);
        // The partition being written is never closed; the other one is.
        assert_eq!(idx.close_idle_readers(Duration::ZERO, Some(3600)), 1);
        assert_eq!(idx.open_readers(), 1);
        assert!(!parts[1].reader_open());
        // A searcher handed out before the close still reads its segments.
        assert_eq!(held.num_docs(), 1);
        // A commit to a closed partition is seen when the reader opens again.
        write(&idx, 0, 150, 3);
        assert_eq!(parts[1].num_docs(), 2);
        assert_eq!(parts[1].searcher().unwrap().num_docs(), 2);
        // An open reader is reloaded by the commit.
        write(&idx, 3600, 250, 4);
        assert_eq!(parts[0].searcher().unwrap().num_docs(), 2);
        drop(idx);
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        assert_eq!(idx.open_readers(), 0, "start-up opens no reader");
        assert_eq!(idx.stats().0, 4);
    }

    #[test]
    fn a_damaged_partition_fails_its_searches_by_name_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        write(&idx, 0, 100, 1);
        write(&idx, 3600, 200, 2);
        drop(idx);
        for entry in fs::read_dir(dir.path().join("0")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "term") {
                fs::write(&path, b"").unwrap();
            }
        }
        // Start-up does not open readers, so it does not fail on the damage.
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        assert_eq!(idx.checkpoint(), 2);
        let parts = idx.all();
        let e = parts[1].searcher().err().unwrap().to_string();
        assert!(
            e.contains(&dir.path().join("0").display().to_string()),
            "{e}"
        );
        assert_eq!(parts[0].searcher().unwrap().num_docs(), 1);
        // Lookups over every partition read the others and report the damaged one.
        let r = idx.readable();
        assert_eq!(r.found.len(), 1);
        assert_eq!(r.unreadable.len(), 1);
    }

    #[test]
    fn snapshot_skips_partitions_outside_the_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let idx = PartitionedIndex::open(dir.path(), Signal::Logs, schema(), 3600).unwrap();
        write(&idx, 0, 100, 1);
        write(&idx, 3600, 200, 2);
        let starts = |from, to| {
            idx.snapshot(from, to)
                .iter()
                .map(|p| p.start)
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(0, u64::MAX), vec![3600, 0], "newest first");
        assert_eq!(starts(150, 250), vec![3600]);
        assert_eq!(starts(300, 400), Vec::<i64>::new());
    }
}
