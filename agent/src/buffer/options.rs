//! Settings of the buffer.

use std::time::Duration;

use lookout_config::{FsyncPolicy, WhenFull};

/// Settings of the buffer.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// Most bytes of segment files.
    pub max_size: u64,
    /// Roll to a new segment past this size.
    pub segment_size: u64,
    /// What a full buffer does.
    pub when_full: WhenFull,
    /// When to `fdatasync`.
    pub fsync: FsyncPolicy,
    /// Period of [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
}
