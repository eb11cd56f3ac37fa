//! Reading summary blocks: the footer, filters and name tables once, then only the pages
//! and columns a request needs. Every read is checked (see [`crate::block`]); a damaged
//! block is an error that names it.

use std::path::{Path, PathBuf};

use crate::block::{read_chunk, read_footer, BlockError, BlockErrorKind, Footer, Kind, Source};
use crate::bloom::{attr_key, trace_hash, Bloom};
use crate::codec::{unzigzag, Cursor, Malformed};
use crate::traceindex;

use super::{Col, Section, Summary, SummaryQuery, TraceState, COLUMNS, SUPERSEDED};

/// An open summary block: its footer, filters and name tables, in memory.
#[derive(Debug, Clone)]
pub struct SummaryBlock {
    path: PathBuf,
    footer: Footer,
    page_starts: Vec<u64>,
    filter: Bloom,
    attr_filter: Bloom,
    dict: Vec<String>,
    /// Dictionary ids of the services that occur.
    services: Vec<u32>,
    /// Dictionary ids of the `(service, operation)` pairs that occur, by pair id.
    pairs: Vec<(u32, u32)>,
}

/// A row that matched a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its version.
    pub version: u64,
    /// Its trace's start.
    pub start: u64,
    /// The row in the block.
    pub row: u64,
}

/// A query in this block's ids; `None` when no row can match.
struct Prepared {
    /// Rows must list this service.
    service: Option<u32>,
    /// Rows must list one of these pairs.
    pairs: Option<Vec<u32>>,
    /// Rows must list every one of these attribute indexes.
    attrs: Vec<u32>,
}

/// What rows refer to outside their page.
struct Tables<'a> {
    ids: &'a [[u8; 16]],
    trace_starts: &'a [u64],
    attrs: &'a [u64],
}

fn malformed_at(what: &'static str, at: usize) -> Malformed {
    Malformed { what, at }
}

impl SummaryBlock {
    /// Open the block at `path`: read and check its footer, filters and name tables.
    pub fn open(path: &Path) -> Result<Self, BlockError> {
        let f = std::fs::File::open(path).map_err(|e| BlockError::new(path, e))?;
        Self::read(&f, path)
    }

    /// Read the block in `src`, named `path` in errors.
    pub fn read<S: Source + ?Sized>(src: &S, path: &Path) -> Result<Self, BlockError> {
        let footer = read_footer(src, path)?;
        if footer.kind != Kind::Summaries {
            return Err(BlockError::new(
                path,
                BlockErrorKind::Malformed("not a summary block".into()),
            ));
        }
        let mut block = Self {
            path: path.to_path_buf(),
            page_starts: footer.page_starts(),
            footer,
            filter: Bloom::with_capacity(0),
            attr_filter: Bloom::with_capacity(0),
            dict: Vec::new(),
            services: Vec::new(),
            pairs: Vec::new(),
        };
        if block
            .footer
            .pages
            .iter()
            .any(|p| p.columns.len() != COLUMNS)
        {
            return Err(block.malformed(
                "footer",
                malformed_at("page with a wrong number of columns", 0),
            ));
        }
        let raw = block.section(src, Section::Filter)?;
        block.filter = Bloom::decode(&raw).map_err(|m| block.malformed("filter", m))?;
        let raw = block.section(src, Section::AttributeFilter)?;
        block.attr_filter =
            Bloom::decode(&raw).map_err(|m| block.malformed("attribute filter", m))?;
        let raw = block.section(src, Section::Dictionary)?;
        block.dict = read_strings(&raw).map_err(|m| block.malformed("dictionary", m))?;
        let n = block.dict.len();
        let raw = block.section(src, Section::Services)?;
        block.services = (|| {
            let mut c = Cursor::new(&raw);
            let count = c.count(1)?;
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                out.push(c.index(n)? as u32);
            }
            Ok(out)
        })()
        .map_err(|m| block.malformed("services", m))?;
        let raw = block.section(src, Section::Pairs)?;
        block.pairs = (|| {
            let mut c = Cursor::new(&raw);
            let count = c.count(2)?;
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                out.push((c.index(n)? as u32, c.index(n)? as u32));
            }
            Ok(out)
        })()
        .map_err(|m| block.malformed("pairs", m))?;
        Ok(block)
    }

    /// The block's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The footer (row count, statistics, layout).
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// Whether the block may hold versions of `trace_id` (no false negatives).
    pub fn may_contain(&self, trace_id: &[u8; 16]) -> bool {
        self.filter.may_contain(trace_hash(trace_id))
    }

    /// Services that occur in the block.
    pub fn services(&self) -> impl Iterator<Item = &str> + '_ {
        self.services.iter().map(|&s| self.string(s))
    }

    /// `(service, operation)` pairs that occur in the block.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs
            .iter()
            .map(|&(s, o)| (self.string(s), self.string(o)))
    }

    fn string(&self, id: u32) -> &str {
        self.dict.get(id as usize).map_or("", String::as_str)
    }

    fn malformed(&self, what: &str, m: Malformed) -> BlockError {
        BlockError::malformed(&self.path, what, m)
    }

    fn section<S: Source + ?Sized>(&self, src: &S, s: Section) -> Result<Vec<u8>, BlockError> {
        let r = self
            .footer
            .sections
            .iter()
            .find(|(id, _)| *id == s as u32)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                self.malformed("footer", malformed_at("a section is missing", s as usize))
            })?;
        read_chunk(src, &self.path, &r, &|| format!("section {s:?}"))
    }

    fn column<S: Source + ?Sized>(&self, src: &S, p: usize, c: Col) -> Result<Vec<u8>, BlockError> {
        read_chunk(
            src,
            &self.path,
            &self.footer.pages[p].columns[c as usize],
            &|| format!("page {p} column {c:?}"),
        )
    }

    fn trace_index<S: Source + ?Sized>(
        &self,
        src: &S,
    ) -> Result<(Vec<[u8; 16]>, Vec<u64>), BlockError> {
        let raw = self.section(src, Section::Traces)?;
        traceindex::decode(&raw, self.footer.rows).map_err(|m| self.malformed("trace index", m))
    }

    /// The attribute hashes rows refer to by index.
    fn attr_table<S: Source + ?Sized>(&self, src: &S) -> Result<Vec<u64>, BlockError> {
        let raw = self.section(src, Section::Attributes)?;
        (|| {
            let mut c = Cursor::new(&raw);
            let n = c.count(8)?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(c.u64_le()?);
            }
            if !c.is_empty() {
                return Err(malformed_at("bytes after the last hash", 0));
            }
            Ok(out)
        })()
        .map_err(|m| self.malformed("attributes", m))
    }

    /// The newest version of `trace_id` in this block.
    pub fn latest<S: Source + ?Sized>(
        &self,
        src: &S,
        trace_id: &[u8; 16],
    ) -> Result<Option<Summary>, BlockError> {
        if !self.may_contain(trace_id) {
            return Ok(None);
        }
        let (ids, starts) = self.trace_index(src)?;
        let Ok(i) = ids.binary_search(trace_id) else {
            return Ok(None);
        };
        let last = starts[i + 1].saturating_sub(1);
        Ok(self.rows(src, &ids, &starts, last..last + 1)?.pop())
    }

    /// Every version in the block, sorted by trace id then version.
    pub fn all<S: Source + ?Sized>(&self, src: &S) -> Result<Vec<Summary>, BlockError> {
        let (ids, starts) = self.trace_index(src)?;
        self.rows(src, &ids, &starts, 0..self.footer.rows)
    }

    fn rows<S: Source + ?Sized>(
        &self,
        src: &S,
        ids: &[[u8; 16]],
        trace_starts: &[u64],
        want: std::ops::Range<u64>,
    ) -> Result<Vec<Summary>, BlockError> {
        let mut out = Vec::new();
        let tables = Tables {
            ids,
            trace_starts,
            attrs: &self.attr_table(src)?,
        };
        for p in 0..self.footer.pages.len() {
            let (lo, hi) = (self.page_starts[p], self.page_starts[p + 1]);
            if hi <= want.start || lo >= want.end {
                continue;
            }
            let mut cols = Vec::with_capacity(COLUMNS);
            for c in 0..COLUMNS {
                cols.push(read_chunk(
                    src,
                    &self.path,
                    &self.footer.pages[p].columns[c],
                    &|| format!("page {p} column {c}"),
                )?);
            }
            self.decode_page(p, &cols, &tables, &want, &mut out)
                .map_err(|m| self.malformed(&format!("page {p}"), m))?;
        }
        Ok(out)
    }

    fn decode_page(
        &self,
        p: usize,
        cols: &[Vec<u8>],
        tables: &Tables<'_>,
        want: &std::ops::Range<u64>,
        out: &mut Vec<Summary>,
    ) -> Result<(), Malformed> {
        let (ids, trace_starts, attr_table) = (tables.ids, tables.trace_starts, tables.attrs);
        let first_row = self.page_starts[p];
        let rows = self.footer.pages[p].rows as usize;
        let mut c: Vec<Cursor<'_>> = cols.iter().map(|b| Cursor::new(b)).collect();
        let v0 = c[Col::Version as usize].varint()?;
        let s0 = c[Col::Start as usize].varint()?;
        let l0 = c[Col::MaxLsn as usize].varint()?;
        let n = self.dict.len();
        let mut t = trace_starts
            .partition_point(|&s| s <= first_row)
            .saturating_sub(1);
        for i in 0..rows {
            let row = first_row + i as u64;
            while trace_starts.get(t + 1).is_some_and(|&s| row >= s) {
                t += 1;
            }
            let trace_id = *ids
                .get(t)
                .ok_or(malformed_at("row past the trace index", i))?;
            let mut v = |col: Col| c[col as usize].varint();
            let version = v0.wrapping_add(v(Col::Version)?);
            let state = TraceState::from_u64(v(Col::State)? & !SUPERSEDED);
            let start = s0.wrapping_add(v(Col::Start)?);
            let end = start.wrapping_add(unzigzag(v(Col::Duration)?) as u64);
            let span_count = v(Col::SpanCount)?;
            let error_count = v(Col::ErrorCount)?;
            let late_spans = v(Col::LateSpans)?;
            let max_lsn = l0.wrapping_add(v(Col::MaxLsn)?);
            let root_service = c[Col::RootService as usize].index(n)? as u32;
            let root_operation = c[Col::RootOperation as usize].index(n)? as u32;
            let cs = &mut c[Col::Services as usize];
            let mut services = Vec::new();
            for _ in 0..cs.count(1)? {
                services.push(cs.index(n)? as u32);
            }
            let co = &mut c[Col::Ops as usize];
            let mut ops = Vec::new();
            for _ in 0..co.count(1)? {
                ops.push(co.index(self.pairs.len())?);
            }
            let ca = &mut c[Col::Attrs as usize];
            let mut attrs = Vec::new();
            for _ in 0..ca.count(1)? {
                attrs.push(attr_table[ca.index(attr_table.len())?]);
            }
            if !want.contains(&row) {
                continue;
            }
            out.push(Summary {
                trace_id,
                version,
                state,
                start,
                end,
                span_count,
                error_count,
                late_spans,
                root_service: self.string(root_service).to_string(),
                root_operation: self.string(root_operation).to_string(),
                services: services
                    .iter()
                    .map(|&s| self.string(s).to_string())
                    .collect(),
                ops: ops
                    .iter()
                    .map(|&i| {
                        let (s, o) = self.pairs[i];
                        (self.string(s).to_string(), self.string(o).to_string())
                    })
                    .collect(),
                attrs,
                max_lsn,
            });
        }
        if c.iter().any(|c| !c.is_empty()) {
            return Err(malformed_at("bytes after the page's last row", rows));
        }
        Ok(())
    }
}

/// Strings of a dictionary section: count, then each length-prefixed.
fn read_strings(raw: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut c = Cursor::new(raw);
    let n = c.count(1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.str()?.to_string());
    }
    if !c.is_empty() {
        return Err(malformed_at(
            "bytes after the last string",
            raw.len() - c.remaining(),
        ));
    }
    Ok(out)
}

/// `rows` varints of a column, after its base when it has one.
fn scalars(raw: &[u8], rows: usize, based: bool) -> Result<(u64, Vec<u64>), Malformed> {
    let mut c = Cursor::new(raw);
    let base = if based { c.varint()? } else { 0 };
    let mut out = Vec::with_capacity(rows);
    for _ in 0..rows {
        out.push(c.varint()?);
    }
    if !c.is_empty() {
        return Err(malformed_at("bytes after the column's last row", rows));
    }
    Ok((base, out))
}

/// Keep the rows still `alive` whose list (count, then ids) satisfies `keep`.
fn filter_lists(
    raw: &[u8],
    alive: &mut [bool],
    mut keep: impl FnMut(&[u64]) -> bool,
) -> Result<(), Malformed> {
    let mut c = Cursor::new(raw);
    let mut list = Vec::new();
    for a in alive.iter_mut() {
        list.clear();
        for _ in 0..c.count(1)? {
            list.push(c.varint()?);
        }
        if *a && !keep(&list) {
            *a = false;
        }
    }
    if !c.is_empty() {
        return Err(malformed_at(
            "bytes after the column's last row",
            alive.len(),
        ));
    }
    Ok(())
}

impl SummaryBlock {
    /// `q` in this block's ids; `None` when statistics, names or filters rule every row
    /// out.
    fn prepare<S: Source + ?Sized>(
        &self,
        src: &S,
        q: &SummaryQuery,
    ) -> Result<Option<Prepared>, BlockError> {
        let st = &self.footer.stats;
        if st.max_time < q.from_ns
            || st.min_time > q.to_ns
            || q.min_duration_ns.is_some_and(|m| st.max_duration < m)
            || q.max_duration_ns.is_some_and(|m| st.min_duration > m)
        {
            return Ok(None);
        }
        let service = match &q.service {
            None => None,
            Some(s) => match self.services.iter().find(|&&id| self.string(id) == s) {
                Some(&id) => Some(id),
                None => return Ok(None),
            },
        };
        let pairs = match &q.operation {
            None => None,
            Some(o) => {
                let ids: Vec<u32> = (0..self.pairs.len() as u32)
                    .filter(|&i| {
                        let (s, op) = self.pairs[i as usize];
                        self.string(op) == o && service.is_none_or(|want| want == s)
                    })
                    .collect();
                if ids.is_empty() {
                    return Ok(None);
                }
                Some(ids)
            }
        };
        if !q
            .attrs
            .iter()
            .all(|h| self.attr_filter.may_contain(attr_key(*h)))
        {
            return Ok(None);
        }
        let mut attrs = Vec::with_capacity(q.attrs.len());
        if !q.attrs.is_empty() {
            let table = self.attr_table(src)?;
            for h in &q.attrs {
                match table.iter().position(|t| t == h) {
                    Some(i) => attrs.push(i as u32),
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(Prepared {
            // With an operation the pairs already name the service.
            service: service.filter(|_| pairs.is_none()),
            pairs,
            attrs,
        }))
    }

    /// Rows matching `q` that are their trace's newest version in this block, at most
    /// `keep` of them (those of the latest trace starts). Whether another block holds a
    /// newer version is the caller's to decide.
    pub fn search<S: Source + ?Sized>(
        &self,
        src: &S,
        q: &SummaryQuery,
        keep: usize,
    ) -> Result<Vec<Hit>, BlockError> {
        let Some(prep) = self.prepare(src, q)? else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(u64, u64, u64)> = Vec::new();
        for p in 0..self.footer.pages.len() {
            self.search_page(src, p, q, &prep, &mut found)?;
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        found.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        found.truncate(keep.max(1));
        let (ids, starts) = self.trace_index(src)?;
        let mut hits = Vec::with_capacity(found.len());
        for (row, start, version) in found {
            let t = starts.partition_point(|&s| s <= row).saturating_sub(1);
            let trace_id = *ids.get(t).ok_or_else(|| {
                self.malformed("trace index", malformed_at("row past the trace index", 0))
            })?;
            hits.push(Hit {
                trace_id,
                version,
                start,
                row,
            });
        }
        Ok(hits)
    }

    /// Matching rows of page `p` as `(row, start, version)`.
    fn search_page<S: Source + ?Sized>(
        &self,
        src: &S,
        p: usize,
        q: &SummaryQuery,
        prep: &Prepared,
        found: &mut Vec<(u64, u64, u64)>,
    ) -> Result<(), BlockError> {
        let rows = self.footer.pages[p].rows as usize;
        let m = |m| self.malformed(&format!("page {p}"), m);
        let st = &self.footer.stats;
        let mut starts = None;
        // Only each trace's newest version in the block can be its newest at all.
        let (_, states) = scalars(&self.column(src, p, Col::State)?, rows, false).map_err(m)?;
        let mut alive: Vec<bool> = states.iter().map(|s| s & SUPERSEDED == 0).collect();
        let by_duration = q.min_duration_ns.is_some() || q.max_duration_ns.is_some();
        // Within the time range as a whole, starts are read only for the rows that match.
        if st.min_time < q.from_ns || st.max_time > q.to_ns || by_duration {
            let (s0, deltas) = scalars(&self.column(src, p, Col::Start)?, rows, true).map_err(m)?;
            for (a, &d) in alive.iter_mut().zip(&deltas) {
                let s = s0.wrapping_add(d);
                *a = *a && s >= q.from_ns && s <= q.to_ns;
            }
            starts = Some((s0, deltas));
        }
        let any = |a: &[bool]| a.iter().any(|&x| x);
        if !any(&alive) {
            return Ok(());
        }
        if let (true, Some((s0, deltas))) = (by_duration, &starts) {
            let (_, durations) =
                scalars(&self.column(src, p, Col::Duration)?, rows, false).map_err(m)?;
            for ((a, z), d) in alive.iter_mut().zip(durations).zip(deltas) {
                // As `Summary::duration`: from the start to the end, none when it is before.
                let start = s0.wrapping_add(*d);
                let d = start.wrapping_add(unzigzag(z) as u64).saturating_sub(start);
                *a = *a
                    && q.min_duration_ns.is_none_or(|x| d >= x)
                    && q.max_duration_ns.is_none_or(|x| d <= x);
            }
        }
        if q.errors_only && any(&alive) {
            let (_, errors) =
                scalars(&self.column(src, p, Col::ErrorCount)?, rows, false).map_err(m)?;
            for (a, e) in alive.iter_mut().zip(errors) {
                *a = *a && e > 0;
            }
        }
        if let Some(s) = prep.service.filter(|_| any(&alive)) {
            let raw = self.column(src, p, Col::Services)?;
            filter_lists(&raw, &mut alive, |l| l.contains(&u64::from(s))).map_err(m)?;
        }
        if let Some(pairs) = prep.pairs.as_ref().filter(|_| any(&alive)) {
            let raw = self.column(src, p, Col::Ops)?;
            filter_lists(&raw, &mut alive, |l| {
                l.iter().any(|x| pairs.iter().any(|&p| u64::from(p) == *x))
            })
            .map_err(m)?;
        }
        if !prep.attrs.is_empty() && any(&alive) {
            let raw = self.column(src, p, Col::Attrs)?;
            filter_lists(&raw, &mut alive, |l| {
                prep.attrs.iter().all(|&a| l.contains(&u64::from(a)))
            })
            .map_err(m)?;
        }
        if !any(&alive) {
            return Ok(());
        }
        let (s0, starts) = match starts {
            Some(s) => s,
            None => scalars(&self.column(src, p, Col::Start)?, rows, true).map_err(m)?,
        };
        let (v0, versions) = scalars(&self.column(src, p, Col::Version)?, rows, true).map_err(m)?;
        let first = self.page_starts[p];
        for (i, a) in alive.iter().enumerate() {
            if *a {
                found.push((
                    first + i as u64,
                    s0.wrapping_add(starts[i]),
                    v0.wrapping_add(versions[i]),
                ));
            }
        }
        Ok(())
    }

    /// The versions in `rows` (sorted, distinct), each page decoded once.
    pub fn rows_at<S: Source + ?Sized>(
        &self,
        src: &S,
        rows: &[u64],
    ) -> Result<Vec<Summary>, BlockError> {
        let (ids, starts) = self.trace_index(src)?;
        let mut out = Vec::with_capacity(rows.len());
        let mut i = 0;
        while i < rows.len() {
            let p = self
                .page_starts
                .partition_point(|&s| s <= rows[i])
                .saturating_sub(1);
            let end = self.page_starts.get(p + 1).copied().unwrap_or(u64::MAX);
            let mut j = i;
            while j < rows.len() && rows[j] < end {
                j += 1;
            }
            let lo = rows[i];
            let hi = rows[j - 1] + 1;
            let page = self.rows(src, &ids, &starts, lo..hi)?;
            out.extend(
                page.into_iter()
                    .zip(lo..hi)
                    .filter(|(_, r)| rows[i..j].binary_search(r).is_ok())
                    .map(|(s, _)| s),
            );
            i = j;
        }
        Ok(out)
    }
}
