//! Alerting counts time in Unix milliseconds (`i64`, as the state file stores it).

use std::time::Duration;

/// Now, in Unix milliseconds.
pub(super) fn now_ms() -> i64 {
    i64::try_from(lookout_ingest::clock::now_unix_nano() / 1_000_000).unwrap_or(i64::MAX)
}

/// Unix milliseconds as RFC 3339 (negative ones as the epoch).
pub(super) fn rfc3339_ms(ms: i64) -> String {
    lookout_ingest::values::rfc3339(u64::try_from(ms).unwrap_or(0).saturating_mul(1_000_000))
}

/// A duration in milliseconds (saturating).
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
