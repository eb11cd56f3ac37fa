//! The Jaeger HTTP query API (`/jaeger/api/...`), the one the Jaeger UI and Grafana's
//! Jaeger data source read: services, operations, trace search, trace by id and
//! dependencies, in Jaeger's JSON model (`{"data": ..., "total", "limit", "offset",
//! "errors"}`; times in microseconds).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lookout_proto::api::{SpanView, TraceResponse};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::lookup::{blocking, load_trace, parse_trace_id};
use super::params::ParamReader;
use super::state::ApiState;
use crate::store::partition::Lookup;
use crate::store::traces::TraceQuery;
use lookout_ingest::clock::now_unix_nano;

/// Routes under `/jaeger/api`.
pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route(
            "/jaeger/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(traces))
        .route("/jaeger/api/traces/{trace_id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
}

/// Jaeger's response envelope.
fn envelope(data: Value, total: usize) -> Response {
    envelope_with_errors(data, total, Value::Null)
}

fn envelope_with_errors(data: Value, total: usize, errors: Value) -> Response {
    Json(json!({
        "data": data,
        "total": total,
        "limit": 0,
        "offset": 0,
        "errors": errors,
    }))
    .into_response()
}

/// A listing from the partitions that could be read, with an error per damaged one beside
/// the data, as Jaeger reports partial results.
fn listing(found: Lookup<Vec<String>>, data: impl FnOnce(Vec<String>) -> Value) -> Response {
    let total = found.found.len();
    if found.unreadable.is_empty() {
        return envelope(data(found.found), total);
    }
    let errors: Vec<Value> = found
        .unreadable
        .iter()
        .map(|e| {
            tracing::warn!(error = %e, "listing left out a partition that cannot be read");
            json!({"code": 500, "msg": format!("{e}; what it holds is not listed")})
        })
        .collect();
    envelope_with_errors(data(found.found), total, Value::Array(errors))
}

/// Jaeger's error envelope (the UI shows `msg`).
fn jaeger_error(e: ApiError) -> Response {
    let (status, msg) = (e.status, e.message);
    (
        status,
        Json(json!({
            "data": null,
            "total": 0,
            "limit": 0,
            "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": msg}],
        })),
    )
        .into_response()
}

async fn services(State(s): State<ApiState>) -> Response {
    match blocking(move || Ok(s.traces.services()?)).await {
        Ok(found) => listing(found, |l| json!(l)),
        Err(e) => jaeger_error(e),
    }
}

async fn service_operations(State(s): State<ApiState>, Path(service): Path<String>) -> Response {
    match blocking(move || Ok(s.traces.operations(&service)?)).await {
        Ok(found) => listing(found, |l| json!(l)),
        Err(e) => jaeger_error(e),
    }
}

async fn operations(
    State(s): State<ApiState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let run = async move {
        let mut p = ParamReader::new(params);
        let service = p
            .take("service")?
            .ok_or_else(|| ApiError::bad_request("parameter `service` is required"))?;
        // The span kind of an operation is not kept per operation; the filter is accepted
        // and every operation is listed.
        let _kind = p.take("spanKind")?;
        p.finish()?;
        let list = blocking(move || Ok(s.traces.operations(&service)?)).await?;
        Ok::<_, ApiError>(listing(list, |l| {
            l.into_iter()
                .map(|name| json!({"name": name, "spanKind": ""}))
                .collect()
        }))
    };
    run.await.unwrap_or_else(jaeger_error)
}

/// A Jaeger duration (`1.2s`, `100ms`, `500us`, `1m`) in nanoseconds.
fn jaeger_duration(name: &str, v: &str) -> Result<u64, ApiError> {
    let v = v.trim();
    let (num, unit) = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((v, ""), |i| v.split_at(i));
    let factor = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(ApiError::bad_request(format!(
                "parameter `{name}`: expected a duration like 1.2s, 100ms or 500us, got {v:?}"
            )))
        }
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok((n * factor).min(u64::MAX as f64) as u64),
        _ => Err(ApiError::bad_request(format!(
            "parameter `{name}`: expected a duration like 1.2s, 100ms or 500us, got {v:?}"
        ))),
    }
}

fn micros(name: &str, v: &str) -> Result<u64, ApiError> {
    v.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "parameter `{name}`: expected Unix microseconds, got {v:?}"
        ))
    })
}

/// Refuse a search window wider than `query.max_range`, as `/api/v1` does.
fn within_max_range(start_ns: u64, end_ns: u64, max: std::time::Duration) -> Result<(), ApiError> {
    let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if end_ns.saturating_sub(start_ns) > max_ns {
        return Err(ApiError::bad_request(format!(
            "time range start..end is wider than query.max_range ({}); narrow it",
            humantime::format_duration(max)
        )));
    }
    Ok(())
}

async fn traces(
    State(s): State<ApiState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let run = async move {
        let mut p = ParamReader::new(params);
        let service = p.take("service")?;
        let operation = p.take("operation")?;
        let mut attributes = Vec::new();
        // `tags` is a JSON object; Jaeger also accepts repeated `tag=key:value`.
        if let Some(tags) = p.take("tags")? {
            let m: Map<String, Value> = serde_json::from_str(&tags).map_err(|e| {
                ApiError::bad_request(format!(
                    "parameter `tags`: expected a JSON object of strings: {e}"
                ))
            })?;
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                attributes.push((k, v));
            }
        }
        for (_, v) in p.take_prefixed("tag") {
            let Some((k, val)) = v.split_once(':') else {
                return Err(ApiError::bad_request(format!(
                    "parameter `tag`: expected key:value, got {v:?}"
                )));
            };
            attributes.push((k.to_string(), val.to_string()));
        }
        let now = now_unix_nano();
        let end_ns = match p.take("end")? {
            Some(v) => micros("end", &v)?.saturating_mul(1000),
            None => now,
        };
        let start_ns = match (p.take("start")?, p.take("lookback")?) {
            (Some(v), _) => micros("start", &v)?.saturating_mul(1000),
            (None, Some(lb)) if lb != "custom" => {
                end_ns.saturating_sub(jaeger_duration("lookback", &lb)?)
            }
            _ => end_ns.saturating_sub(3_600_000_000_000),
        };
        within_max_range(start_ns, end_ns, s.query.max_range.get())?;
        let min_duration_ns = p
            .take("minDuration")?
            .map(|v| jaeger_duration("minDuration", &v))
            .transpose()?;
        let max_duration_ns = p
            .take("maxDuration")?
            .map(|v| jaeger_duration("maxDuration", &v))
            .transpose()?;
        let limit = match p.take("limit")? {
            None => 20,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1500).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parameter `limit`: expected 1 to 1500, got {v:?}"
                    ))
                })?,
        };
        // Grafana and the UI send these; they do not change the result here.
        let _ = p.take("spanKind")?;
        let _ = p.take("prettyPrint")?;
        p.finish()?;
        let query = TraceQuery {
            service,
            operation,
            min_duration_ns,
            max_duration_ns,
            errors_only: attributes.iter().any(|(k, v)| k == "error" && v == "true"),
            attributes: attributes
                .into_iter()
                .filter(|(k, v)| !(k == "error" && v == "true"))
                .collect(),
            from_ns: start_ns,
            to_ns: end_ns,
            limit,
        };
        let data = blocking(move || {
            let docs = s.traces.search(&query)?;
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                if let Some(t) = load_trace(&s, &d.trace_id)? {
                    out.push(to_jaeger(&t));
                }
            }
            Ok(out)
        })
        .await?;
        let n = data.len();
        Ok::<_, ApiError>(envelope(Value::Array(data), n))
    };
    run.await.unwrap_or_else(jaeger_error)
}

async fn trace(State(s): State<ApiState>, Path(trace_id): Path<String>) -> Response {
    let run = async move {
        let id = parse_trace_id(&trace_id.to_ascii_lowercase())?;
        match blocking(move || load_trace(&s, &id)).await? {
            Some(t) => Ok(envelope(json!([to_jaeger(&t)]), 1)),
            None => Err(ApiError::not_found("trace not found")),
        }
    };
    run.await.unwrap_or_else(jaeger_error)
}

async fn dependencies(
    State(s): State<ApiState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let run = async move {
        let mut p = ParamReader::new(params);
        let now_ms = now_unix_nano() / 1_000_000;
        let end_ms = match p.take("endTs")? {
            Some(v) => v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "parameter `endTs`: expected Unix milliseconds, got {v:?}"
                ))
            })?,
            None => now_ms,
        };
        let lookback_ms = match p.take("lookback")? {
            Some(v) => v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "parameter `lookback`: expected milliseconds, got {v:?}"
                ))
            })?,
            None => 86_400_000,
        };
        p.finish()?;
        within_max_range(
            end_ms.saturating_sub(lookback_ms).saturating_mul(1_000_000),
            end_ms.saturating_mul(1_000_000),
            s.query.max_range.get(),
        )?;
        let deps = s
            .shared
            .graph
            .lock()
            .dependencies(end_ms.saturating_sub(lookback_ms) / 1000, end_ms / 1000);
        let data: Vec<Value> = deps
            .edges
            .iter()
            .map(|e| json!({"parent": e.caller, "child": e.callee, "callCount": e.calls}))
            .collect();
        let n = data.len();
        Ok::<_, ApiError>(envelope(Value::Array(data), n))
    };
    run.await.unwrap_or_else(jaeger_error)
}

/// A Jaeger key/value tag from a JSON attribute value.
fn tag(key: &str, v: &Value) -> Value {
    match v {
        Value::String(s) => json!({"key": key, "type": "string", "value": s}),
        Value::Bool(b) => json!({"key": key, "type": "bool", "value": b}),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            json!({"key": key, "type": "int64", "value": n})
        }
        Value::Number(n) => json!({"key": key, "type": "float64", "value": n}),
        other => json!({"key": key, "type": "string", "value": other.to_string()}),
    }
}

fn tags(m: &Map<String, Value>) -> Vec<Value> {
    m.iter().map(|(k, v)| tag(k, v)).collect()
}

fn rfc3339_to_micros(s: &str) -> u64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1000).ok())
        .unwrap_or(0)
}

fn jaeger_span(s: &SpanView, process_id: &str) -> Value {
    let mut span_tags = tags(&s.attributes);
    if s.kind != "unspecified" {
        span_tags.push(json!({"key": "span.kind", "type": "string", "value": s.kind}));
    }
    match s.status.as_str() {
        "error" => {
            span_tags.push(json!({"key": "error", "type": "bool", "value": true}));
            span_tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
        }
        "ok" => span_tags.push(json!({"key": "otel.status_code", "type": "string", "value": "OK"})),
        _ => {}
    }
    if !s.status_message.is_empty() {
        span_tags.push(
            json!({"key": "otel.status_description", "type": "string", "value": s.status_message}),
        );
    }
    let mut references: Vec<Value> = Vec::new();
    if let Some(p) = &s.parent_span_id {
        references.push(json!({"refType": "CHILD_OF", "traceID": s.trace_id, "spanID": p}));
    }
    for l in &s.links {
        references
            .push(json!({"refType": "FOLLOWS_FROM", "traceID": l.trace_id, "spanID": l.span_id}));
    }
    let logs: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = vec![json!({"key": "event", "type": "string", "value": e.name})];
            fields.extend(tags(&e.attributes));
            json!({"timestamp": rfc3339_to_micros(&e.timestamp), "fields": fields})
        })
        .collect();
    let warnings: Vec<String> = if s.skew_adjustment_ns != 0 {
        vec![format!(
            "clock skew adjusted by {:.3} ms",
            s.skew_adjustment_ns as f64 / 1e6
        )]
    } else {
        Vec::new()
    };
    json!({
        "traceID": s.trace_id,
        "spanID": s.span_id,
        "flags": 1,
        "operationName": s.operation,
        "references": references,
        "startTime": s.start_unix_nano / 1000,
        "duration": s.duration_ns / 1000,
        "tags": span_tags,
        "logs": logs,
        "processID": process_id,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
    })
}

/// The assembled trace in Jaeger's JSON model.
pub fn to_jaeger(t: &TraceResponse) -> Value {
    // One process per distinct (service, resource).
    let mut processes: BTreeMap<String, Value> = BTreeMap::new();
    let mut keys: Vec<(String, Map<String, Value>)> = Vec::new();
    let mut spans = Vec::with_capacity(t.spans.len());
    for s in &t.spans {
        let idx = match keys
            .iter()
            .position(|(svc, res)| *svc == s.service && *res == s.resource)
        {
            Some(i) => i,
            None => {
                keys.push((s.service.clone(), s.resource.clone()));
                keys.len() - 1
            }
        };
        let pid = format!("p{}", idx + 1);
        processes.entry(pid.clone()).or_insert_with(|| {
            let res_tags: Vec<Value> = s
                .resource
                .iter()
                .filter(|(k, _)| k.as_str() != "service.name")
                .map(|(k, v)| tag(k, v))
                .collect();
            json!({"serviceName": s.service, "tags": res_tags})
        });
        spans.push(jaeger_span(s, &pid));
    }
    let warnings: Vec<String> = t.warnings.iter().map(|w| w.message.clone()).collect();
    json!({
        "traceID": t.trace_id,
        "spans": spans,
        "processes": processes,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(jaeger_duration("d", "1.5s").ok(), Some(1_500_000_000));
        assert_eq!(jaeger_duration("d", "100ms").ok(), Some(100_000_000));
        assert_eq!(jaeger_duration("d", "500us").ok(), Some(500_000));
        assert_eq!(jaeger_duration("d", "2h").ok(), Some(7_200_000_000_000));
        assert!(jaeger_duration("d", "fast").is_err());
        assert!(jaeger_duration("d", "-1s").is_err());
    }

    #[test]
    fn tags_keep_types() {
        assert_eq!(tag("a", &json!(3))["type"], "int64");
        assert_eq!(tag("a", &json!(1.5))["type"], "float64");
        assert_eq!(tag("a", &json!(true))["type"], "bool");
        assert_eq!(tag("a", &json!("x"))["type"], "string");
        assert_eq!(tag("a", &json!([1, 2]))["value"], "[1,2]");
    }
}
