//! Finding one trace by id, for the native and the Jaeger API, and running searches on
//! the blocking pool.

use super::error::ApiError;
use super::state::ApiState;
use crate::store::SearchError;
use crate::traces::assemble::assemble;

/// Run `f` on the blocking pool (searches block on disk and CPU).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("query task failed: {e}")))?
}

/// Parse a 32-hex-digit trace id.
pub fn parse_trace_id(v: &str) -> Result<[u8; 16], ApiError> {
    let mut id = [0u8; 16];
    match hex::decode_to_slice(v, &mut id) {
        Ok(()) if v.len() == 32 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "trace id must be 32 hex characters, got {v:?}"
        ))),
    }
}

/// Assemble the stored spans of `id`, with its completeness state; `None` when unknown.
pub(crate) fn load_trace(
    s: &ApiState,
    id: &[u8; 16],
) -> Result<Option<lookout_proto::api::TraceResponse>, ApiError> {
    let mut found = s.spans.trace(id)?;
    if found.found.is_empty() {
        // Not found, unless it is in a partition that could not be read.
        return match found.unreadable.pop() {
            Some(e) => Err(SearchError::Partition(e).into()),
            None => Ok(None),
        };
    }
    let mut unreadable: Vec<_> = found
        .unreadable
        .into_iter()
        .map(|e| (e, "spans stored there are missing"))
        .collect();
    let state = if s.shared.open.lock().contains(id) {
        "open"
    } else {
        let stored = s.traces.latest(id)?;
        unreadable.extend(
            stored
                .unreadable
                .into_iter()
                .map(|e| (e, "the trace's state may be out of date")),
        );
        match stored.found {
            Some(d) => d.state.as_str(),
            // Indexed spans the tracker has not summarised yet.
            None => "open",
        }
    };
    let mut t = assemble(&hex::encode(id), state, found.found);
    for (e, consequence) in unreadable {
        tracing::warn!(error = %e, trace_id = %hex::encode(id), "trace lookup left out a partition that cannot be read");
        t.warnings.push(lookout_proto::api::TraceWarning {
            kind: "unreadable_partition".to_string(),
            span_id: None,
            message: format!("{e}: {consequence}"),
        });
    }
    for w in &t.warnings {
        s.metrics
            .trace_warnings
            .with_label_values(&[w.kind.as_str()])
            .inc();
    }
    Ok(Some(t))
}
