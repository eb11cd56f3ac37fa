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
