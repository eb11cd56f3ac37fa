//! Errors of the write-ahead log.

use std::io;
use std::path::{Path, PathBuf};

use lookout_ingest::seglog;

/// Errors of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O error on a WAL file.
    #[error("write-ahead log i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The writer thread is gone (shutting down).
    #[error("write-ahead log is closed")]
    Closed,
    /// Writing the batch would leave less than `wal.reserve` free on the data disk: the
    /// room is kept for the stores' commits, which let the log delete segments.
    #[error("data disk has {free} bytes free, below wal.reserve ({reserve} bytes) plus the batches being written ({batch} bytes); the reserve is kept for index commits, and writes resume once indexing lets the write-ahead log free space")]
    Reserve {
        /// Free bytes on the data disk.
        free: u64,
        /// `wal.reserve`.
        reserve: u64,
        /// Bytes of the refused group (the batches written together).
        batch: u64,
    },
    /// `wal.reserve` is not less than the whole file system of the log: no batch could
    /// ever be written.
    #[error("wal.reserve ({reserve} bytes) is not less than the size of the file system holding {} ({total} bytes): no batch could ever be written; lower wal.reserve (and wal.segment_size) or give the data directory a larger volume", dir.display())]
    ReserveTooLarge {
        /// The log's directory.
        dir: PathBuf,
        /// `wal.reserve`.
        reserve: u64,
        /// Size of its file system.
        total: u64,
    },
    /// The log's sequence numbers are used up: only a damaged or forged log gets near
    /// 2^64 records.
    #[error("write-ahead log sequence numbers are exhausted (last {0}); the log is damaged, move it aside")]
    Exhausted(u64),
}

impl From<seglog::Error> for WalError {
    fn from(e: seglog::Error) -> Self {
        match e {
            seglog::Error::Io { path, source } => WalError::Io { path, source },
        }
    }
}

/// Wrap an I/O error on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}
