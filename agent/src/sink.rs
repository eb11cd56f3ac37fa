//! What the receivers, the log tailer and the host-metrics collector write into: the
//! disk buffer, behind one small trait.

use bytes::Bytes;
use futures::future::BoxFuture;

pub use lookout_ingest::signal::Signal;

/// Where a tailed file stands after the lines of an entry: the point to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FilePosition {
    /// Stable identity of the file (see the tailer), not its path.
    pub file_id: u64,
    /// Byte offset just past the last line in the entry.
    pub offset: u64,
}

/// One encoded OTLP export request to buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Signal of `payload`.
    pub signal: Signal,
    /// Protobuf `Export*ServiceRequest` of `signal`.
    pub payload: Bytes,
    /// Items in it (spans, log records or data points).
    pub items: u32,
    /// Positions of tailed files reached by this entry; empty for other sources.
    pub positions: Vec<FilePosition>,
}

/// Why an entry was not buffered. Nothing was written; the caller still owns the data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The buffer is full and `when_full = "block"`: try again later.
    #[error("{0}")]
    Full(String),
    /// The buffer cannot store now (disk error, shutting down): try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// Durable storage for entries (the disk buffer).
pub trait Sink: Send + Sync + 'static {
    /// Append `entry`; resolves once it is stored as the fsync policy requires.
    fn append(&self, entry: Entry) -> BoxFuture<'static, Result<(), SinkError>>;
}
