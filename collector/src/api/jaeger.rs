//! The Jaeger HTTP query API (`/jaeger/api/...`), the one the Jaeger UI and Grafana's
//! Jaeger data source read: services, operations, trace search, trace by id and
//! dependencies, in Jaeger's JSON model (`{"data": ..., "total", "limit", "offset",
//! "errors"}`; times in microseconds).
//!
//! In cluster mode each endpoint answers for the whole cluster, as the native API does
//! ([`super::fanout`]): every other member is asked the same question (answering from its
//! own stores) and the answers are merged; a member that did not answer is named in
//! `errors`, beside the data that was found.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lookout_proto::api::{SpanView, TraceResponse};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::fanout::{self, ask_found, path_and_query, peers_for, Peers};
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

/// `data`, with `errors` when there are any (else `null`, as Jaeger answers).
fn envelope_or_errors(data: Vec<Value>, errors: Vec<Value>) -> Response {
    let total = data.len();
    if errors.is_empty() {
        envelope(Value::Array(data), total)
    } else {
        envelope_with_errors(Value::Array(data), total, Value::Array(errors))
    }
}

/// A member's answer to a Jaeger query (the envelope's `data` and `errors`).
#[derive(Debug, Default, serde::Deserialize)]
struct MemberAnswer {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    errors: Option<Vec<Value>>,
}

/// What the other members answered the same query with.
#[derive(Debug, Default)]
struct Fanned {
    /// Whether they were asked (cluster mode, and not asked by a member).
    asked: bool,
    answers: Vec<MemberAnswer>,
    /// One warning per member that did not answer.
    unanswered: Vec<String>,
}

impl Fanned {
    /// Ask `peers` (none: nothing asked) for `path_and_query`.
    async fn ask(peers: Option<&Peers>, path_and_query: &str) -> Self {
        let (answers, unanswered) = ask_found::<MemberAnswer>(peers, path_and_query).await;
        Self {
            asked: peers.is_some(),
            answers,
            unanswered,
        }
    }

    /// The items of every answer's `data` array.
    fn items(&mut self) -> impl Iterator<Item = Value> + '_ {
        self.answers.iter_mut().flat_map(|a| match a.data.take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        })
    }

    /// The errors members reported, then one per member that did not answer.
    fn errors(&mut self) -> Vec<Value> {
        let reported = self
            .answers
            .iter_mut()
            .flat_map(|a| a.errors.take())
            .flatten();
        let unanswered = self.unanswered.drain(..).map(|w| unanswered_error(&w));
        reported.chain(unanswered).collect()
    }
}

/// The Jaeger error of a member that did not answer (`warning` names it).
fn unanswered_error(warning: &str) -> Value {
    json!({"code": 503, "msg": warning})
}

/// `errors` without repeats, in their first order.
fn distinct(errors: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    errors
        .into_iter()
        .filter(|e| seen.insert(e.to_string()))
        .collect()
}

/// The names in a listing's data: strings, or objects with a `name`.
fn names_in(items: impl Iterator<Item = Value>) -> impl Iterator<Item = String> {
    items.filter_map(|v| match v {
        Value::String(s) => Some(s),
        Value::Object(mut o) => match o.remove("name") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    })
}

/// A listing from the partitions that could be read, with an error per damaged one beside
/// the data, as Jaeger reports partial results; in cluster mode the union of every
/// member's listing (sorted), with the errors they reported and one per member that did
/// not answer.
fn listing(
    found: Lookup<Vec<String>>,
    mut others: Fanned,
    data: impl FnOnce(Vec<String>) -> Vec<Value>,
) -> Response {
    let mut errors: Vec<Value> = found
        .unreadable
        .iter()
        .map(|e| {
            tracing::warn!(error = %e, "listing left out a partition that cannot be read");
            json!({"code": 500, "msg": format!("{e}; what it holds is not listed")})
        })
        .collect();
    let mut names = found.found;
    if others.asked {
        let all: BTreeSet<String> = names.into_iter().chain(names_in(others.items())).collect();
        names = all.into_iter().collect();
    }
    errors.extend(others.errors());
    envelope_or_errors(data(names), distinct(errors))
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

/// Strings as Jaeger list items.
fn strings(l: Vec<String>) -> Vec<Value> {
    l.into_iter().map(Value::String).collect()
}

async fn services(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let peers = peers_for(&s, &headers);
    let path = path_and_query(&uri);
    let (mine, others) = tokio::join!(
        blocking(move || Ok(s.traces.services()?)),
        Fanned::ask(peers.as_ref(), &path)
    );
    match mine {
        Ok(found) => listing(found, others, strings),
        Err(e) => jaeger_error(e),
    }
}

async fn service_operations(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(service): Path<String>,
) -> Response {
    let peers = peers_for(&s, &headers);
    let path = path_and_query(&uri);
    let (mine, others) = tokio::join!(
        blocking(move || Ok(s.traces.operations(&service)?)),
        Fanned::ask(peers.as_ref(), &path)
    );
    match mine {
        Ok(found) => listing(found, others, strings),
        Err(e) => jaeger_error(e),
    }
}

async fn operations(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
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
        let peers = peers_for(&s, &headers);
        let path = path_and_query(&uri);
        let (list, others) = tokio::join!(
            blocking(move || Ok(s.traces.operations(&service)?)),
            Fanned::ask(peers.as_ref(), &path)
        );
        Ok::<_, ApiError>(listing(list?, others, |l| {
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
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
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
        let peers = peers_for(&s, &headers);
        let path = path_and_query(&uri);
        let local = s.clone();
        let (data, mut others) = tokio::join!(
            blocking(move || {
                let docs = local.traces.search(&query)?;
                let mut out = Vec::with_capacity(docs.len());
                for d in docs {
                    if let Some(t) = load_trace(&local, &d.trace_id)? {
                        out.push(to_jaeger(&t));
                    }
                }
                Ok(out)
            }),
            Fanned::ask(peers.as_ref(), &path)
        );
        let data = data?;
        let Some(peers) = peers else {
            let n = data.len();
            return Ok::<_, ApiError>(envelope(Value::Array(data), n));
        };
        let found = newest_traces(data.into_iter().chain(others.items()), limit);
        let mut errors = others.errors();
        let (data, more_errors) = whole_traces(&s, &peers, found).await;
        errors.extend(more_errors);
        Ok(envelope_or_errors(data, distinct(errors)))
    };
    run.await.unwrap_or_else(jaeger_error)
}

/// How many traces found on several members are merged at once.
const MERGES_IN_FLIGHT: usize = 8;

/// One Jaeger trace from the parts of each of `found`: a trace found on several members
/// (its partition moved while it was open) is asked for by id, as [`trace`] does, so its
/// parts are merged before they take Jaeger's shape. With the errors met on the way.
async fn whole_traces(
    s: &ApiState,
    peers: &Peers,
    found: Vec<Vec<Value>>,
) -> (Vec<Value>, Vec<Value>) {
    use futures::StreamExt;
    let merged: Vec<(Option<Value>, Vec<Value>)> = futures::stream::iter(found)
        .map(|mut parts| async move {
            if parts.len() <= 1 {
                return (parts.pop(), Vec::new());
            }
            let id = parts[0]["traceID"].as_str().unwrap_or_default().to_string();
            let merged = match parse_trace_id(&id) {
                Ok(bytes) => fanout::find_trace(s, Some(peers), bytes).await,
                Err(e) => Err(e),
            };
            let problem = match merged {
                Ok((Some(t), unanswered)) => {
                    let errors = unanswered.iter().map(|w| unanswered_error(w)).collect();
                    return (Some(to_jaeger(&t)), errors);
                }
                Ok((None, _)) => "no member holds it any more".to_string(),
                Err(e) => e.message().to_string(),
            };
            tracing::warn!(
                trace_id = %id,
                error = %problem,
                "a trace found on several members was not merged"
            );
            // The most complete part stands for the trace.
            parts.sort_by_key(|t| std::cmp::Reverse(span_count(t)));
            let error = json!({
                "code": 500,
                "msg": format!(
                    "trace {id} is held by several members and could not be merged: \
                     {problem}; its largest part is shown"
                ),
                "traceID": id,
            });
            (parts.into_iter().next(), vec![error])
        })
        .buffered(MERGES_IN_FLIGHT)
        .collect()
        .await;
    let mut data = Vec::with_capacity(merged.len());
    let mut errors = Vec::new();
    for (t, e) in merged {
        data.extend(t);
        errors.extend(e);
    }
    (data, errors)
}

/// Spans in a Jaeger trace.
fn span_count(t: &Value) -> usize {
    t["spans"].as_array().map_or(0, Vec::len)
}

/// Start of a Jaeger trace: its earliest span's, in microseconds.
fn trace_start(t: &Value) -> u64 {
    t["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["startTime"].as_u64())
        .min()
        .unwrap_or(0)
}

/// Jaeger traces found by every member, grouped by trace id (the parts of one trace
/// several members hold), newest first, `limit` of them.
fn newest_traces(found: impl Iterator<Item = Value>, limit: usize) -> Vec<Vec<Value>> {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in found {
        let id = t["traceID"].as_str().unwrap_or_default().to_string();
        by_id.entry(id).or_default().push(t);
    }
    let mut traces: Vec<(u64, String, Vec<Value>)> = by_id
        .into_iter()
        .map(|(id, parts)| (parts.iter().map(trace_start).min().unwrap_or(0), id, parts))
        .collect();
    traces.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    traces.truncate(limit);
    traces.into_iter().map(|(_, _, parts)| parts).collect()
}

async fn trace(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Response {
    let run = async move {
        let id = parse_trace_id(&trace_id.to_ascii_lowercase())?;
        // In cluster mode every member is asked for its part, as `/api/v1/traces/{id}`
        // does; the parts are merged before they take Jaeger's shape.
        let peers = peers_for(&s, &headers);
        match fanout::find_trace(&s, peers.as_ref(), id).await? {
            (Some(t), unanswered) => Ok(envelope_or_errors(
                vec![to_jaeger(&t)],
                unanswered.iter().map(|w| unanswered_error(w)).collect(),
            )),
            (None, unanswered) if unanswered.is_empty() => {
                Err(ApiError::not_found("trace not found"))
            }
            (None, unanswered) => Err(ApiError::not_found(format!(
                "trace not found; {}",
                unanswered.join("; ")
            ))),
        }
    };
    run.await.unwrap_or_else(jaeger_error)
}

async fn dependencies(
    State(s): State<ApiState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
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
        let Some(peers) = peers_for(&s, &headers) else {
            let n = data.len();
            return Ok::<_, ApiError>(envelope(Value::Array(data), n));
        };
        let mut others = Fanned::ask(Some(&peers), &path_and_query(&uri)).await;
        let data = merge_dependencies(data.into_iter().chain(others.items()));
        Ok(envelope_or_errors(data, distinct(others.errors())))
    };
    run.await.unwrap_or_else(jaeger_error)
}

/// Jaeger dependency links of every member: one per parent and child, call counts added,
/// most calls first.
fn merge_dependencies(links: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in links {
        let (Some(parent), Some(child)) = (l["parent"].as_str(), l["child"].as_str()) else {
            continue;
        };
        let n = calls
            .entry((parent.to_string(), child.to_string()))
            .or_default();
        *n = n.saturating_add(l["callCount"].as_u64().unwrap_or(0));
    }
    let mut links: Vec<((String, String), u64)> = calls.into_iter().collect();
    links.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    links
        .into_iter()
        .map(|((parent, child), n)| json!({"parent": parent, "child": child, "callCount": n}))
        .collect()
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

    fn jaeger_trace(id: &str, starts: &[u64]) -> Value {
        let spans: Vec<Value> = starts
            .iter()
            .map(|t| json!({"traceID": id, "startTime": t}))
            .collect();
        json!({"traceID": id, "spans": spans})
    }

    #[test]
    fn traces_of_every_member_are_grouped_newest_first_within_the_limit() {
        let found = vec![
            jaeger_trace("a", &[10, 12]),
            jaeger_trace("b", &[30]),
            jaeger_trace("c", &[20]),
            // A part of `a` another member holds, started earlier.
            jaeger_trace("a", &[5]),
            jaeger_trace("d", &[1]),
        ];
        let grouped = newest_traces(found.into_iter(), 3);
        let ids: Vec<(&str, usize)> = grouped
            .iter()
            .map(|parts| (parts[0]["traceID"].as_str().unwrap_or(""), parts.len()))
            .collect();
        assert_eq!(ids, [("b", 1), ("c", 1), ("a", 2)]);
        assert_eq!(trace_start(&json!({"spans": []})), 0);
    }

    #[test]
    fn dependencies_of_every_member_add_up() {
        let links = vec![
            json!({"parent": "a", "child": "b", "callCount": 2}),
            json!({"parent": "b", "child": "c", "callCount": 5}),
            json!({"parent": "a", "child": "b", "callCount": 4}),
            json!({"parent": "a"}),
        ];
        assert_eq!(
            merge_dependencies(links.into_iter()),
            [
                json!({"parent": "a", "child": "b", "callCount": 6}),
                json!({"parent": "b", "child": "c", "callCount": 5}),
            ]
        );
    }

    #[test]
    fn listings_of_every_member_are_united_with_their_errors() {
        let others = Fanned {
            asked: true,
            answers: vec![
                MemberAnswer {
                    data: json!([{"name": "pay", "spanKind": ""}, "ship", 3]),
                    errors: Some(vec![json!({"code": 500, "msg": "block 7 is damaged"})]),
                },
                MemberAnswer::default(),
            ],
            unanswered: vec!["node c2 did not answer: refused".to_string()],
        };
        let found = Lookup {
            found: vec!["ship".to_string(), "cart".to_string()],
            unreadable: Vec::new(),
        };
        let r = listing(found, others, strings);
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(body["data"], json!(["cart", "pay", "ship"]));
        assert_eq!(body["total"], 3);
        assert_eq!(
            body["errors"],
            json!([
                {"code": 500, "msg": "block 7 is damaged"},
                {"code": 503, "msg": "node c2 did not answer: refused"},
            ])
        );
        // Not in cluster mode: the listing as it is, `errors` null.
        let found = Lookup {
            found: vec!["ship".to_string(), "cart".to_string()],
            unreadable: Vec::new(),
        };
        let r = listing(found, Fanned::default(), strings);
        let body = futures::executor::block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(
            (&body["data"], &body["errors"]),
            (&json!(["ship", "cart"]), &Value::Null)
        );
    }

    #[test]
    fn errors_are_listed_once() {
        let e = json!({"code": 503, "msg": "node c1 did not answer"});
        let f = json!({"code": 500, "msg": "damaged"});
        assert_eq!(distinct(vec![e.clone(), f.clone(), e.clone()]), [e, f]);
    }
}
