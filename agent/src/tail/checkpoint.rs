//! The checkpoint file: where each tailed file stands, and how to recognise it again.
//!
//! `STATE_DIR/tail-checkpoints.json`, written as a temporary file, fsynced, renamed over
//! the old one, and the directory fsynced:
//!
//! ```json
//! {"version":1,"files":[{"file_id":1234,"dev":2049,"ino":393228,"fp_len":1000,
//!   "offset":52311,"path":"/var/log/shop/app.log","seen_unix":1767225600}]}
//! ```
//!
//! `offset` is just past the last line stored durably; `dev`, `ino` and `fp_len` let the
//! tailer recompute `file_id` from the file (see [`file_id`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lookout_ingest::fsutil;

use serde::{Deserialize, Serialize};

/// Name of the checkpoint file in the state directory.
pub const FILE_NAME: &str = "tail-checkpoints.json";

/// Bytes at the start of a file that make up its fingerprint (as OTel's filelog).
pub const FINGERPRINT_LEN: usize = 1000;

/// One file's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheckpoint {
    /// [`file_id`] of the file.
    pub file_id: u64,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// How many leading bytes the fingerprint covers.
    pub fp_len: u32,
    /// Offset just past the last durably stored line.
    pub offset: u64,
    /// Path the file was found at (informational).
    pub path: String,
    /// When the file was last open (Unix seconds); old entries of files no longer
    /// tailed are dropped.
    pub seen_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointDoc {
    version: u32,
    files: Vec<FileCheckpoint>,
}

/// Stable identity of a file: FNV-1a 64 of device, inode, `fp_len` and the first
/// `fp_len` bytes of the file (`head` must hold at least that many).
pub fn file_id(dev: u64, ino: u64, head: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&dev.to_le_bytes());
    eat(&ino.to_le_bytes());
    eat(&(head.len() as u64).to_le_bytes());
    eat(head);
    h
}

/// Path of the checkpoint file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Read the checkpoints; a missing file is empty. A corrupt file is an error (the
/// caller decides whether to start without it).
pub fn load(dir: &Path) -> anyhow::Result<HashMap<u64, FileCheckpoint>> {
    let path = path_in(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let doc: CheckpointDoc = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a checkpoint file: {e}", path.display()))?;
    if doc.version != 1 {
        anyhow::bail!("{}: unknown version {}", path.display(), doc.version);
    }
    Ok(doc.files.into_iter().map(|f| (f.file_id, f)).collect())
}

/// Serialize checkpoints (sorted by path, for people reading the file).
pub fn encode(files: &HashMap<u64, FileCheckpoint>) -> Vec<u8> {
    let mut files: Vec<FileCheckpoint> = files.values().cloned().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path).then(a.file_id.cmp(&b.file_id)));
    let doc = CheckpointDoc { version: 1, files };
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// Atomically replace the checkpoint file in `dir` with `bytes` (via
/// `tail-checkpoints.json.tmp`; directory `0750`, file `0640` when created).
pub fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fsutil::create_dir_all(dir)?;
    fsutil::write_atomic(&path_in(dir), bytes)
}
