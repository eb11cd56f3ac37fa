//! Trace ids completed lately, so that a late span can tell it continues a stored trace
//! without an index lookup for every new trace.

use std::time::{Duration, Instant};

/// Bits of each generation of the completed-trace filter (4 MiB).
const BLOOM_BITS: usize = 1 << 25;
/// Probes per id.
const BLOOM_PROBES: u64 = 4;
/// Age of a filter generation before it is replaced.
const BLOOM_GENERATION: Duration = Duration::from_secs(300);
/// Ids per generation before it is replaced early: 1.6M ids in 2^25 bits with 4 probes
/// give 0.1 % false positives. Without the cap a busy collector (12k traces/s fill a
/// generation with 3.6M ids in 5 minutes) sent ~3 % of new traces to an index lookup.
const BLOOM_CAPACITY: u64 = 1_600_000;

/// Trace ids completed in the last 5 to 10 minutes (or the last 1.6M to 3.2M traces, when
/// more complete in that time): two Bloom filter generations. A late span whose trace is
/// in it is checked against the stored trace (false positives cost a lookup, never a
/// wrong answer); older late spans are recognised by their old start time.
pub(super) struct RecentlyCompleted {
    current: Vec<u64>,
    previous: Vec<u64>,
    since: Instant,
    /// Ids inserted into `current`.
    count: u64,
}

impl RecentlyCompleted {
    pub(super) fn new() -> Self {
        Self {
            current: vec![0; BLOOM_BITS / 64],
            previous: vec![0; BLOOM_BITS / 64],
            since: Instant::now(),
            count: 0,
        }
    }

    fn probes(id: &[u8; 16]) -> impl Iterator<Item = usize> {
        let (h1, h2) = crate::store::traces::halves(id);
        // Trace ids are random; their halves serve as the two hashes (odd step).
        (0..BLOOM_PROBES)
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2 | 1)) % BLOOM_BITS as u64) as usize)
    }

    pub(super) fn insert(&mut self, id: &[u8; 16]) {
        if self.count >= BLOOM_CAPACITY || self.since.elapsed() >= BLOOM_GENERATION {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.iter_mut().for_each(|w| *w = 0);
            self.since = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        for b in Self::probes(id) {
            if let Some(w) = self.current.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
    }

    pub(super) fn contains(&self, id: &[u8; 16]) -> bool {
        let has = |bits: &[u64]| {
            Self::probes(id).all(|b| bits.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0))
        };
        has(&self.current) || has(&self.previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(seed: u64) -> impl Iterator<Item = [u8; 16]> {
        // splitmix64: random-looking ids, like W3C trace ids.
        let mut x = seed;
        std::iter::repeat_with(move || {
            let mut next = || {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&next().to_be_bytes());
            id[8..].copy_from_slice(&next().to_be_bytes());
            id
        })
    }

    #[test]
    fn completed_filter_rotates_by_count_and_keeps_false_positives_rare() {
        let mut c = RecentlyCompleted::new();
        let full = BLOOM_CAPACITY as usize;
        for id in ids(1).take(full) {
            c.insert(&id);
        }
        assert!(ids(1).take(1000).all(|id| c.contains(&id)));
        // Two full generations: every id of both is found, and ids never inserted are
        // (falsely) found at about the design rate of 0.1 % per generation.
        for id in ids(2).take(full) {
            c.insert(&id);
        }
        assert_eq!(
            c.count, BLOOM_CAPACITY,
            "the first generation rotated at capacity"
        );
        assert!(
            ids(1).take(1000).all(|id| c.contains(&id)),
            "previous generation"
        );
        assert!(
            ids(2).take(1000).all(|id| c.contains(&id)),
            "current generation"
        );
        let tries = 200_000;
        let false_hits = ids(3).take(tries).filter(|id| c.contains(id)).count();
        assert!(false_hits * 1000 / tries <= 3, "{false_hits} of {tries}");
        // A third generation pushes out the first.
        for id in ids(4).take(full) {
            c.insert(&id);
        }
        let kept = ids(1).take(1000).filter(|id| c.contains(id)).count();
        assert!(kept < 20, "{kept} of the oldest generation still found");
    }
}
