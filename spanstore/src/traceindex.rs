//! The trace index every block kind keeps: each distinct trace id, sorted, with its row
//! count, and a Bloom filter of those ids ([`crate::bloom`]).
//!
//! ```text
//! index := count id[16]* rows*    -- varints but the ids
//! ```

use crate::bloom::{trace_hash, Bloom};
use crate::codec::{put_varint, Cursor, Malformed};

/// The index and filter sections for `ids`, the trace id of each row in row order (rows
/// of a trace next to each other, traces sorted).
pub fn encode<'a>(ids: impl Iterator<Item = &'a [u8; 16]>) -> (Vec<u8>, Vec<u8>) {
    let mut distinct: Vec<[u8; 16]> = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    for id in ids {
        if distinct.last() == Some(id) {
            if let Some(c) = counts.last_mut() {
                *c += 1;
            }
        } else {
            distinct.push(*id);
            counts.push(1);
        }
    }
    let mut out = Vec::with_capacity(distinct.len() * 18 + 8);
    put_varint(&mut out, distinct.len() as u64);
    for id in &distinct {
        out.extend_from_slice(id);
    }
    for c in counts {
        put_varint(&mut out, c);
    }
    let mut bloom = Bloom::with_capacity(distinct.len());
    for id in &distinct {
        bloom.insert(trace_hash(id));
    }
    let mut filter = Vec::with_capacity(bloom.encoded_len());
    bloom.encode(&mut filter);
    (out, filter)
}

/// The sorted trace ids and each one's first row (plus `rows`, the block's total), checked
/// against the block's `rows`.
pub fn decode(raw: &[u8], rows: u64) -> Result<(Vec<[u8; 16]>, Vec<u64>), Malformed> {
    let mut c = Cursor::new(raw);
    let n = c.count(17)?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(c.array::<16>()?);
    }
    let mut starts = Vec::with_capacity(n + 1);
    let mut at = 0u64;
    starts.push(0);
    for _ in 0..n {
        at = at.saturating_add(c.varint()?);
        starts.push(at);
    }
    if at != rows || !ids.windows(2).all(|w| w[0] < w[1]) || !c.is_empty() {
        return Err(Malformed {
            what: "trace index does not match the rows",
            at: 0,
        });
    }
    Ok((ids, starts))
}
