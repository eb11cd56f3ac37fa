//! Errors of segment-log files.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of segment-log files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a segment file or the log's directory.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// Wrap an I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
