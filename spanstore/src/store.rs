//! Block partitions on disk and the head being filled, for any block schema ([`Schema`]):
//! spans ([`SpanStore`]) and trace summaries ([`crate::summaries::SummaryStore`]).
//!
//! ```text
//! <dir>/<partition start, Unix s>/<sequence, 20 digits>.blk
//! ```
//!
//! Partitions are keyed by ingest time, as every store of the collector is, so retention
//! removes whole directories. One writer at a time fills the *head*, an in-memory buffer;
//! [`BlockStore::cut`] encodes it into a block, writes it durably and makes it part of its
//! partition. Reads see the head, a head being cut, and the blocks, so what was written is
//! found at once, durable or not; what is not durable yet is still in the WAL, and the
//! checkpoint ([`BlockStore::checkpoint`]) only passes what blocks hold. Block sequence
//! numbers grow across partitions and restarts: a later block holds later writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lookout_proto::otlp::trace::v1::ResourceSpans;
use parking_lot::{Mutex, RwLock};

use crate::block::{write_durably, BlockError, Footer, Source};
use crate::spans::{SpanBlock, SpanBuffer, StoredSpan};

/// File name extension of blocks.
const BLOCK_EXT: &str = "blk";

/// What a block store needs of a schema: its in-memory buffer and its open blocks.
pub trait Schema: 'static {
    /// Names the schema's blocks in logs ("span", "summary").
    const NAME: &'static str;
    /// Rows collected for the next block.
    type Buffer: Default + std::fmt::Debug + Send + Sync;
    /// An open block (its footer and what lookups keep in memory).
    type Block: std::fmt::Debug + Send + Sync;
    /// Rows and approximate memory of `buf`.
    fn buffer_size(buf: &Self::Buffer) -> HeadStats;
    /// `buf` as a block file covering the WAL through `lsn` that replaces the blocks
    /// `replaces` (compaction; empty for a cut); `None` when it is empty.
    fn encode(buf: &Self::Buffer, lsn: u64, replaces: &[u64]) -> std::io::Result<Option<Vec<u8>>>;
    /// Add every row of `block` (read from `src`) to `buf`.
    fn merge_into<S: Source + ?Sized>(
        buf: &mut Self::Buffer,
        src: &S,
        block: &Self::Block,
    ) -> Result<(), BlockError>;
    /// Open the block in `src`, named `path` in errors.
    fn read<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Self::Block, BlockError>;
    /// The block's footer.
    fn footer(block: &Self::Block) -> &Footer;
}

/// Sequence numbers of the blocks that the blocks in `files` say they replace.
fn replaced_in(files: &[(u64, PathBuf)]) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for (_, path) in files {
        let read = std::fs::File::open(path)
            .map_err(|e| BlockError::new(path, e))
            .and_then(|f| {
                let footer = crate::block::read_footer(&f, path)?;
                crate::block::replaced(&f, path, &footer)
            });
        // A block that cannot be read replaces nothing; it is named when opened.
        if let Ok(seqs) = read {
            out.extend(seqs);
        }
    }
    out
}

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The partition.
    pub key: i64,
    /// Blocks merged.
    pub blocks: usize,
    /// Rows in them.
    pub rows: u64,
    /// Bytes before and after.
    pub bytes_before: u64,
    /// Bytes of the new block.
    pub bytes_after: u64,
}

/// The span schema.
#[derive(Debug)]
pub struct Spans;

impl Schema for Spans {
    const NAME: &'static str = "span";
    type Buffer = SpanBuffer;
    type Block = SpanBlock;
    fn buffer_size(buf: &SpanBuffer) -> HeadStats {
        let s = buf.stats();
        HeadStats {
            rows: s.rows,
            bytes: s.bytes,
        }
    }
    fn encode(buf: &SpanBuffer, lsn: u64, replaces: &[u64]) -> std::io::Result<Option<Vec<u8>>> {
        buf.finish_replacing(lsn, replaces)
    }
    fn merge_into<S: Source + ?Sized>(
        buf: &mut SpanBuffer,
        src: &S,
        block: &SpanBlock,
    ) -> Result<(), BlockError> {
        buf.push_stored(&block.all(src)?);
        Ok(())
    }
    fn read<S: Source + ?Sized>(src: &S, path: &Path) -> Result<SpanBlock, BlockError> {
        SpanBlock::read(src, path)
    }
    fn footer(block: &SpanBlock) -> &Footer {
        block.footer()
    }
}

/// One block of a partition.
#[derive(Debug)]
pub struct BlockFile<K: Schema> {
    /// The open block.
    pub block: K::Block,
    /// Its file.
    pub path: PathBuf,
    /// Its sequence number (later blocks hold later writes).
    pub seq: u64,
    /// Its size on disk.
    pub bytes: u64,
}

impl<K: Schema> BlockFile<K> {
    /// The block's footer.
    pub fn footer(&self) -> &Footer {
        K::footer(&self.block)
    }

    /// Open the file for reading the block's chunks.
    pub fn file(&self) -> Result<std::fs::File, BlockError> {
        std::fs::File::open(&self.path).map_err(|e| BlockError::new(&self.path, e))
    }
}

/// One partition: its blocks, and those that could not be opened.
#[derive(Debug)]
struct Partition<K: Schema> {
    blocks: Vec<Arc<BlockFile<K>>>,
    unreadable: Vec<Arc<BlockError>>,
}

impl<K: Schema> Default for Partition<K> {
    fn default() -> Self {
        Self {
            blocks: Vec::new(),
            unreadable: Vec::new(),
        }
    }
}

/// The buffer being filled and the partition it belongs to.
#[derive(Debug)]
struct Head<B> {
    key: i64,
    buf: B,
}

/// The head, and a head being cut.
type Heads<B> = (Option<Head<B>>, Option<Arc<B>>);

/// Rows and memory of a head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadStats {
    /// Rows.
    pub rows: usize,
    /// Approximate heap bytes.
    pub bytes: usize,
}

/// What the store holds, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Rows in blocks.
    pub rows: u64,
    /// Bytes of blocks on disk.
    pub bytes: u64,
    /// Blocks.
    pub blocks: usize,
    /// Partitions.
    pub partitions: usize,
    /// Blocks that could not be opened.
    pub unreadable: usize,
    /// Rows in the head (not in a block yet).
    pub head_rows: u64,
    /// Memory the head holds.
    pub head_bytes: u64,
}

/// A consistent view of a store: its blocks (by sequence number), the blocks that could not
/// be opened, and what a reader took from the heads at the same moment.
#[derive(Debug)]
pub struct Snapshot<K: Schema, R> {
    /// Every readable block, oldest first.
    pub blocks: Vec<Arc<BlockFile<K>>>,
    /// Blocks that could not be opened.
    pub unreadable: Vec<Arc<BlockError>>,
    /// What the reader took from the heads.
    pub memory: R,
}

/// The spans of a trace, and the blocks that could not be read for it.
#[derive(Debug, Default)]
pub struct TraceLookup {
    /// Every span found, blocks first (oldest first), then the head.
    pub spans: Vec<StoredSpan>,
    /// Blocks that may hold spans of the trace but could not be read.
    pub unreadable: Vec<Arc<BlockError>>,
}

/// Blocks of one schema in partitions, and the head; see the module documentation.
#[derive(Debug)]
pub struct BlockStore<K: Schema> {
    dir: PathBuf,
    width_secs: i64,
    partitions: RwLock<BTreeMap<i64, Partition<K>>>,
    /// The head, and a head being cut (readable until its block is in place).
    head: RwLock<Heads<K::Buffer>>,
    /// Sequence number of the next block.
    next_seq: Mutex<u64>,
    /// Blocks compaction replaced, deleted once no reader holds them.
    doomed: Mutex<Vec<Arc<BlockFile<K>>>>,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

/// The span store.
pub type SpanStore = BlockStore<Spans>;

impl<K: Schema> BlockStore<K> {
    /// Open the store in `dir` (created if missing), partitions `width_secs` wide. Blocks
    /// that cannot be opened are kept, named in lookups and in [`Self::unreadable`];
    /// leftovers of an interrupted write are removed.
    pub fn open(dir: &Path, width_secs: i64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut partitions = BTreeMap::new();
        let mut next_seq = 1;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let mut part = Partition::default();
            let mut files: Vec<(u64, PathBuf)> = Vec::new();
            for f in std::fs::read_dir(entry.path())? {
                let path = f?.path();
                match path.extension().and_then(|e| e.to_str()) {
                    Some(BLOCK_EXT) => {
                        let seq = path
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        files.push((seq, path));
                    }
                    Some("tmp") => {
                        // A block whose write did not finish: its rows are still in the WAL.
                        tracing::info!(file = %path.display(), "removing an unfinished block");
                        std::fs::remove_file(&path)?;
                    }
                    _ => {}
                }
            }
            files.sort();
            let replaced = replaced_in(&files);
            for (seq, path) in files {
                if replaced.contains(&seq) {
                    // A compaction finished writing the block that holds these rows.
                    tracing::info!(file = %path.display(), "removing a block replaced by compaction");
                    std::fs::remove_file(&path)?;
                    continue;
                }
                next_seq = next_seq.max(seq + 1);
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let read = std::fs::File::open(&path)
                    .map_err(|e| BlockError::new(&path, e))
                    .and_then(|f| K::read(&f, &path));
                match read {
                    Ok(block) => part.blocks.push(Arc::new(BlockFile {
                        block,
                        path,
                        seq,
                        bytes,
                    })),
                    Err(e) => {
                        tracing::error!(error = %e, schema = K::NAME, "a block cannot be read; reads name it and answer from the rest");
                        part.unreadable.push(Arc::new(e));
                    }
                }
            }
            partitions.insert(key, part);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            width_secs: width_secs.max(1),
            partitions: RwLock::new(partitions),
            head: RwLock::new((None, None)),
            next_seq: Mutex::new(next_seq),
            doomed: Mutex::new(Vec::new()),
            compacting: Mutex::new(()),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start of the partition that holds ingest time `unix_secs`.
    pub fn key_for(&self, unix_secs: i64) -> i64 {
        unix_secs.div_euclid(self.width_secs) * self.width_secs
    }

    /// Highest WAL sequence number that blocks hold.
    pub fn checkpoint(&self) -> u64 {
        self.partitions
            .read()
            .values()
            .flat_map(|p| &p.blocks)
            .map(|b| b.footer().lsn)
            .max()
            .unwrap_or(0)
    }

    /// Start filling a head for partition `key`, dropping any head there was.
    pub fn start_head(&self, key: i64) {
        self.head.write().0 = Some(Head {
            key,
            buf: K::Buffer::default(),
        });
    }

    /// Drop the head and what it holds (its writer failed; its rows will be written again
    /// from the WAL).
    pub fn discard_head(&self) {
        self.head.write().0 = None;
    }

    /// Add to the head with `f`; `None` when there is no head.
    pub fn with_head<R>(&self, f: impl FnOnce(&mut K::Buffer) -> R) -> Option<R> {
        self.head.write().0.as_mut().map(|h| f(&mut h.buf))
    }

    /// What the head holds.
    pub fn head_stats(&self) -> Option<HeadStats> {
        self.head.read().0.as_ref().map(|h| K::buffer_size(&h.buf))
    }

    /// Cut the head into a block covering the WAL through `lsn`, write it durably and add
    /// it to its partition; the head starts empty again. Nothing is written when the head
    /// is empty. On failure the head's rows are dropped (the caller writes them again
    /// from the WAL).
    pub fn cut(&self, lsn: u64) -> Result<Option<PathBuf>, BlockError> {
        let (key, buf) = {
            let mut guard = self.head.write();
            let (head, sealed) = &mut *guard;
            let Some(h) = head.as_mut() else {
                return Ok(None);
            };
            if K::buffer_size(&h.buf).rows == 0 {
                return Ok(None);
            }
            let buf = Arc::new(std::mem::take(&mut h.buf));
            *sealed = Some(buf.clone());
            (h.key, buf)
        };
        let written = self.write_block(key, &buf, lsn, &[]);
        // The block (if any) and the end of the sealed head become visible together.
        let mut parts = self.partitions.write();
        let mut head = self.head.write();
        head.1 = None;
        let file = written?;
        let path = file.path.clone();
        parts.entry(key).or_default().blocks.push(Arc::new(file));
        Ok(Some(path))
    }

    fn write_block(
        &self,
        key: i64,
        buf: &K::Buffer,
        lsn: u64,
        replaces: &[u64],
    ) -> Result<BlockFile<K>, BlockError> {
        let seq = {
            let mut next = self.next_seq.lock();
            let seq = *next;
            *next += 1;
            seq
        };
        let dir = self.dir.join(key.to_string());
        let path = dir.join(format!("{seq:020}.{BLOCK_EXT}"));
        let io = |e: std::io::Error| BlockError::new(&path, e);
        let bytes = K::encode(buf, lsn, replaces)
            .map_err(io)?
            .unwrap_or_default();
        std::fs::create_dir_all(&dir).map_err(io)?;
        write_durably(&path, &bytes).map_err(io)?;
        let block = K::read(bytes.as_slice(), &path)?;
        Ok(BlockFile {
            block,
            path,
            seq,
            bytes: bytes.len() as u64,
        })
    }

    /// The blocks and, at the same moment, what `in_memory` takes from the heads (a head
    /// being cut first, then the head). Taken under both locks in the order `cut` takes
    /// them: rows of a cut finishing meanwhile are either in a head or in a block, never in
    /// neither nor both.
    pub fn snapshot<R>(&self, in_memory: impl FnOnce(&[&K::Buffer]) -> R) -> Snapshot<K, R> {
        let parts = self.partitions.read();
        let head = self.head.read();
        let bufs: Vec<&K::Buffer> = head
            .1
            .iter()
            .map(|b| b.as_ref())
            .chain(head.0.as_ref().map(|h| &h.buf))
            .collect();
        let memory = in_memory(&bufs);
        let mut blocks: Vec<Arc<BlockFile<K>>> =
            parts.values().flat_map(|p| &p.blocks).cloned().collect();
        blocks.sort_by_key(|b| b.seq);
        Snapshot {
            blocks,
            unreadable: parts
                .values()
                .flat_map(|p| &p.unreadable)
                .cloned()
                .collect(),
            memory,
        }
    }

    /// Merge one run of small blocks of a partition (each under half of `target_rows`,
    /// together at most `target_rows`, oldest first) into one block sorted like any other.
    /// The new block names the blocks it replaces, so that a crash before they are deleted
    /// leaves no row twice; readers holding a replaced block keep reading it until they
    /// let it go. `None` when no partition has two such blocks in a row.
    pub fn compact_once(&self, target_rows: u64) -> Result<Option<Compacted>, BlockError> {
        let _one = self.compacting.lock();
        self.sweep();
        let Some((key, group)) = self.pick(target_rows) else {
            return Ok(None);
        };
        let mut buf = K::Buffer::default();
        let mut lsn = 0;
        for b in &group {
            K::merge_into(&mut buf, &b.file()?, &b.block)?;
            lsn = lsn.max(b.footer().lsn);
        }
        let seqs: Vec<u64> = group.iter().map(|b| b.seq).collect();
        let file = self.write_block(key, &buf, lsn, &seqs)?;
        drop(buf);
        let done = Compacted {
            key,
            blocks: group.len(),
            rows: group.iter().map(|b| b.footer().rows).sum(),
            bytes_before: group.iter().map(|b| b.bytes).sum(),
            bytes_after: file.bytes,
        };
        let mut parts = self.partitions.write();
        let Some(part) = parts.get_mut(&key) else {
            // Retention removed the partition meanwhile.
            drop(parts);
            let _ = std::fs::remove_file(&file.path);
            return Ok(None);
        };
        part.blocks.retain(|b| !seqs.contains(&b.seq));
        part.blocks.push(Arc::new(file));
        drop(parts);
        self.doomed.lock().extend(group);
        self.sweep();
        Ok(Some(done))
    }

    /// The oldest partition's first run of at least two small blocks.
    fn pick(&self, target_rows: u64) -> Option<(i64, Vec<Arc<BlockFile<K>>>)> {
        let parts = self.partitions.read();
        for (key, p) in parts.iter() {
            let mut blocks: Vec<&Arc<BlockFile<K>>> = p.blocks.iter().collect();
            blocks.sort_by_key(|b| b.seq);
            let mut run: Vec<Arc<BlockFile<K>>> = Vec::new();
            let mut rows = 0u64;
            for b in blocks {
                let r = b.footer().rows;
                let small = r.saturating_mul(2) < target_rows;
                if small && rows + r <= target_rows {
                    run.push(b.clone());
                    rows += r;
                    continue;
                }
                if run.len() >= 2 {
                    return Some((*key, run));
                }
                run.clear();
                rows = 0;
                if small {
                    run.push(b.clone());
                    rows = r;
                }
            }
            if run.len() >= 2 {
                return Some((*key, run));
            }
        }
        None
    }

    /// Delete the files of replaced blocks no reader holds any more.
    fn sweep(&self) {
        self.doomed.lock().retain(|b| {
            if Arc::strong_count(b) > 1 {
                return true;
            }
            match std::fs::remove_file(&b.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %b.path.display(), error = %e, "cannot remove a compacted block")
                }
            }
            false
        });
    }

    /// Blocks that could not be opened.
    pub fn unreadable(&self) -> Vec<Arc<BlockError>> {
        self.partitions
            .read()
            .values()
            .flat_map(|p| &p.unreadable)
            .cloned()
            .collect()
    }

    /// Remove the partitions that ended before `cutoff_secs`, except `keep`; how many went.
    pub fn remove_older_than(&self, cutoff_secs: i64, keep: Option<i64>) -> usize {
        let doomed: Vec<i64> = self
            .partitions
            .read()
            .keys()
            .copied()
            .filter(|k| k.saturating_add(self.width_secs) <= cutoff_secs && Some(*k) != keep)
            .collect();
        for key in &doomed {
            self.partitions.write().remove(key);
            let path = self.dir.join(key.to_string());
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(partition = %path.display(), schema = K::NAME, "removed block partition past retention")
                }
                Err(e) => {
                    tracing::warn!(partition = %path.display(), error = %e, "cannot remove block partition")
                }
            }
        }
        doomed.len()
    }

    /// What the store holds.
    pub fn stats(&self) -> StoreStats {
        let parts = self.partitions.read();
        let mut s = StoreStats {
            partitions: parts.len(),
            ..StoreStats::default()
        };
        for p in parts.values() {
            s.unreadable += p.unreadable.len();
            for b in &p.blocks {
                s.blocks += 1;
                s.rows += b.footer().rows;
                s.bytes += b.bytes;
            }
        }
        drop(parts);
        if let Some(h) = self.head_stats() {
            s.head_rows = h.rows as u64;
            s.head_bytes = h.bytes as u64;
        }
        s
    }
}

impl SpanStore {
    /// Add spans to the head, keeping at most about `max_trace_bytes` of one trace in it;
    /// how many spans went past that cap, `None` when there is no head.
    pub fn append(&self, rs: &ResourceSpans, max_trace_bytes: u64) -> Option<u64> {
        self.with_head(|buf| {
            let before = buf.stats().too_large;
            buf.set_max_trace_bytes(max_trace_bytes);
            buf.push_resource_spans(rs);
            buf.stats().too_large - before
        })
    }

    /// Every span of `trace_id`: in the blocks whose filter may hold it, in a head being
    /// cut, and in the head.
    pub fn trace(&self, trace_id: &[u8; 16]) -> TraceLookup {
        let snap = self.snapshot(|bufs| {
            let mut spans = Vec::new();
            for buf in bufs {
                match buf.trace(trace_id) {
                    Ok(found) => spans.extend(found),
                    Err(e) => tracing::error!(error = %e, "reading spans from memory failed"),
                }
            }
            spans
        });
        let mut out = TraceLookup {
            spans: Vec::new(),
            unreadable: snap.unreadable,
        };
        for b in snap.blocks.iter().filter(|b| b.block.may_contain(trace_id)) {
            match b.file().and_then(|f| b.block.trace(&f, trace_id)) {
                Ok(spans) => out.spans.extend(spans),
                Err(e) => {
                    tracing::warn!(error = %e, "a span block cannot be read; the trace is answered without it");
                    out.unreadable.push(Arc::new(e));
                }
            }
        }
        out.spans.extend(snap.memory);
        out
    }
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use lookout_proto::otlp::trace::v1::{ScopeSpans, Span};

    use super::*;

    fn spans(trace: u8, n: u8) -> ResourceSpans {
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("op{i}"),
                        start_time_unix_nano: 1_000 + u64::from(i),
                        end_time_unix_nano: 2_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn spans_are_found_in_the_head_in_blocks_and_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), 3600).unwrap();
        assert!(
            store.append(&spans(1, 1), u64::MAX).is_none(),
            "no head yet"
        );
        store.start_head(7200);
        assert!(store.append(&spans(1, 3), u64::MAX).is_some());
        assert_eq!(store.trace(&[1; 16]).spans.len(), 3);
        let path = store.cut(5).unwrap().unwrap();
        assert!(
            path.starts_with(dir.path().join("7200")),
            "{}",
            path.display()
        );
        assert_eq!(store.checkpoint(), 5);
        assert!(
            store.cut(6).unwrap().is_none(),
            "an empty head makes no block"
        );
        store.append(&spans(1, 2), u64::MAX);
        store.append(&spans(2, 1), u64::MAX);
        // Two from the block, two from the head.
        assert_eq!(store.trace(&[1; 16]).spans.len(), 5);
        store.cut(9).unwrap();
        let stats = store.stats();
        assert_eq!((stats.blocks, stats.rows, stats.partitions), (2, 6, 1));
        drop(store);

        let store = SpanStore::open(dir.path(), 3600).unwrap();
        assert_eq!(store.checkpoint(), 9);
        let found = store.trace(&[1; 16]);
        assert_eq!(found.spans.len(), 5);
        assert!(found.unreadable.is_empty());
        assert_eq!(store.trace(&[2; 16]).spans.len(), 1);
        assert!(store.trace(&[3; 16]).spans.is_empty());
        // A new block does not overwrite an old one.
        store.start_head(7200);
        store.append(&spans(3, 1), u64::MAX);
        let p = store.cut(10).unwrap().unwrap();
        assert!(p.ends_with("00000000000000000003.blk"), "{}", p.display());
        assert_eq!(store.remove_older_than(7200 + 3600, None), 1);
        assert!(store.trace(&[1; 16]).spans.is_empty());
    }

    /// A lookup racing a cut finds the spans being cut exactly once: in the sealed head or
    /// in the new block.
    #[test]
    fn lookups_during_cuts_see_every_span_once() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SpanStore::open(dir.path(), 3600).unwrap());
        store.start_head(0);
        let appended = Arc::new(AtomicU64::new(0));
        let writer = {
            let (store, appended) = (store.clone(), appended.clone());
            std::thread::spawn(move || {
                for t in 1..=120u8 {
                    store.append(&spans(t, 1), u64::MAX);
                    appended.store(u64::from(t), Ordering::Release);
                    store.cut(u64::from(t)).unwrap();
                }
            })
        };
        let mut lookups = 0;
        while !writer.is_finished() {
            let t = appended.load(Ordering::Acquire) as u8;
            if t > 0 {
                let found = store.trace(&[t; 16]).spans.len();
                assert_eq!(found, 1, "trace {t} during its cut");
                lookups += 1;
            }
        }
        writer.join().unwrap();
        assert!(lookups > 0);
    }

    #[test]
    fn a_damaged_block_is_named_and_the_rest_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), 3600).unwrap();
        store.start_head(0);
        store.append(&spans(1, 2), u64::MAX);
        let first = store.cut(1).unwrap().unwrap();
        store.append(&spans(1, 1), u64::MAX);
        store.cut(2).unwrap();
        drop(store);
        let mut bytes = std::fs::read(&first).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(&first, bytes).unwrap();
        std::fs::write(dir.path().join("0").join("00000000000000000009.tmp"), b"x").unwrap();

        let store = SpanStore::open(dir.path(), 3600).unwrap();
        let found = store.trace(&[1; 16]);
        assert_eq!(found.spans.len(), 1);
        assert_eq!(found.unreadable.len(), 1);
        assert!(
            found.unreadable[0]
                .to_string()
                .contains(&first.display().to_string()),
            "{}",
            found.unreadable[0]
        );
        assert!(!dir
            .path()
            .join("0")
            .join("00000000000000000009.tmp")
            .exists());
    }

    #[test]
    fn compaction_merges_small_blocks_and_a_crash_midway_leaves_no_span_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), 3600).unwrap();
        store.start_head(0);
        for i in 0..5u8 {
            store.append(&spans(1, 2), u64::MAX);
            store.append(&spans(10 + i, 3), u64::MAX);
            store.cut(u64::from(i) + 1).unwrap();
        }
        // A large block is left alone.
        store.start_head(3600);
        store.append(&spans(2, 50), u64::MAX);
        store.cut(6).unwrap();
        let before: Vec<u64> = std::fs::read_dir(dir.path().join("0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
            .collect();
        assert_eq!(before.len(), 5);
        let first = dir.path().join("0").join(format!("{:020}.blk", before[0]));
        let first_bytes = std::fs::read(&first).unwrap();
        // A reader holding the old blocks keeps reading them.
        let held = store.snapshot(|_| ());
        let done = store.compact_once(40).unwrap().unwrap();
        assert_eq!((done.key, done.blocks, done.rows), (0, 5, 25));
        assert!(
            store.compact_once(40).unwrap().is_none(),
            "nothing left to merge"
        );
        assert_eq!(store.stats().blocks, 2);
        assert_eq!(store.trace(&[1; 16]).spans.len(), 10);
        for b in &held.blocks {
            assert!(b.path.exists(), "a held block stays until let go");
        }
        drop(held);
        store.compact_once(40).unwrap();
        let files = std::fs::read_dir(dir.path().join("0")).unwrap().count();
        assert_eq!(files, 1, "replaced blocks are deleted once let go");
        assert_eq!(store.checkpoint(), 6);

        // A crash after the new block was written but before the old ones went: put
        // one back; opening removes it again.
        drop(store);
        let again = SpanStore::open(dir.path(), 3600).unwrap();
        assert_eq!(again.trace(&[1; 16]).spans.len(), 10);
        drop(again);
        std::fs::write(&first, first_bytes).unwrap();
        let reopened = SpanStore::open(dir.path(), 3600).unwrap();
        assert!(!first.exists());
        let found = reopened.trace(&[1; 16]);
        assert_eq!(found.spans.len(), 10, "no span twice");
        assert!(found.unreadable.is_empty());
        assert_eq!(reopened.trace(&[12; 16]).spans.len(), 3);
    }
}
