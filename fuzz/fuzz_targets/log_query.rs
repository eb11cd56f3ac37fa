//! The query API's log search: parameter parsing as `GET /api/v1/logs` does it (the
//! handler's `ParamReader`, `parse_time`, `parse_duration`, `severity_floor`), tantivy's
//! `QueryParser` over the log schema, and the search itself (`LogStore::search`) on a
//! small real log index built once.
//!
//! Input: one selector byte, then text.
//! - bit 0 clear: the text is the `q` query itself (and is also tried as a time and a
//!   duration);
//! - bit 0 set: the text is a URL query string (`q=...&from=15m&severity=warn&limit=5`),
//!   decoded the way axum's `Query` does it.
//!
//! Checks: no panic, and no query text makes the search fail with an index error (the
//! API's 500); bad queries must be refused as such (400).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lookout_collector::api::lookup::parse_trace_id;
use lookout_collector::api::params::ParamReader;
use lookout_collector::api::ApiError;
use lookout_collector::store::logs::{severity_floor, LogQuery, LogStore};
use lookout_collector::store::partition::{meta_for_writing, TantivyWriter, WriterOptions};
use lookout_collector::store::{DocMapper, SearchError};
use lookout_ingest::batch::Batch;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use lookout_proto::otlp::common::v1::{any_value::Value as V, AnyValue, KeyValue, KeyValueList};
use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use lookout_proto::otlp::resource::v1::Resource;

/// Fixed "now" for relative times, so runs are reproducible: 2026-01-01T00:00:00Z.
const NOW_NS: u64 = 1_767_225_600_000_000_000;

fn av(v: V) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: av(v),
        ..Default::default()
    }
}

fn s(x: &str) -> V {
    V::StringValue(x.into())
}

/// A log index with a handful of records of every attribute type.
fn store() -> &'static LogStore {
    static STORE: OnceLock<LogStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lookout-fuzz-log-query")
            .tempdir()
            .expect("temp dir");
        let store = LogStore::open(dir.path(), 3600, WriterOptions::default()).expect("open index");
        let index = store.index();
        let record = |i: u64, sev: i32, body: V, attrs: Vec<KeyValue>| LogRecord {
            time_unix_nano: NOW_NS - i * 60_000_000_000,
            severity_number: sev,
            severity_text: if sev == 0 {
                "WARNING".into()
            } else {
                String::new()
            },
            body: av(body),
            attributes: attrs,
            trace_id: if i % 2 == 0 {
                vec![i as u8 + 1; 16]
            } else {
                Vec::new()
            },
            span_id: if i % 2 == 0 { vec![7; 8] } else { Vec::new() },
            ..Default::default()
        };
        let logs = vec![
            record(
                0,
                9,
                s("payment declined for card 4242"),
                vec![
                    kv("error.type", s("CardDeclined")),
                    kv("http.status_code", V::IntValue(402)),
                    kv("retry", V::BoolValue(false)),
                ],
            ),
            record(
                1,
                17,
                s("stock lookup slow: 2.5s"),
                vec![
                    kv("latency", V::DoubleValue(2.5)),
                    kv("sku", s("A-17")),
                    kv(
                        "nested",
                        V::KvlistValue(KeyValueList {
                            values: vec![kv("inner.key", s("x y")), kv("n", V::IntValue(-3))],
                        }),
                    ),
                ],
            ),
            record(
                2,
                0,
                V::KvlistValue(KeyValueList {
                    values: vec![kv("msg", s("structured"))],
                }),
                vec![
                    kv("bytes", V::BytesValue(vec![0, 1, 2])),
                    kv("empty", s("")),
                ],
            ),
            record(3, 21, s("fatal: disk full /var/lib/lookout"), Vec::new()),
            record(
                4,
                5,
                s("débug ünïcode 日本語 text"),
                vec![kv("user.id", s("42"))],
            ),
        ];
        let batch = Batch::Logs(ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![
                            kv("service.name", s("payment")),
                            kv("host.name", s("h1")),
                        ],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: logs[..3].to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", s("inventory"))],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: logs[3..].to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        });
        let key = index.key_for((NOW_NS / 1_000_000_000) as i64);
        let (part, writer) = index.writer(key, 15 << 20, 1).expect("writer");
        let meta = meta_for_writing(&part);
        let mut w = TantivyWriter { part, writer, meta };
        let mut mapper = store.mapper();
        mapper.add(&batch, &mut w).expect("add");
        w.meta.lsn = 1;
        index
            .commit(&w.part, &mut w.writer, w.meta)
            .expect("commit");
        drop(w.writer);
        // A search opens the partition's reader, which keeps its files open and mapped
        // (manual reload policy, nothing is written again, nothing closes idle readers
        // here), so the directory can go now instead of outliving the process.
        w.part.searcher().expect("open the reader");
        drop(dir);
        store
    })
}

/// Run a log search and check that it fails, if at all, only with a bad query.
fn run(query: &LogQuery) {
    let st = store();
    match st.search(query) {
        Ok(r) => assert!(r.logs.len() <= query.limit.max(1)),
        Err(SearchError::BadQuery(_)) => {}
        Err(e @ (SearchError::Index(_) | SearchError::Partition(_))) => {
            panic!("query {query:?} fails with an index error: {e}")
        }
    }
}

/// `GET /api/v1/logs` parameter handling, as in the API handler.
fn log_params(params: Vec<(String, String)>) -> Result<LogQuery, ApiError> {
    let mut p = ParamReader::new(params);
    let q = p.take("q")?;
    let service = p.take("service")?;
    let min_severity = match p.take("severity")? {
        None => None,
        Some(v) => Some(
            severity_floor(&v)
                .ok_or_else(|| ApiError::new(http::StatusCode::BAD_REQUEST, "bad severity"))?,
        ),
    };
    let (from_ns, to_ns) = p.time_range()?;
    let limit = p.limit()?;
    p.finish()?;
    Ok(LogQuery {
        q,
        service,
        min_severity,
        from_ns,
        to_ns,
        limit,
    })
}

/// The other parameter parsers of the query API, on the same parameters.
fn other_params(params: &[(String, String)]) {
    let mut p = ParamReader::new(params.to_vec());
    let _ = p.duration("min_duration");
    let _ = p.duration("max_duration");
    let _ = p.take_prefixed("attr.");
    let _ = p.finish();
    for (k, v) in params {
        if k == "trace_id" {
            if let Ok(id) = parse_trace_id(v) {
                assert_eq!(v.len(), 32);
                assert_eq!(id.len(), 16);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        let text = String::from_utf8_lossy(rest).into_owned();
        let _ = lookout_collector::api::params::parse_time(&text, NOW_NS);
        let _ = lookout_config::parse_duration(&text);
        let _ = severity_floor(&text);
        run(&LogQuery {
            q: Some(text),
            service: None,
            min_severity: None,
            from_ns: 0,
            to_ns: u64::MAX,
            limit: usize::from(sel >> 1) + 1,
        });
    } else {
        let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(rest) else {
            return;
        };
        other_params(&params);
        if let Ok(query) = log_params(params) {
            assert!(query.from_ns <= query.to_ns);
            run(&query);
        }
    }
});
