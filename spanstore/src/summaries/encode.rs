//! Sorting a [`SummaryBuffer`] by trace and version, and writing it as a block.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use crate::block::{replaces_section, BlockBuilder, Kind, Stats, SECTION_REPLACES};
use crate::bloom::{attr_key, Bloom};
use crate::codec::{put_bytes, put_varint, zigzag};
use crate::traceindex;

use super::buffer::SummaryBuffer;
use super::{Col, Section, Summary, COLUMNS, PAGE_ROWS, SUPERSEDED};

type Map<K> = HashMap<K, u32, FxBuildHasher>;

/// Ids of what rows refer to, in the order they are first met.
#[derive(Default)]
struct Tables<'a> {
    strings: Map<&'a str>,
    dict: Vec<&'a str>,
    services: Map<u32>,
    pairs: Map<(u32, u32)>,
    pair_list: Vec<(u32, u32)>,
    attrs: Map<u64>,
}

impl<'a> Tables<'a> {
    fn string(&mut self, s: &'a str) -> u32 {
        let next = self.dict.len() as u32;
        let id = *self.strings.entry(s).or_insert(next);
        if id == next {
            self.dict.push(s);
        }
        id
    }

    fn service(&mut self, s: &'a str) -> u32 {
        let id = self.string(s);
        let next = self.services.len() as u32;
        self.services.entry(id).or_insert(next);
        id
    }

    fn pair(&mut self, s: &'a str, o: &'a str) -> u32 {
        let key = (self.service(s), self.string(o));
        let next = self.pair_list.len() as u32;
        let id = *self.pairs.entry(key).or_insert(next);
        if id == next {
            self.pair_list.push(key);
        }
        id
    }

    /// Attribute hashes by frequency, most frequent first, and each one's index.
    fn rank_attrs(rows: &[Arc<Summary>]) -> (Vec<u64>, Map<u64>) {
        let mut counts: HashMap<u64, u32, FxBuildHasher> = HashMap::default();
        for s in rows {
            for h in &s.attrs {
                *counts.entry(*h).or_default() += 1;
            }
        }
        let mut ranked: Vec<(u64, u32)> = counts.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let hashes: Vec<u64> = ranked.into_iter().map(|(h, _)| h).collect();
        let index = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u32))
            .collect();
        (hashes, index)
    }
}

impl SummaryBuffer {
    /// Encode every row as one block (the file's bytes), sorted by trace id then version,
    /// covering the WAL through `lsn`. `None` when the buffer is empty.
    pub fn finish(&self, lsn: u64) -> std::io::Result<Option<Vec<u8>>> {
        self.finish_replacing(lsn, &[])
    }

    /// [`Self::finish`] for a compacted block that replaces blocks `replaces`.
    pub fn finish_replacing(&self, lsn: u64, replaces: &[u64]) -> std::io::Result<Option<Vec<u8>>> {
        let rows = &self.rows;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        order.sort_unstable_by_key(|&r| {
            let s = &rows[r as usize];
            (s.trace_id, s.version, r)
        });
        let mut t = Tables::default();
        let (attr_list, attr_ids) = Tables::rank_attrs(rows);
        t.attrs = attr_ids;
        // Pages first: they fill the dictionary and the pair table.
        let mut pages: Vec<(u32, [Vec<u8>; COLUMNS])> = Vec::new();
        let mut at = 0;
        while at < order.len() {
            let mut end = (at + PAGE_ROWS).min(order.len());
            while end < order.len()
                && rows[order[end] as usize].trace_id == rows[order[end - 1] as usize].trace_id
            {
                end += 1;
            }
            let page: Vec<&Summary> = order[at..end].iter().map(|&r| &*rows[r as usize]).collect();
            pages.push(((end - at) as u32, encode_page(&page, &mut t)));
            at = end;
        }
        let mut b = BlockBuilder::new(Kind::Summaries);
        if !replaces.is_empty() {
            b.section(SECTION_REPLACES, &replaces_section(replaces))?;
        }
        let mut out = Vec::new();
        put_varint(&mut out, t.dict.len() as u64);
        for s in &t.dict {
            put_bytes(&mut out, s.as_bytes());
        }
        b.section(Section::Dictionary as u32, &out)?;
        let mut services: Vec<(u32, u32)> = t.services.iter().map(|(s, i)| (*i, *s)).collect();
        services.sort_unstable();
        out.clear();
        put_varint(&mut out, services.len() as u64);
        for (_, s) in services {
            put_varint(&mut out, u64::from(s));
        }
        b.section(Section::Services as u32, &out)?;
        out.clear();
        put_varint(&mut out, t.pair_list.len() as u64);
        for (s, o) in &t.pair_list {
            put_varint(&mut out, u64::from(*s));
            put_varint(&mut out, u64::from(*o));
        }
        b.section(Section::Pairs as u32, &out)?;
        let (traces, filter) =
            traceindex::encode(order.iter().map(|&r| &rows[r as usize].trace_id));
        b.section(Section::Traces as u32, &traces)?;
        b.section(Section::Filter as u32, &filter)?;
        out.clear();
        put_varint(&mut out, attr_list.len() as u64);
        let mut attr_bloom = Bloom::with_capacity(attr_list.len());
        for h in &attr_list {
            out.extend_from_slice(&h.to_le_bytes());
            attr_bloom.insert(attr_key(*h));
        }
        b.section(Section::Attributes as u32, &out)?;
        out.clear();
        attr_bloom.encode(&mut out);
        b.section(Section::AttributeFilter as u32, &out)?;
        for (n, cols) in &pages {
            let cols: Vec<&[u8]> = cols.iter().map(Vec::as_slice).collect();
            b.page(*n, &cols)?;
        }
        let mut stats = Stats {
            min_time: u64::MAX,
            min_duration: u64::MAX,
            ..Stats::default()
        };
        for s in rows {
            stats.min_time = stats.min_time.min(s.start);
            stats.max_time = stats.max_time.max(s.start);
            stats.min_duration = stats.min_duration.min(s.duration());
            stats.max_duration = stats.max_duration.max(s.duration());
        }
        Ok(Some(b.finish(stats, lsn)))
    }
}

fn encode_page<'a>(rows: &[&'a Summary], t: &mut Tables<'a>) -> [Vec<u8>; COLUMNS] {
    let mut cols: [Vec<u8>; COLUMNS] = Default::default();
    let min = |f: fn(&Summary) -> u64| rows.iter().map(|s| f(s)).min().unwrap_or(0);
    let (v0, s0, l0) = (min(|s| s.version), min(|s| s.start), min(|s| s.max_lsn));
    put_varint(&mut cols[Col::Version as usize], v0);
    put_varint(&mut cols[Col::Start as usize], s0);
    put_varint(&mut cols[Col::MaxLsn as usize], l0);
    for (i, s) in rows.iter().enumerate() {
        // A later version of the trace follows in this block (pages end at a trace).
        let superseded = rows.get(i + 1).is_some_and(|n| n.trace_id == s.trace_id);
        let mut put = |c: Col, v: u64| put_varint(&mut cols[c as usize], v);
        put(Col::Version, s.version - v0);
        put(
            Col::State,
            s.state as u64 | if superseded { SUPERSEDED } else { 0 },
        );
        put(Col::Start, s.start - s0);
        put(Col::Duration, zigzag(s.end.wrapping_sub(s.start) as i64));
        put(Col::SpanCount, s.span_count);
        put(Col::ErrorCount, s.error_count);
        put(Col::LateSpans, s.late_spans);
        put(Col::MaxLsn, s.max_lsn - l0);
        let root_service = t.string(&s.root_service);
        let root_operation = t.string(&s.root_operation);
        let services: Vec<u32> = s.services.iter().map(|v| t.service(v)).collect();
        let ops: Vec<u32> = s.ops.iter().map(|(a, b)| t.pair(a, b)).collect();
        let mut put = |c: Col, v: u64| put_varint(&mut cols[c as usize], v);
        put(Col::RootService, u64::from(root_service));
        put(Col::RootOperation, u64::from(root_operation));
        put(Col::Services, services.len() as u64);
        for id in services {
            put(Col::Services, u64::from(id));
        }
        put(Col::Ops, ops.len() as u64);
        for id in ops {
            put(Col::Ops, u64::from(id));
        }
        put(Col::Attrs, s.attrs.len() as u64);
        for h in &s.attrs {
            let id = t.attrs.get(h).copied().unwrap_or(0);
            put(Col::Attrs, u64::from(id));
        }
    }
    cols
}
