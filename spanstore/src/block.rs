//! The block container: one immutable file of compressed, checksummed chunks and a footer
//! that says where each one is. The span and trace-summary schemas ([`crate::spans`]) are
//! written in it.
//!
//! ```text
//! file   := MAGIC chunk* footer footer_len:u32le footer_crc:u32le MAGIC
//! chunk  := zstd frame of one column of one page, or of one block-wide section
//! footer := version kind rows lsn min_time max_time min_duration max_duration
//!           sections: count (id ref)*          -- dictionaries, trace index, filter
//!           pages:    count (rows ncols ref*)* -- one ref per column
//! ref    := offset len raw_len crc32(frame)    -- varints, crc u32le
//! ```
//!
//! Every number in the footer is a varint unless marked. A reader checks the magic at both
//! ends, the footer's CRC, each chunk's CRC and decompressed length, so a damaged block is
//! named with what is wrong with it and never read as data.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{put_varint, Cursor, Malformed};

/// First and last eight bytes of every block file.
pub const MAGIC: &[u8; 8] = b"LKBLOCK\x01";
/// Version of the layout inside the container (footer and schemas).
pub const FORMAT_VERSION: u64 = 1;
/// Largest decompressed chunk a reader accepts (a damaged length must not allocate more).
pub const MAX_CHUNK_BYTES: u64 = 256 << 20;
/// Largest footer a reader accepts.
const MAX_FOOTER_BYTES: u64 = 64 << 20;
/// zstd level of every chunk: level 3 (zstd's default) costs about a fifth more CPU than 1
/// on span pages for about a tenth less disk.
pub const ZSTD_LEVEL: i32 = 3;

/// Section id, in blocks of every kind, of the sequence numbers of the blocks a compacted
/// block replaces (count, then varints): at start-up, those are removed if still there.
pub const SECTION_REPLACES: u32 = 100;

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Spans ([`crate::spans`]).
    Spans = 1,
    /// Trace summaries.
    Summaries = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Spans),
            2 => Some(Kind::Summaries),
            _ => None,
        }
    }
}

/// Where a chunk is and how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Byte offset in the file.
    pub offset: u64,
    /// Compressed length.
    pub len: u64,
    /// Decompressed length.
    pub raw_len: u64,
    /// CRC-32 of the compressed bytes.
    pub crc: u32,
}

/// One page: a run of rows stored column by column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRef {
    /// Rows in the page.
    pub rows: u32,
    /// One chunk per column, in schema order.
    pub columns: Vec<ChunkRef>,
}

/// Statistics of a block's rows, for pruning without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Earliest start, Unix ns.
    pub min_time: u64,
    /// Latest start, Unix ns.
    pub max_time: u64,
    /// Shortest duration, ns.
    pub min_duration: u64,
    /// Longest duration, ns.
    pub max_duration: u64,
}

/// The footer: everything about a block but its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// What the block holds.
    pub kind: Kind,
    /// Rows in all pages.
    pub rows: u64,
    /// Highest WAL sequence number whose data the block holds (the store's checkpoint is
    /// the highest of its blocks').
    pub lsn: u64,
    /// Row statistics.
    pub stats: Stats,
    /// Block-wide sections by id (schema-defined).
    pub sections: Vec<(u32, ChunkRef)>,
    /// The pages, in row order.
    pub pages: Vec<PageRef>,
}

/// What is wrong with a block.
#[derive(Debug, thiserror::Error)]
pub enum BlockErrorKind {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The magic bytes are missing: not a block, or cut short.
    #[error("not a block file (magic bytes missing; truncated?)")]
    NotABlock,
    /// Written by a newer release.
    #[error("format version {0}, this release reads {FORMAT_VERSION}")]
    Version(u64),
    /// The footer's checksum does not match.
    #[error("footer checksum mismatch")]
    FooterChecksum,
    /// A chunk's checksum does not match.
    #[error("checksum mismatch in {0}")]
    ChunkChecksum(String),
    /// A chunk did not decompress to its recorded length.
    #[error("{what} does not decompress: {reason}")]
    Decompress {
        /// The chunk.
        what: String,
        /// Why.
        reason: String,
    },
    /// Bytes that do not hold what the format says.
    #[error("malformed {0}")]
    Malformed(String),
}

/// A block that cannot be read or written, named by its path.
#[derive(Debug, thiserror::Error)]
#[error("block {}: {kind}", path.display())]
pub struct BlockError {
    /// The block file.
    pub path: PathBuf,
    /// What is wrong.
    pub kind: BlockErrorKind,
}

impl BlockError {
    /// An error of `path`.
    pub fn new(path: &Path, kind: impl Into<BlockErrorKind>) -> Self {
        Self {
            path: path.to_path_buf(),
            kind: kind.into(),
        }
    }

    /// Malformed contents of `path`: `what` (a part of the block) and why.
    pub fn malformed(path: &Path, what: &str, m: Malformed) -> Self {
        Self::new(path, BlockErrorKind::Malformed(format!("{what}: {m}")))
    }
}

fn put_ref(out: &mut Vec<u8>, r: &ChunkRef) {
    put_varint(out, r.offset);
    put_varint(out, r.len);
    put_varint(out, r.raw_len);
    out.extend_from_slice(&r.crc.to_le_bytes());
}

fn read_ref(c: &mut Cursor<'_>) -> Result<ChunkRef, Malformed> {
    Ok(ChunkRef {
        offset: c.varint()?,
        len: c.varint()?,
        raw_len: c.varint()?,
        crc: c.u32_le()?,
    })
}

impl Footer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, FORMAT_VERSION);
        out.push(self.kind as u8);
        put_varint(&mut out, self.rows);
        put_varint(&mut out, self.lsn);
        for v in [
            self.stats.min_time,
            self.stats.max_time,
            self.stats.min_duration,
            self.stats.max_duration,
        ] {
            put_varint(&mut out, v);
        }
        put_varint(&mut out, self.sections.len() as u64);
        for (id, r) in &self.sections {
            put_varint(&mut out, u64::from(*id));
            put_ref(&mut out, r);
        }
        put_varint(&mut out, self.pages.len() as u64);
        for p in &self.pages {
            put_varint(&mut out, u64::from(p.rows));
            put_varint(&mut out, p.columns.len() as u64);
            for r in &p.columns {
                put_ref(&mut out, r);
            }
        }
        out
    }

    /// Parse a footer; `data_end` is where the chunks end (refs must lie before it).
    fn decode(buf: &[u8], data_end: u64) -> Result<Footer, BlockErrorKind> {
        let m = |m: Malformed| BlockErrorKind::Malformed(format!("footer: {m}"));
        let mut c = Cursor::new(buf);
        let version = c.varint().map_err(m)?;
        if version != FORMAT_VERSION {
            return Err(BlockErrorKind::Version(version));
        }
        let kind = Kind::from_u8(c.u8().map_err(m)?)
            .ok_or_else(|| BlockErrorKind::Malformed("footer: unknown block kind".into()))?;
        let rows = c.varint().map_err(m)?;
        let lsn = c.varint().map_err(m)?;
        let mut stat = || c.varint();
        let stats = Stats {
            min_time: stat().map_err(m)?,
            max_time: stat().map_err(m)?,
            min_duration: stat().map_err(m)?,
            max_duration: stat().map_err(m)?,
        };
        let check = |r: ChunkRef| -> Result<ChunkRef, BlockErrorKind> {
            let in_file = r
                .offset
                .checked_add(r.len)
                .is_some_and(|end| r.offset >= MAGIC.len() as u64 && end <= data_end);
            if !in_file || r.raw_len > MAX_CHUNK_BYTES {
                return Err(BlockErrorKind::Malformed(format!(
                    "footer: chunk at {} of {} bytes ({} raw) lies outside the data",
                    r.offset, r.len, r.raw_len
                )));
            }
            Ok(r)
        };
        let n = c.count(6).map_err(m)?;
        let mut sections = Vec::with_capacity(n);
        for _ in 0..n {
            let id = c.varint_u32().map_err(m)?;
            sections.push((id, check(read_ref(&mut c).map_err(m)?)?));
        }
        let n = c.count(2).map_err(m)?;
        let mut pages = Vec::with_capacity(n);
        let mut total = 0u64;
        for _ in 0..n {
            let rows = c.varint_u32().map_err(m)?;
            let ncols = c.count(7).map_err(m)?;
            let mut columns = Vec::with_capacity(ncols);
            for _ in 0..ncols {
                columns.push(check(read_ref(&mut c).map_err(m)?)?);
            }
            total += u64::from(rows);
            pages.push(PageRef { rows, columns });
        }
        if total != rows {
            return Err(BlockErrorKind::Malformed(format!(
                "footer: pages hold {total} rows, the block says {rows}"
            )));
        }
        if !c.is_empty() {
            return Err(BlockErrorKind::Malformed(
                "footer: bytes after the last page".into(),
            ));
        }
        Ok(Footer {
            kind,
            rows,
            lsn,
            stats,
            sections,
            pages,
        })
    }

    /// The first row of each page, and the total, as a prefix sum (`pages + 1` entries).
    pub fn page_starts(&self) -> Vec<u64> {
        let mut starts = Vec::with_capacity(self.pages.len() + 1);
        let mut at = 0u64;
        starts.push(0);
        for p in &self.pages {
            at += u64::from(p.rows);
            starts.push(at);
        }
        starts
    }
}

/// Builds a block in memory: add pages and sections, then [`BlockBuilder::finish`].
pub struct BlockBuilder {
    buf: Vec<u8>,
    footer: Footer,
    level: i32,
}

impl BlockBuilder {
    /// An empty block of `kind`.
    pub fn new(kind: Kind) -> Self {
        Self {
            buf: MAGIC.to_vec(),
            footer: Footer {
                kind,
                rows: 0,
                lsn: 0,
                stats: Stats::default(),
                sections: Vec::new(),
                pages: Vec::new(),
            },
            level: ZSTD_LEVEL,
        }
    }

    fn chunk(&mut self, raw: &[u8]) -> std::io::Result<ChunkRef> {
        let frame = zstd::bulk::compress(raw, self.level)?;
        let r = ChunkRef {
            offset: self.buf.len() as u64,
            len: frame.len() as u64,
            raw_len: raw.len() as u64,
            crc: crc32fast::hash(&frame),
        };
        self.buf.extend_from_slice(&frame);
        Ok(r)
    }

    /// Add a block-wide section.
    pub fn section(&mut self, id: u32, raw: &[u8]) -> std::io::Result<()> {
        let r = self.chunk(raw)?;
        self.footer.sections.push((id, r));
        Ok(())
    }

    /// Add a page of `rows` rows, one encoded buffer per column.
    pub fn page(&mut self, rows: u32, columns: &[&[u8]]) -> std::io::Result<()> {
        let mut refs = Vec::with_capacity(columns.len());
        for col in columns {
            refs.push(self.chunk(col)?);
        }
        self.footer.rows += u64::from(rows);
        self.footer.pages.push(PageRef {
            rows,
            columns: refs,
        });
        Ok(())
    }

    /// The finished file's bytes, with the rows' statistics and the WAL position covered.
    pub fn finish(mut self, stats: Stats, lsn: u64) -> Vec<u8> {
        self.footer.stats = stats;
        self.footer.lsn = lsn;
        let footer = self.footer.encode();
        self.buf.extend_from_slice(&footer);
        self.buf
            .extend_from_slice(&(footer.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        self.buf
    }
}

/// Write `bytes` to `path` durably: a temporary file beside it, fsync'd, renamed over
/// `path`, then the directory fsync'd. A crash leaves either no block or the whole block;
/// a failure (a full disk) removes the temporary file, so the space it took is free for
/// the next try.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where a block's bytes come from: a file on disk, or memory (tests, fuzzing).
pub trait Source {
    /// Total length in bytes.
    fn size(&self) -> std::io::Result<u64>;
    /// Fill `buf` from byte `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

impl Source for [u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(src) = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Read and check the footer of the block in `src` (named `path` in errors).
pub fn read_footer<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Footer, BlockError> {
    let err = |k: BlockErrorKind| BlockError::new(path, k);
    let len = src.size().map_err(|e| err(e.into()))?;
    let tail_len = 8 + MAGIC.len() as u64;
    if len < MAGIC.len() as u64 + tail_len {
        return Err(err(BlockErrorKind::NotABlock));
    }
    let mut head = [0u8; 8];
    src.read_at(0, &mut head).map_err(|e| err(e.into()))?;
    let mut tail = [0u8; 16];
    src.read_at(len - tail_len, &mut tail)
        .map_err(|e| err(e.into()))?;
    if &head != MAGIC || &tail[8..] != MAGIC {
        return Err(err(BlockErrorKind::NotABlock));
    }
    let mut c = Cursor::new(&tail[..8]);
    let (footer_len, footer_crc) = match (c.u32_le(), c.u32_le()) {
        (Ok(l), Ok(crc)) => (u64::from(l), crc),
        _ => return Err(err(BlockErrorKind::NotABlock)),
    };
    let data_end = (len - tail_len)
        .checked_sub(footer_len)
        .filter(|&end| end >= MAGIC.len() as u64 && footer_len <= MAX_FOOTER_BYTES)
        .ok_or_else(|| {
            err(BlockErrorKind::Malformed(
                "footer length past the start".into(),
            ))
        })?;
    let mut footer = vec![0u8; footer_len as usize];
    src.read_at(data_end, &mut footer)
        .map_err(|e| err(e.into()))?;
    if crc32fast::hash(&footer) != footer_crc {
        return Err(err(BlockErrorKind::FooterChecksum));
    }
    Footer::decode(&footer, data_end).map_err(err)
}

/// The sequence numbers of the blocks the block in `src` replaces (none unless compacted).
pub fn replaced<S: Source + ?Sized>(
    src: &S,
    path: &Path,
    footer: &Footer,
) -> Result<Vec<u64>, BlockError> {
    let Some((_, r)) = footer
        .sections
        .iter()
        .find(|(id, _)| *id == SECTION_REPLACES)
    else {
        return Ok(Vec::new());
    };
    let raw = read_chunk(src, path, r, &|| "section Replaces".to_string())?;
    let m = |m| BlockError::malformed(path, "replaced blocks", m);
    let mut c = Cursor::new(&raw);
    let n = c.count(1).map_err(m)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.varint().map_err(m)?);
    }
    Ok(out)
}

/// The [`SECTION_REPLACES`] section of `seqs`.
pub fn replaces_section(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seqs.len() * 3 + 1);
    put_varint(&mut out, seqs.len() as u64);
    for s in seqs {
        put_varint(&mut out, *s);
    }
    out
}

/// Read, check and decompress one chunk; `what` names it in errors.
pub fn read_chunk<S: Source + ?Sized>(
    src: &S,
    path: &Path,
    r: &ChunkRef,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>, BlockError> {
    let err = |k: BlockErrorKind| BlockError::new(path, k);
    let len = usize::try_from(r.len)
        .map_err(|_| err(BlockErrorKind::Malformed("chunk length".into())))?;
    let mut frame = vec![0u8; len];
    src.read_at(r.offset, &mut frame)
        .map_err(|e| err(e.into()))?;
    if crc32fast::hash(&frame) != r.crc {
        return Err(err(BlockErrorKind::ChunkChecksum(what())));
    }
    let raw = zstd::bulk::decompress(&frame, r.raw_len as usize).map_err(|e| {
        err(BlockErrorKind::Decompress {
            what: what(),
            reason: e.to_string(),
        })
    })?;
    if raw.len() as u64 != r.raw_len {
        return Err(err(BlockErrorKind::Decompress {
            what: what(),
            reason: format!("{} bytes, the footer says {}", raw.len(), r.raw_len),
        }));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A block cut that fails (here the rename, on a full disk the write) leaves no
    /// temporary file holding space until the next start; the next try can succeed.
    #[test]
    fn a_failed_durable_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.blk");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("in-the-way"), b"x").unwrap();
        write_durably(&path, b"block").unwrap_err();
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(&path).unwrap();
        write_durably(&path, b"block").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"block");
        assert!(!path.with_extension("tmp").exists());
    }

    fn sample() -> Vec<u8> {
        let mut b = BlockBuilder::new(Kind::Spans);
        b.section(7, b"dictionary").unwrap();
        b.page(2, &[b"ab", b"cd"]).unwrap();
        b.page(1, &[b"e", b""]).unwrap();
        b.finish(
            Stats {
                min_time: 5,
                max_time: 9,
                min_duration: 1,
                max_duration: 3,
            },
            11,
        )
    }

    #[test]
    fn a_block_reads_back() {
        let bytes = sample();
        let p = Path::new("mem");
        let f = read_footer(bytes.as_slice(), p).unwrap();
        assert_eq!(f.kind, Kind::Spans);
        assert_eq!(f.rows, 3);
        assert_eq!(f.lsn, 11);
        assert_eq!(f.stats.max_time, 9);
        assert_eq!(f.page_starts(), vec![0, 2, 3]);
        let what = || "x".to_string();
        let read = |r| read_chunk(bytes.as_slice(), p, r, &what).unwrap();
        assert_eq!(read(&f.sections[0].1), b"dictionary");
        assert_eq!(read(&f.pages[0].columns[1]), b"cd");
        assert_eq!(read(&f.pages[1].columns[1]), b"");
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let bytes = sample();
        let p = Path::new("mem");
        let what = || "x".to_string();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            let ok = read_footer(b.as_slice(), p).and_then(|f| {
                for (_, r) in &f.sections {
                    read_chunk(b.as_slice(), p, r, &what)?;
                }
                for page in &f.pages {
                    for r in &page.columns {
                        read_chunk(b.as_slice(), p, r, &what)?;
                    }
                }
                Ok(())
            });
            assert!(ok.is_err(), "flip at byte {i} went unnoticed");
        }
        for cut in 0..bytes.len() {
            assert!(read_footer(&bytes[..cut], p).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn errors_name_the_block_and_what_is_wrong() {
        let mut bytes = sample();
        let n = bytes.len();
        bytes[n - 12] ^= 1; // footer crc
        let e = read_footer(bytes.as_slice(), Path::new("/d/spans/1.blk")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "block /d/spans/1.blk: footer checksum mismatch"
        );
    }
}
