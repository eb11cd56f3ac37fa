//! Entry points for the fuzz targets in `fuzz/` (not a stable API).
//!
//! Thin public wrappers over crate-private pieces of the query API, so that a fuzz target
//! can drive exactly the parameter parsing the API handlers use. Errors are returned as
//! the message the API would put in its `{"error": ...}` body.

use crate::api::lookup::parse_trace_id as api_parse_trace_id;
use crate::api::params::ParamReader;
use crate::api::ApiError;

/// The query parameters of one API request, read the way the handlers read them: each
/// parameter at most once, leftovers refused by [`ApiParams::finish`].
pub struct ApiParams(ParamReader);

fn message(e: ApiError) -> String {
    e.message().to_string()
}

impl ApiParams {
    /// Parameters in request order, as axum's `Query<Vec<(String, String)>>` yields them.
    pub fn new(params: Vec<(String, String)>) -> Self {
        Self(ParamReader(params))
    }

    /// The value of `name` (empty counts as absent); an error when given twice.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, String> {
        self.0.take(name).map_err(message)
    }

    /// Every parameter whose name starts with `prefix`, without the prefix.
    pub fn take_prefixed(&mut self, prefix: &str) -> Vec<(String, String)> {
        self.0.take_prefixed(prefix)
    }

    /// `limit`, or the default.
    pub fn limit(&mut self) -> Result<usize, String> {
        self.0.limit().map_err(message)
    }

    /// `from` and `to` as Unix nanoseconds (RFC 3339 or relative times).
    pub fn time_range(&mut self) -> Result<(u64, u64), String> {
        self.0.time_range().map_err(message)
    }

    /// A duration parameter such as `min_duration`, in nanoseconds.
    pub fn duration(&mut self, name: &str) -> Result<Option<u64>, String> {
        self.0.duration(name).map_err(message)
    }

    /// Refuse whatever parameter was not read.
    pub fn finish(self) -> Result<(), String> {
        self.0.finish().map_err(message)
    }
}

/// Parse a trace id path segment the way `GET /api/v1/traces/{trace_id}` does.
pub fn parse_trace_id(v: &str) -> Result<[u8; 16], String> {
    api_parse_trace_id(v).map_err(message)
}
