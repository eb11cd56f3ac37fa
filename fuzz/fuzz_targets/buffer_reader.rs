//! The agent's disk buffer on arbitrary segment files: the segment reader and resync
//! (`lookout_ingest::seglog` in the buffer framing), the whole-segment scan and repair
//! (`buffer::scan`, as used by `lookout-agent buffer inspect|verify --repair`), and
//! start-up recovery plus reading everything back (`buffer::Buffer::open`,
//! `Reader::next`).
//!
//! Input: a selector byte, an `ack.pos` (segment byte, u16 offset; none when the segment
//! byte is 0), then segment data.
//! - selector bit 0 clear, raw: up to `1 + (sel >> 1) % 3` segments, each but the last
//!   prefixed by a little-endian u16 length.
//! - selector bit 0 set, structured: records built by the harness with correct checksums,
//!   each as `ctl: u8 [seq: u64] [tag: u8] items: u8 npos: u8 npos × (u8, u16)
//!   len: u16 payload`; `ctl` bits 0-1 pick the tag (0: explicit tag byte), bit 2 breaks
//!   the checksum, bit 3 starts a new segment, bit 4 gives an explicit sequence number.
//!   Left-over bytes are a torn tail.
//!
//! Checks, beyond no panic or hang: the scan's damage list is ordered, disjoint and
//! inside the file; a repaired segment scans clean with the same records; recovery and a
//! reader over the recovered buffer terminate.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use lookout_agent::buffer::format::{encode, FRAMING};
use lookout_agent::buffer::scan::{repair_segment, scan_segment, segment_name};
use lookout_agent::buffer::{Buffer, BufferMetrics, BufferOptions, Pos, Read};
use lookout_agent::sink::{FilePosition, Signal};
use lookout_config::{FsyncPolicy, WhenFull};
use lookout_fuzz::{segments, wait_for_threads_named, write_logs, Encoded, Input, RecordHead};

/// The structured records of this target, after the head: `items: u8 npos: u8
/// npos × (u8, u16) len: u16 payload`.
fn encode_record(head: RecordHead, input: &mut Input<'_>) -> Encoded {
    let items = u32::from(input.byte());
    let positions: Vec<FilePosition> = (0..input.byte() % 4)
        .map(|_| FilePosition {
            file_id: u64::from(input.byte()),
            offset: u64::from(input.u16()),
        })
        .collect();
    let len = usize::from(input.u16());
    let payload = input.take(len);
    // `encode` takes a signal; an invalid tag is patched into the bytes afterwards.
    let signal = Signal::from_tag(head.tag).unwrap_or(Signal::Logs);
    let mut rec = Vec::new();
    encode(&mut rec, head.seq, 7, signal, items, &positions, payload);
    if Signal::from_tag(head.tag).is_none() {
        rec[8 + 16] = head.tag;
        let crc = crc32fast::hash(&rec[8..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    if head.ctl & 4 != 0 {
        rec[4] ^= 1;
    }
    Encoded {
        bytes: rec,
        whole: payload.len() == len,
    }
}

fn write_ack(dir: &Path, pos: Pos) {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&pos.seg.to_le_bytes());
    b.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("ack.pos"), b).expect("write ack.pos");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let sel = input.byte();
    let ack_seg = u64::from(input.byte() % 5);
    let ack_off = u64::from(input.u16());
    let ack = Pos {
        seg: ack_seg,
        offset: ack_off,
    };
    let segs = segments(input, sel, encode_record);

    let root = write_logs("lookout-fuzz-buffer", &FRAMING, &["live", "repair"], &segs);
    let live = root.path().join("live");
    let repair = root.path().join("repair");
    if ack_seg > 0 {
        write_ack(&live, ack);
    }

    // Inspect and repair, segment by segment.
    for (i, seg) in segs.iter().enumerate() {
        let seq = i as u64 + 1;
        let path = repair.join(segment_name(seq));
        let scan = scan_segment(seq, &path, ack).expect("scan");
        assert_eq!(scan.bytes, seg.len() as u64);
        assert!(scan.valid_end <= scan.bytes);
        let mut at = 0u64;
        for d in &scan.damage {
            assert!(d.offset >= at, "damage out of order: {:?}", scan.damage);
            assert!(d.len > 0 && d.offset + d.len <= scan.bytes, "{d:?}");
            at = d.offset + d.len;
        }
        let repaired = repair_segment(seq, &path).expect("repair");
        assert!(
            repaired.damage.is_empty(),
            "repaired segment still damaged: {:?}",
            repaired.damage
        );
        assert_eq!(
            repaired.records, scan.records,
            "repair lost or invented records"
        );
        assert_eq!(repaired.items, scan.items);
    }

    // Start-up recovery, then read everything back as the shipper does.
    let opts = BufferOptions {
        max_size: 1 << 30,
        segment_size: 1 << 20,
        when_full: WhenFull::Block,
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::from_secs(1),
    };
    let registry = prometheus::Registry::new();
    let metrics = BufferMetrics::new(&registry).expect("metrics");
    let (buffer, _recovery) = Buffer::open(&live, opts, metrics).expect("open the buffer");
    let mut reader = buffer.reader();
    buffer.close();
    let mut last = None;
    loop {
        match reader.next(Duration::ZERO).expect("read") {
            Read::Record(_, pos) => {
                assert!(
                    Some(pos) > last,
                    "the reader went backwards: {pos:?} after {last:?}"
                );
                last = Some(pos);
            }
            Read::Idle | Read::Closed => break,
        }
    }
    drop(reader);
    drop(buffer);
    wait_for_threads_named("lookout-buffer");
});
