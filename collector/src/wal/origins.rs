//! Where consumed records came from: in cluster mode each WAL record of a message read
//! from the stream carries its partition and stream sequence, so a message delivered
//! again (its acknowledgement lost in a crash) is recognised and not applied twice.
//!
//! Record layout: the tag is [`ORIGIN`] plus the signal's tag, and the payload starts with
//! `partition: u32 | sequence: u64` (little-endian) before the export request. Every new
//! segment starts with a [`CURSOR`] record listing the highest sequence of every partition
//! so far (`count: u32`, then `partition: u32 | sequence: u64` each), so the newest
//! segment alone, which is never deleted, tells how far each partition was written.

use std::collections::BTreeMap;

use lookout_ingest::signal::Signal;
use parking_lot::Mutex;

/// Tag bit of a record that carries its origin.
pub const ORIGIN: u8 = lookout_ingest::seglog::framings::WAL_ORIGIN_TAG;
/// Tag of a cursor record.
pub const CURSOR: u8 = lookout_ingest::seglog::framings::WAL_CURSOR_TAG;
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

/// What a record's tag and payload hold.
pub enum Tagged<'a> {
    /// An export request of `signal`, from `origin` when consumed from the stream.
    Data {
        /// Its signal.
        signal: Signal,
        /// Where it came from.
        origin: Option<Origin>,
        /// The export request.
        payload: &'a [u8],
    },
    /// The highest sequence of each partition before this segment.
    Cursor(Vec<Origin>),
}

/// Read a record's tag and payload; `None` for an unknown tag or a short payload.
pub fn untag(tag: u8, payload: &[u8]) -> Option<Tagged<'_>> {
    if tag == CURSOR {
        let n = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let body = payload.get(4..)?;
        if body.len() != n.checked_mul(ORIGIN_LEN)? {
            return None;
        }
        return Some(Tagged::Cursor(
            body.chunks_exact(ORIGIN_LEN)
                .filter_map(Origin::decode)
                .collect(),
        ));
    }
    if tag & ORIGIN != 0 {
        let signal = Signal::from_tag(tag & !ORIGIN)?;
        let origin = Origin::decode(payload)?;
        return Some(Tagged::Data {
            signal,
            origin: Some(origin),
            payload: &payload[ORIGIN_LEN..],
        });
    }
    Some(Tagged::Data {
        signal: Signal::from_tag(tag)?,
        origin: None,
        payload,
    })
}

/// The highest stream sequence written to the WAL, per partition.
#[derive(Debug, Default)]
pub struct Origins {
    written: Mutex<BTreeMap<u32, u64>>,
}

impl Origins {
    /// The highest sequence of `partition` in the WAL (0: none).
    pub fn written(&self, partition: u32) -> u64 {
        self.written.lock().get(&partition).copied().unwrap_or(0)
    }

    /// Note that `origin` is in the WAL.
    pub fn note(&self, origin: Origin) {
        let mut w = self.written.lock();
        let e = w.entry(origin.partition).or_insert(0);
        *e = (*e).max(origin.sequence);
    }

    /// The payload of a cursor record, or `None` when no record has an origin.
    pub fn cursor_payload(&self) -> Option<Vec<u8>> {
        let w = self.written.lock();
        if w.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(4 + w.len() * ORIGIN_LEN);
        out.extend_from_slice(&(w.len() as u32).to_le_bytes());
        for (&partition, &sequence) in w.iter() {
            out.extend_from_slice(
                &Origin {
                    partition,
                    sequence,
                }
                .encode(),
            );
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn tags_and_cursors_read_back() {
        let o = Origin {
            partition: 7,
            sequence: 1 << 40,
        };
        let mut payload = o.encode().to_vec();
        payload.extend_from_slice(b"req");
        match untag(ORIGIN | Signal::Logs.tag(), &payload).unwrap() {
            Tagged::Data {
                signal,
                origin,
                payload,
            } => {
                assert_eq!(
                    (signal, origin, payload),
                    (Signal::Logs, Some(o), &b"req"[..])
                );
            }
            Tagged::Cursor(_) => panic!("not a cursor"),
        }
        assert!(untag(ORIGIN | 9, &payload).is_none());
        assert!(untag(ORIGIN | 1, &payload[..5]).is_none());

        let origins = Origins::default();
        assert!(origins.cursor_payload().is_none());
        origins.note(o);
        origins.note(Origin {
            partition: 7,
            sequence: 3,
        });
        origins.note(Origin {
            partition: 2,
            sequence: 9,
        });
        let c = origins.cursor_payload().unwrap();
        match untag(CURSOR, &c).unwrap() {
            Tagged::Cursor(v) => assert_eq!(
                v,
                vec![
                    Origin {
                        partition: 2,
                        sequence: 9
                    },
                    o
                ]
            ),
            Tagged::Data { .. } => panic!("a cursor"),
        }
        assert!(untag(CURSOR, &c[..c.len() - 1]).is_none());
    }
}
