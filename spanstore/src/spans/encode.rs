//! Sorting a [`SpanBuffer`] by trace and start, and writing it as a block.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;

use crate::block::{replaces_section, BlockBuilder, Kind, Stats, SECTION_REPLACES};
use crate::codec::{put_bytes, put_varint, zigzag};
use crate::traceindex;

use super::buffer::SpanBuffer;
use super::{Col, Section, COLUMNS, MAX_PAGE_ROWS, PAGE_ROWS};

impl SpanBuffer {
    /// Encode every row as one block (the file's bytes), sorted by trace id then start,
    /// covering the WAL through `lsn`. `None` when the buffer is empty.
    pub fn finish(&self, lsn: u64) -> std::io::Result<Option<Vec<u8>>> {
        self.finish_replacing(lsn, &[])
    }

    /// [`Self::finish`] for a compacted block that replaces blocks `replaces`.
    pub fn finish_replacing(&self, lsn: u64, replaces: &[u64]) -> std::io::Result<Option<Vec<u8>>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        order.sort_unstable_by_key(|&r| {
            let r = r as usize;
            (self.trace_ids[r], self.starts[r], r)
        });
        let mut b = BlockBuilder::new(Kind::Spans);
        if !replaces.is_empty() {
            b.section(SECTION_REPLACES, &replaces_section(replaces))?;
        }
        b.section(Section::Dictionary as u32, &self.encode_dictionary())?;
        b.section(
            Section::Resources as u32,
            &encode_table(&self.resources.entries),
        )?;
        b.section(Section::Scopes as u32, &encode_table(&self.scopes.entries))?;
        let (traces, filter) =
            traceindex::encode(order.iter().map(|&r| &self.trace_ids[r as usize]));
        b.section(Section::Traces as u32, &traces)?;
        b.section(Section::Filter as u32, &filter)?;
        let mut page = PageEncoder::default();
        let mut at = 0;
        while at < order.len() {
            let end = self.page_end(&order, at);
            page.encode(self, &order[at..end]);
            let cols: Vec<&[u8]> = page.cols.iter().map(Vec::as_slice).collect();
            b.page((end - at) as u32, &cols)?;
            at = end;
        }
        let (mut min_d, mut max_d) = (u64::MAX, 0);
        for (s, e) in self.starts.iter().zip(&self.ends) {
            let d = e.saturating_sub(*s);
            min_d = min_d.min(d);
            max_d = max_d.max(d);
        }
        let stats = self.stats();
        Ok(Some(b.finish(
            Stats {
                min_time: stats.min_start,
                max_time: stats.max_start,
                min_duration: min_d,
                max_duration: max_d,
            },
            lsn,
        )))
    }

    /// Where the page starting at sorted row `at` ends: at the first trace boundary past
    /// [`PAGE_ROWS`] rows, or at [`MAX_PAGE_ROWS`].
    fn page_end(&self, order: &[u32], at: usize) -> usize {
        let mut end = (at + PAGE_ROWS).min(order.len());
        let hard = (at + MAX_PAGE_ROWS).min(order.len());
        while end < hard
            && self.trace_ids[order[end] as usize] == self.trace_ids[order[end - 1] as usize]
        {
            end += 1;
        }
        end
    }

    fn encode_dictionary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.dict.bytes / 2);
        put_varint(&mut out, self.dict.len() as u64);
        for s in self.dict.strings() {
            put_bytes(&mut out, s.as_bytes());
        }
        out
    }
}

fn encode_table(entries: &[(Vec<u8>, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, entries.len() as u64);
    for (encoded, schema_url) in entries {
        put_bytes(&mut out, encoded);
        put_bytes(&mut out, schema_url.as_bytes());
    }
    out
}

/// Column buffers reused from page to page.
#[derive(Default)]
struct PageEncoder {
    cols: [Vec<u8>; COLUMNS],
    /// Span id → position within the current trace's rows of this page.
    in_trace: HashMap<[u8; 8], u32, FxBuildHasher>,
}

impl PageEncoder {
    fn encode(&mut self, buf: &SpanBuffer, rows: &[u32]) {
        for c in &mut self.cols {
            c.clear();
        }
        let cols = &mut self.cols;
        let earliest = rows
            .iter()
            .map(|&r| buf.starts[r as usize])
            .min()
            .unwrap_or(0);
        put_varint(&mut cols[Col::Start as usize], earliest);
        let mut prev_start = 0u64;
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            let new_trace = i == 0 || buf.trace_ids[r] != buf.trace_ids[rows[i - 1] as usize];
            if new_trace {
                // Every span of the trace in this page, so that a parent that started
                // after its child (clock skew) is found too.
                self.in_trace.clear();
                let id = buf.trace_ids[r];
                for (j, &o) in rows[i..].iter().enumerate() {
                    if buf.trace_ids[o as usize] != id {
                        break;
                    }
                    self.in_trace
                        .entry(buf.span_ids[o as usize])
                        .or_insert(j as u32);
                }
            }
            cols[Col::SpanId as usize].extend_from_slice(&buf.span_ids[r]);
            let parent = buf.parents[r];
            let p = &mut cols[Col::Parent as usize];
            if parent == [0; 8] {
                put_varint(p, 0);
            } else if let Some(&j) = self.in_trace.get(&parent) {
                put_varint(p, 2 + u64::from(j));
            } else {
                put_varint(p, 1);
                cols[Col::ParentRaw as usize].extend_from_slice(&parent);
            }
            let start = buf.starts[r];
            let delta = if new_trace {
                zigzag(start.wrapping_sub(earliest) as i64)
            } else {
                // Sorted by start within a trace.
                start - prev_start
            };
            put_varint(&mut cols[Col::Start as usize], delta);
            prev_start = start;
            put_varint(
                &mut cols[Col::Duration as usize],
                zigzag(buf.ends[r].wrapping_sub(start) as i64),
            );
            put_varint(&mut cols[Col::Name as usize], u64::from(buf.names[r]));
            put_varint(
                &mut cols[Col::Kind as usize],
                zigzag(i64::from(buf.kinds[r])),
            );
            put_varint(&mut cols[Col::Status as usize], buf.statuses[r]);
            put_varint(
                &mut cols[Col::StatusMessage as usize],
                u64::from(buf.status_messages[r]),
            );
            put_varint(
                &mut cols[Col::Resource as usize],
                u64::from(buf.resource_ids[r]),
            );
            put_varint(&mut cols[Col::Scope as usize], u64::from(buf.scope_ids[r]));
            let attrs = buf.attr_range(r);
            put_varint(&mut cols[Col::AttrKeys as usize], attrs.len() as u64);
            for a in attrs {
                put_varint(
                    &mut cols[Col::AttrKeys as usize],
                    u64::from(buf.attr_keys[a]),
                );
                cols[Col::AttrValues as usize].extend_from_slice(buf.attr_value(a));
            }
            put_bytes(&mut cols[Col::Extras as usize], buf.extras_of(r));
        }
    }
}
