//! A record of the log: its framing, its position, and what the stores are handed.

use bytes::Bytes;
use lookout_ingest::batch::Batch;
use lookout_ingest::signal::Signal;
use lookout_ingest::Charge;

/// The framing of WAL records and segment files.
pub use lookout_ingest::seglog::WAL as FRAMING;

/// Where a record sits in the log: segment number and byte offset of its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WalPos {
    /// Segment number (the file `{segment:020}.wal`).
    pub segment: u64,
    /// Byte offset of the record in the segment.
    pub offset: u64,
}

/// A record handed to the stores, in LSN order.
pub struct Record {
    /// Log sequence number.
    pub lsn: u64,
    /// Signal of the payload.
    pub signal: Signal,
    /// Protobuf export request; empty when `batch` is given.
    pub payload: Bytes,
    /// The decoded request, when the writer had it (not during replay).
    pub batch: Option<Batch>,
    /// The ingest budget the request holds (not during replay): dropping it once the
    /// record is applied gives the budget back.
    pub charge: Option<Charge>,
    /// Where the record is in the log.
    pub pos: WalPos,
}

/// Receives records in LSN order, once durable (or while replaying).
pub type Dispatch = Box<dyn FnMut(Record) + Send>;
