//! Where consumed records came from: in cluster mode each WAL record of a message read
//! from the stream carries its partition and stream sequence, so a message delivered
//! again (its acknowledgement lost in a crash) is recognised and not applied twice.
//!
//! Record layout: the tag is [`ORIGIN`] plus the signal's tag, and the payload starts with
//! `partition: u32 | sequence: u64` (little-endian) before the export request. The
//! sequences written are remembered exactly (not as a high-water mark: after a partition
//! moved, an older message the previous owner took and never acknowledged arrives after
//! newer ones), those of the records in the log at start-up and those written since, the
//! newest [`REMEMBERED`] per partition.

use std::collections::{BTreeMap, BTreeSet};

use lookout_ingest::signal::Signal;
use parking_lot::Mutex;

/// Tag bit of a record that carries its origin.
pub const ORIGIN: u8 = lookout_ingest::seglog::framings::WAL_ORIGIN_TAG;
/// Bytes of the origin before the export request.
pub const ORIGIN_LEN: usize = 12;

/// A message's place in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Partition.
    pub partition: u32,
    /// Stream sequence of the message.
    pub sequence: u64,
}

impl Origin {
    /// The bytes written before the payload.
    pub fn encode(self) -> [u8; ORIGIN_LEN] {
        let mut b = [0u8; ORIGIN_LEN];
        b[..4].copy_from_slice(&self.partition.to_le_bytes());
        b[4..].copy_from_slice(&self.sequence.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Origin> {
        Some(Origin {
            partition: u32::from_le_bytes(b.get(..4)?.try_into().ok()?),
            sequence: u64::from_le_bytes(b.get(4..ORIGIN_LEN)?.try_into().ok()?),
        })
    }
}

/// What a record's tag and payload hold: an export request of `signal`, from `origin`
/// when consumed from the stream.
pub struct Tagged<'a> {
    /// Its signal.
    pub signal: Signal,
    /// Where it came from.
    pub origin: Option<Origin>,
    /// The export request.
    pub payload: &'a [u8],
}

/// Read a record's tag and payload; `None` for an unknown tag or a short payload.
pub fn untag(tag: u8, payload: &[u8]) -> Option<Tagged<'_>> {
    if tag & ORIGIN != 0 {
        let signal = Signal::from_tag(tag & !ORIGIN)?;
        let origin = Origin::decode(payload)?;
        return Some(Tagged {
            signal,
            origin: Some(origin),
            payload: &payload[ORIGIN_LEN..],
        });
    }
    Some(Tagged {
        signal: Signal::from_tag(tag)?,
        origin: None,
        payload,
    })
}

/// Sequences remembered per partition: far more messages than are ever outstanding
/// (taken and not acknowledged) at once.
pub const REMEMBERED: usize = 50_000;

/// The stream sequences written to the WAL, per partition.
#[derive(Debug, Default)]
pub struct Origins {
    written: Mutex<BTreeMap<u32, BTreeSet<u64>>>,
}

impl Origins {
    /// Whether the message at `origin` is in the WAL.
    pub fn holds(&self, origin: Origin) -> bool {
        self.written
            .lock()
            .get(&origin.partition)
            .is_some_and(|s| s.contains(&origin.sequence))
    }

    /// Note that `origin` is in the WAL.
    pub fn note(&self, origin: Origin) {
        let mut w = self.written.lock();
        let set = w.entry(origin.partition).or_default();
        set.insert(origin.sequence);
        while set.len() > REMEMBERED {
            set.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn tags_read_back_and_sequences_are_remembered_exactly() {
        let o = Origin {
            partition: 7,
            sequence: 1 << 40,
        };
        let mut payload = o.encode().to_vec();
        payload.extend_from_slice(b"req");
        let t = untag(ORIGIN | Signal::Logs.tag(), &payload).unwrap();
        assert_eq!(
            (t.signal, t.origin, t.payload),
            (Signal::Logs, Some(o), &b"req"[..])
        );
        let t = untag(Signal::Traces.tag(), b"plain").unwrap();
        assert_eq!(
            (t.signal, t.origin, t.payload),
            (Signal::Traces, None, &b"plain"[..])
        );
        assert!(untag(ORIGIN | 9, &payload).is_none());
        assert!(untag(ORIGIN | 1, &payload[..5]).is_none());

        let origins = Origins::default();
        let at = |partition, sequence| Origin {
            partition,
            sequence,
        };
        origins.note(at(2, 10));
        origins.note(at(2, 30));
        // Below the highest but never written: an older message of a moved partition.
        assert!(!origins.holds(at(2, 20)));
        assert!(origins.holds(at(2, 10)) && origins.holds(at(2, 30)));
        assert!(!origins.holds(at(3, 10)));
        for s in 0..REMEMBERED as u64 {
            origins.note(at(4, 100 + s));
        }
        origins.note(at(4, 1));
        assert!(!origins.holds(at(4, 1)), "the oldest is forgotten first");
        assert!(origins.holds(at(4, 100 + REMEMBERED as u64 - 1)));
    }
}
