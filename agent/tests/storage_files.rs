//! The agent's disk buffer on disk: every directory `0750` and every file `0640` from
//! creation (segments, `ack.pos`, repaired segments), whatever the umask's group and
//! other read bits.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use lookout_agent::buffer::{scan, Buffer, BufferMetrics, BufferOptions, Read, SUBDIR};
use lookout_agent::sink::{Entry, FilePosition, Signal};
use lookout_config::{FsyncPolicy, WhenFull};
use lookout_ingest::fsutil;
use lookout_tests::files::{mode, walk};

#[tokio::test]
async fn buffer_files_are_0640_and_directories_0750() {
    // The usual default umask: without explicit modes, files would be 0644.
    fsutil::set_umask(0o022);
    let root = tempfile::tempdir().unwrap();
    let buffer_dir = root.path().join("agent-buffer");
    let dir = buffer_dir.join(SUBDIR);
    let registry = prometheus::Registry::new();
    let (b, _) = Buffer::open(
        &dir,
        BufferOptions {
            max_size: 1 << 20,
            segment_size: 4096,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Always,
            fsync_interval: Duration::from_secs(1),
        },
        BufferMetrics::new(&registry).unwrap(),
    )
    .unwrap();
    for i in 0..10u8 {
        b.append(Entry {
            signal: Signal::Logs,
            payload: Bytes::from(vec![i; 1000]),
            items: 1,
            positions: vec![FilePosition {
                file_id: 1,
                offset: u64::from(i),
            }],
        })
        .await
        .unwrap();
    }
    let mut r = b.reader();
    let mut last = None;
    while let Read::Record(_, pos) = r.next(Duration::from_millis(50)).unwrap() {
        last = Some(pos);
    }
    b.ack(last.unwrap());
    b.flush_ack().unwrap();
    b.close();
    // `buffer verify --repair` rewrites a damaged segment through a new file.
    let (seq, seg) = scan::list_segments(&dir).unwrap().remove(0);
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(
        bytes.len() > 2000,
        "the open segment holds the last records"
    );
    bytes[20] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let repaired = scan::repair_segment(seq, &seg).unwrap();
    assert!(repaired.damage.is_empty() && repaired.records > 0);

    let all = walk(&buffer_dir);
    assert!(all.iter().any(|p| p.ends_with("ack.pos")), "{all:?}");
    assert!(
        all.iter()
            .any(|p| p.extension().is_some_and(|e| e == "seg")),
        "{all:?}"
    );
    assert_eq!(mode(&buffer_dir), 0o750);
    for p in &all {
        let want = if p.is_dir() { 0o750 } else { 0o640 };
        assert_eq!(mode(p), want, "{}: {:o}", p.display(), mode(p));
    }
}
