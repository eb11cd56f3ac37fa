//! Query parameters: each read at most once, leftovers refused by name; times, durations
//! and limits parsed the same way by every endpoint.

use axum::extract::Query;
use lookout_ingest::clock::now_unix_nano;

use super::error::ApiError;

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// Query parameters in request order.
pub(crate) type Params = Query<Vec<(String, String)>>;

/// Query parameters, each read at most once; leftovers are refused by name.
pub struct ParamReader(Vec<(String, String)>);

impl ParamReader {
    /// Parameters in request order, as axum's `Query<Vec<(String, String)>>` yields them.
    pub fn new(params: Vec<(String, String)>) -> Self {
        Self(params)
    }

    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut found: Option<String> = None;
        let mut dup = false;
        self.0.retain(|(k, v)| {
            if k == name {
                dup |= found.is_some();
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        if dup {
            return Err(ApiError::bad_request(format!(
                "parameter `{name}` given more than once"
            )));
        }
        Ok(found.filter(|v| !v.is_empty()))
    }

    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.0.retain(|(k, v)| match k.strip_prefix(prefix) {
            Some(rest) => {
                out.push((rest.to_string(), v.clone()));
                false
            }
            None => true,
        });
        out
    }

    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.first() {
            None => Ok(()),
            Some((k, _)) => Err(ApiError::bad_request(format!("unknown parameter `{k}`"))),
        }
    }

    pub fn limit(&mut self) -> Result<usize, ApiError> {
        self.limit_within(MAX_LIMIT)
    }

    /// `limit`, from 1 to `max` (default [`DEFAULT_LIMIT`] or `max` if smaller).
    pub fn limit_within(&mut self, max: usize) -> Result<usize, ApiError> {
        match self.take("limit")? {
            None => Ok(DEFAULT_LIMIT.min(max)),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "parameter `limit`: expected an integer from 1 to {max}, got {v:?}"
                ))),
            },
        }
    }

    /// [`Self::time_range`] no wider than `max`: without `from`, the last `max` before
    /// `to` (or now); an explicit wider range is refused.
    pub fn time_range_within(&mut self, max: std::time::Duration) -> Result<(u64, u64), ApiError> {
        let explicit_from = self.0.iter().any(|(k, v)| k == "from" && !v.is_empty());
        let (from, to) = self.time_range()?;
        let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let end = if to == u64::MAX { now_unix_nano() } else { to };
        if !explicit_from {
            return Ok((from.max(end.saturating_sub(max_ns)), to));
        }
        if end.saturating_sub(from) > max_ns {
            return Err(ApiError::bad_request(format!(
                "time range from..to is wider than query.max_range ({}); narrow it",
                humantime::format_duration(max)
            )));
        }
        Ok((from, to))
    }

    pub fn time_range(&mut self) -> Result<(u64, u64), ApiError> {
        let now = now_unix_nano();
        let from = match self.take("from")? {
            Some(v) => parse_time(&v, now)
                .map_err(|e| ApiError::bad_request(format!("parameter `from`: {e}")))?,
            None => 0,
        };
        let to = match self.take("to")? {
            Some(v) => parse_time(&v, now)
                .map_err(|e| ApiError::bad_request(format!("parameter `to`: {e}")))?,
            None => u64::MAX,
        };
        if from > to {
            return Err(ApiError::bad_request("parameter `from` is after `to`"));
        }
        Ok((from, to))
    }

    pub fn duration(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        self.take(name)?
            .map(|v| {
                lookout_config::parse_duration(&v)
                    .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                    .map_err(|e| ApiError::bad_request(format!("parameter `{name}`: {e}")))
            })
            .transpose()
    }
}

/// Why a time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// An RFC 3339 time before the Unix epoch.
    #[error("time {0:?} is before 1970")]
    BeforeEpoch(String),
    /// An RFC 3339 time past what nanoseconds since 1970 hold in 64 bits (2554).
    #[error("time {0:?} is after 2554")]
    AfterRange(String),
    /// Neither RFC 3339 nor a relative time.
    #[error(
        "expected RFC 3339 (2026-01-02T15:04:05Z) or a relative time (15m, 2h, 7d), got {0:?}"
    )]
    Unrecognised(String),
}

/// A time: RFC 3339, or relative to now (`15m` means 15 minutes ago), or `now`.
pub fn parse_time(v: &str, now_ns: u64) -> Result<u64, TimeError> {
    let v = v.trim();
    if v == "now" {
        return Ok(now_ns);
    }
    if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        let ns = t.unix_timestamp_nanos();
        return u64::try_from(ns).map_err(|_| {
            if ns < 0 {
                TimeError::BeforeEpoch(v.to_string())
            } else {
                TimeError::AfterRange(v.to_string())
            }
        });
    }
    if v.starts_with(|c: char| c.is_ascii_digit()) && !v.contains('-') && !v.contains(':') {
        if let Ok(d) = lookout_config::parse_duration(v) {
            return Ok(now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
        }
    }
    Err(TimeError::Unrecognised(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 10_000_000_000_000u64;
        assert_eq!(parse_time("now", now).ok(), Some(now));
        assert_eq!(parse_time("15m", now).ok(), Some(now - 900_000_000_000));
        assert_eq!(
            parse_time("1970-01-01T00:00:01Z", now).ok(),
            Some(1_000_000_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(
            parse_time("1969-12-31T23:59:59Z", now),
            Err(TimeError::BeforeEpoch("1969-12-31T23:59:59Z".into()))
        );
        assert_eq!(
            parse_time("9999-12-31T23:59:59Z", now).map_err(|e| e.to_string()),
            Err("time \"9999-12-31T23:59:59Z\" is after 2554".to_string())
        );
    }
}
