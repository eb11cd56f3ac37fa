//! The one wall clock: every timestamp Lookout takes itself comes from here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock in Unix nanoseconds.
pub fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wall clock in Unix seconds (signed, as time partitions are keyed).
pub fn now_unix_secs() -> i64 {
    i64::try_from(now_unix_nano() / 1_000_000_000).unwrap_or(i64::MAX)
}
