//! The acknowledged position on disk (`ack.pos`), and the stretches the collector
//! acknowledged beyond it (`delivered`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use lookout_ingest::fsutil;

use super::pos::Pos;

pub(super) const ACK_FILE: &str = "ack.pos";

/// The acknowledged position persisted in `dir`, if readable.
pub fn read_ack_file(dir: &Path) -> Option<Pos> {
    read_ack(dir)
}

pub(super) fn read_ack(dir: &Path) -> Option<Pos> {
    let b = fs::read(dir.join(ACK_FILE)).ok()?;
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    if crc32fast::hash(&b[..16]) != crc {
        return None;
    }
    let mut seg = [0u8; 8];
    let mut off = [0u8; 8];
    seg.copy_from_slice(&b[..8]);
    off.copy_from_slice(&b[8..16]);
    Some(Pos {
        seg: u64::from_le_bytes(seg),
        offset: u64::from_le_bytes(off),
    })
}

pub(super) fn write_ack(dir: &Path, pos: Pos) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&pos.seg.to_le_bytes());
    b.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.pos.tmp");
    let mut f = fsutil::create_file(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(ACK_FILE))?;
    File::open(dir)?.sync_all()
}

pub(super) const DELIVERED_FILE: &str = "delivered";

/// Records `(start, end]` the collector acknowledged beyond the ack position: a batch
/// that completed out of order, behind one still in flight at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// End of the record before the first one of the stretch.
    pub start: Pos,
    /// End of the stretch's last record.
    pub end: Pos,
    /// Items in the stretch.
    pub items: u64,
}

impl Delivered {
    /// Whether the record ending at `end` lies in this stretch.
    pub fn holds(&self, end: Pos) -> bool {
        self.start < end && end <= self.end
    }
}

/// `ack seg, ack offset, count, count × (start seg, start offset, end seg, end offset,
/// items)`, all u64 little-endian, then a CRC32 of those bytes.
pub(super) fn encode_delivered(ack: Pos, ranges: &[Delivered]) -> Vec<u8> {
    let mut b = Vec::with_capacity(28 + ranges.len() * 40);
    for v in [ack.seg, ack.offset, ranges.len() as u64] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for r in ranges {
        for v in [
            r.start.seg,
            r.start.offset,
            r.end.seg,
            r.end.offset,
            r.items,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

pub(super) fn decode_delivered(b: &[u8]) -> Option<(Pos, Vec<Delivered>)> {
    let (body, crc) = b.split_at_checked(b.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc || body.len() % 8 != 0 {
        return None;
    }
    let words: Vec<u64> = body
        .chunks_exact(8)
        .map(|c| c.try_into().map(u64::from_le_bytes))
        .collect::<Result<_, _>>()
        .ok()?;
    let (head, rest) = words.split_at_checked(3)?;
    let n = usize::try_from(head[2]).ok()?;
    if rest.len() != n.checked_mul(5)? {
        return None;
    }
    let ack = Pos {
        seg: head[0],
        offset: head[1],
    };
    let ranges = rest
        .chunks_exact(5)
        .map(|w| Delivered {
            start: Pos {
                seg: w[0],
                offset: w[1],
            },
            end: Pos {
                seg: w[2],
                offset: w[3],
            },
            items: w[4],
        })
        .collect();
    Some((ack, ranges))
}
