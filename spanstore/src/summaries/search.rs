//! Reading a [`SummaryStore`]: the newest version of a trace, searches that answer with the
//! newest version of each matching trace, and the service and operation names.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

use crate::block::BlockError;
use crate::store::BlockFile;

use super::{Summaries, Summary, SummaryQuery, SummaryStore};

/// The newest version of a trace, and the blocks that could not be read for it.
#[derive(Debug, Default)]
pub struct SummaryLookup {
    /// The newest version found.
    pub found: Option<Summary>,
    /// Blocks that may hold a newer version but could not be read.
    pub unreadable: Vec<Arc<BlockError>>,
}

/// The traces a search found, and the blocks it could not read.
#[derive(Debug, Default)]
pub struct SummarySearch {
    /// The newest version of each matching trace, latest trace start first.
    pub found: Vec<Summary>,
    /// Blocks that could not be read.
    pub unreadable: Vec<Arc<BlockError>>,
}

/// A version that matched, and where it is.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    version: u64,
    start: u64,
    /// Index of its block in the snapshot, `None` in memory.
    block: Option<usize>,
    row: u64,
}

impl SummaryStore {
    /// The newest version of `trace_id`: in the head, in a head being cut, or the newest
    /// of the blocks that hold the trace (compaction rewrites blocks, so block order says
    /// nothing about versions).
    pub fn latest(&self, trace_id: &[u8; 16]) -> SummaryLookup {
        let snap =
            self.snapshot(|bufs| bufs.iter().rev().find_map(|b| b.latest(trace_id)).cloned());
        let mut out = SummaryLookup {
            found: snap.memory,
            unreadable: snap.unreadable,
        };
        if out.found.is_some() {
            // The heads hold the latest writes.
            return out;
        }
        for b in snap.blocks.iter().filter(|b| b.block.may_contain(trace_id)) {
            match b.file().and_then(|f| b.block.latest(&f, trace_id)) {
                Ok(Some(s)) => {
                    if out.found.as_ref().is_none_or(|f| s.version > f.version) {
                        out.found = Some(s);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "a summary block cannot be read; the trace is answered without it");
                    out.unreadable.push(Arc::new(e));
                }
            }
        }
        out
    }

    /// The newest version of each trace whose newest version matches `q`, latest trace
    /// start first, at most `limit`.
    pub fn search(&self, q: &SummaryQuery, limit: usize) -> SummarySearch {
        let limit = limit.max(1);
        // Per block at most this many hits: some may turn out superseded.
        let keep = limit.saturating_mul(4).saturating_add(16);
        let snap = self.snapshot(|bufs| {
            let mut hits: Vec<Summary> = Vec::new();
            let mut newest: HashMap<[u8; 16], u64, FxBuildHasher> = HashMap::default();
            for b in bufs {
                for s in &b.rows {
                    let v = newest.entry(s.trace_id).or_default();
                    *v = (*v).max(s.version);
                }
                hits.extend(b.search(q).cloned());
            }
            (hits, newest)
        });
        let (memory_hits, newest_in_memory) = snap.memory;
        let blocks = &snap.blocks;
        let mut out = SummarySearch {
            found: Vec::new(),
            unreadable: snap.unreadable,
        };
        let mut files = Files::new(blocks);
        let mut best: HashMap<[u8; 16], Candidate, FxBuildHasher> = HashMap::default();
        let offer = |best: &mut HashMap<[u8; 16], Candidate, FxBuildHasher>, id, c: Candidate| {
            let e = best.entry(id).or_insert(c);
            if c.version > e.version {
                *e = c;
            }
        };
        for (i, s) in memory_hits.iter().enumerate() {
            let c = Candidate {
                version: s.version,
                start: s.start,
                block: None,
                row: i as u64,
            };
            offer(&mut best, s.trace_id, c);
        }
        // Blocks holding the latest trace starts first: once `limit` traces are confirmed
        // that started after anything the unread blocks hold, the rest cannot change the
        // answer.
        let mut order: Vec<usize> = (0..blocks.len())
            .filter(|&i| {
                let st = &blocks[i].footer().stats;
                st.max_time >= q.from_ns && st.min_time <= q.to_ns
            })
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(blocks[i].footer().stats.max_time));
        let mut confirmed = None;
        for (k, &i) in order.iter().enumerate() {
            let b = &blocks[i];
            match files.get(i).and_then(|f| b.block.search(f, q, keep)) {
                Ok(hits) => {
                    for h in hits {
                        let c = Candidate {
                            version: h.version,
                            start: h.start,
                            block: Some(i),
                            row: h.row,
                        };
                        offer(&mut best, h.trace_id, c);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a summary block cannot be read; the search is answered without it");
                    out.unreadable.push(Arc::new(e));
                }
            }
            let Some(&next) = order.get(k + 1) else {
                break;
            };
            let unread = blocks[next].footer().stats.max_time;
            if best.values().filter(|c| c.start > unread).count() < limit {
                continue;
            }
            let c = confirm(
                &best,
                limit,
                &newest_in_memory,
                blocks,
                &mut files,
                &mut out,
            );
            if c.len() >= limit && c[limit - 1].1.start > unread {
                confirmed = Some(c);
                break;
            }
        }
        let confirmed = confirmed.unwrap_or_else(|| {
            confirm(
                &best,
                limit,
                &newest_in_memory,
                blocks,
                &mut files,
                &mut out,
            )
        });
        // Whole rows of the confirmed, each block's pages decoded once.
        let mut by_block: HashMap<usize, Vec<u64>, FxBuildHasher> = HashMap::default();
        for (_, c) in &confirmed {
            if let Some(b) = c.block {
                by_block.entry(b).or_default().push(c.row);
            }
        }
        let mut rows: HashMap<([u8; 16], u64), Summary, FxBuildHasher> = HashMap::default();
        for (b, mut want) in by_block {
            want.sort_unstable();
            want.dedup();
            match files.get(b).and_then(|f| blocks[b].block.rows_at(f, &want)) {
                Ok(found) => rows.extend(found.into_iter().map(|s| ((s.trace_id, s.version), s))),
                Err(e) => out.unreadable.push(Arc::new(e)),
            }
        }
        for (id, c) in confirmed {
            let s = match c.block {
                None => memory_hits.get(c.row as usize).cloned(),
                Some(_) => rows.remove(&(id, c.version)),
            };
            out.found.extend(s);
        }
        out
    }
}

/// The block files a search opened, each opened once.
struct Files<'a> {
    blocks: &'a [Arc<BlockFile<Summaries>>],
    open: Vec<Option<std::fs::File>>,
}

impl<'a> Files<'a> {
    fn new(blocks: &'a [Arc<BlockFile<Summaries>>]) -> Self {
        Self {
            blocks,
            open: blocks.iter().map(|_| None).collect(),
        }
    }

    fn get(&mut self, i: usize) -> Result<&std::fs::File, BlockError> {
        if self.open[i].is_none() {
            self.open[i] = Some(self.blocks[i].file()?);
        }
        self.open[i]
            .as_ref()
            .ok_or_else(|| BlockError::new(&self.blocks[i].path, std::io::Error::other("not open")))
    }
}

/// The best `limit` candidates, latest start first, that no later version supersedes.
fn confirm(
    best: &HashMap<[u8; 16], Candidate, FxBuildHasher>,
    limit: usize,
    newest_in_memory: &HashMap<[u8; 16], u64, FxBuildHasher>,
    blocks: &[Arc<BlockFile<Summaries>>],
    files: &mut Files<'_>,
    out: &mut SummarySearch,
) -> Vec<([u8; 16], Candidate)> {
    let mut ranked: Vec<([u8; 16], Candidate)> = best.iter().map(|(k, v)| (*k, *v)).collect();
    ranked.sort_unstable_by(|a, b| b.1.start.cmp(&a.1.start).then(a.0.cmp(&b.0)));
    let mut confirmed = Vec::with_capacity(limit);
    for (id, c) in ranked {
        if confirmed.len() >= limit {
            break;
        }
        if newest_in_memory.get(&id).is_some_and(|&v| v > c.version) {
            continue;
        }
        // Versions in memory are newer than any block's; a block's may be newer than
        // another's whatever their order.
        let mut superseded = false;
        for (j, b) in blocks.iter().enumerate() {
            if c.block.is_none() || c.block == Some(j) || !b.block.may_contain(&id) {
                continue;
            }
            match files.get(j).and_then(|f| b.block.latest(f, &id)) {
                Ok(Some(s)) if s.version > c.version => {
                    superseded = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => out.unreadable.push(Arc::new(e)),
            }
        }
        if !superseded {
            confirmed.push((id, c));
        }
    }
    confirmed
}

impl SummaryStore {
    /// Every service that took part in a stored trace, and the blocks that could not be
    /// opened (their names are unknown).
    pub fn services(&self) -> (BTreeSet<String>, Vec<Arc<BlockError>>) {
        self.names(|s, _| Some(s))
    }

    /// Every operation of `service` in stored traces, and the blocks that could not be
    /// opened.
    pub fn operations(&self, service: &str) -> (BTreeSet<String>, Vec<Arc<BlockError>>) {
        self.names(|s, o| o.filter(|_| s == service))
    }

    fn names(
        &self,
        pick: impl for<'a> Fn(&'a str, Option<&'a str>) -> Option<&'a str>,
    ) -> (BTreeSet<String>, Vec<Arc<BlockError>>) {
        let pick = &pick;
        let snap = self.snapshot(|bufs| {
            bufs.iter()
                .flat_map(|b| b.names())
                .filter_map(|(s, o)| pick(s, o))
                .map(str::to_string)
                .collect::<BTreeSet<String>>()
        });
        let mut all = snap.memory;
        for b in &snap.blocks {
            let services = b.block.services().map(|s| (s, None));
            let pairs = b.block.pairs().map(|(s, o)| (s, Some(o)));
            for (s, o) in services.chain(pairs) {
                if let Some(v) = pick(s, o) {
                    if !all.contains(v) {
                        all.insert(v.to_string());
                    }
                }
            }
        }
        (all, snap.unreadable)
    }
}
