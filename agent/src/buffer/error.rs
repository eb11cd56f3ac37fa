//! Errors of the buffer.

use std::io;
use std::path::{Path, PathBuf};

use lookout_ingest::seglog;

/// Errors opening the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// An I/O error on a buffer file.
    #[error("disk buffer i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl From<seglog::Error> for BufferError {
    fn from(e: seglog::Error) -> Self {
        match e {
            seglog::Error::Io { path, source } => BufferError::Io { path, source },
        }
    }
}

/// Wrap an I/O error on `path`.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}
