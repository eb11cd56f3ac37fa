//! OTLP ingest: one path for the three signals and both transports, shared by the
//! collector and the agent.
//!
//! `decode → check and limit → enrich → admit (bounded budget) → sink (durable) → respond`.
//! The transports ([`grpc`], [`http`]) only unwrap their framing and map [`IngestError`]
//! to their status codes through one table. The sink is the collector's write-ahead log
//! or the agent's disk buffer, behind [`IngestSink`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lookout_config::LimitsConfig;
use lookout_proto::otlp::common::v1::KeyValue;

use crate::batch::Batch;
use crate::budget::{Budget, Charge};
use crate::clock::now_unix_nano;
use crate::enrich;
use crate::error::IngestError;
use crate::metrics::ReceiverMetrics;
use crate::prescan;
use crate::quota;
use crate::signal::{Signal, Transport};
use crate::validate::{self, sanitize, Limits};

/// Admission charges a batch decoded elsewhere (OTLP/gRPC) this many times its wire size.
/// A protobuf body is charged what [`prescan`] finds it will hold; an OTLP/JSON body is
/// charged its size, then what its decoding allocates as it grows. Once decoded, the
/// charge becomes what the request really holds ([`Batch::heap_size`]).
const DECODED_EXPANSION: u64 = 3;

/// Bodies larger than this are decoded on the blocking pool, off the reactor.
const INLINE_DECODE_LIMIT: usize = 64 << 10;

/// Encoding of an OTLP/HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP/JSON).
    Json,
}

/// A request that was durably accepted, maybe in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Items stored.
    pub accepted: u64,
    /// Items removed by the checks, reported in `partial_success`.
    pub rejected: u64,
    /// Why they were removed; empty when none were.
    pub message: String,
}

/// A checked request on its way to durable storage.
pub struct SinkRequest {
    /// Signal of the request.
    pub signal: Signal,
    /// Protobuf export request to store.
    pub payload: bytes::Bytes,
    /// The same request, decoded.
    pub batch: Batch,
    /// Items in it.
    pub items: u64,
    /// Budget held for it; dropping it gives the budget back.
    pub charge: Charge,
}

/// Durable storage behind the receivers.
pub trait IngestSink: Send + Sync + 'static {
    /// Take the request now, and return a future that resolves once it is durable. An
    /// error from either step means nothing was stored; its kind tells the client
    /// whether to retry.
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError>;
}

/// Settings of the ingest path.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Attribute limits.
    pub limits: Limits,
    /// Timestamps further than this in the future are refused.
    pub max_future_skew: Duration,
    /// Retry hint of retryable refusals.
    pub retry_after: Duration,
    /// How long a request may wait for room in the ingest queue before it is refused as
    /// overloaded; zero refuses at once.
    pub admission_wait: Duration,
    /// Resource attributes added where a resource lacks them (the agent's enrichment).
    pub resource_defaults: Vec<KeyValue>,
    /// Most items in one request.
    pub max_items_per_request: u64,
    /// Items per second per service; 0 = no limit.
    pub max_items_per_second_per_service: u64,
}

impl IngestOptions {
    /// Options from a `[limits]` table.
    pub fn new(limits: &LimitsConfig, retry_after: Duration) -> Self {
        Self {
            limits: Limits {
                max_attributes: limits.max_attributes as usize,
                max_attribute_length: limits.max_attribute_length.as_usize(),
                max_time_unix_nano: 0,
                max_span_duration_nanos: u64::try_from(limits.max_span_duration.get().as_nanos())
                    .unwrap_or(u64::MAX),
            },
            max_future_skew: limits.max_future_skew.get(),
            retry_after,
            admission_wait: Duration::ZERO,
            resource_defaults: Vec::new(),
            max_items_per_request: limits.max_items_per_request,
            max_items_per_second_per_service: limits.max_items_per_second_per_service,
        }
    }
}

/// The ingest path shared by every receiver.
pub struct Ingest {
    sink: Arc<dyn IngestSink>,
    opts: IngestOptions,
    /// Shared with the sink, which releases what it stored.
    pub budget: Arc<Budget>,
    metrics: ReceiverMetrics,
    rates: Option<quota::ServiceRates>,
}

impl Ingest {
    /// Build the ingest path over `sink`.
    pub fn new(
        opts: IngestOptions,
        sink: Arc<dyn IngestSink>,
        budget: Arc<Budget>,
        metrics: ReceiverMetrics,
    ) -> Self {
        Self {
            sink,
            rates: quota::ServiceRates::new(opts.max_items_per_second_per_service),
            opts,
            budget,
            metrics,
        }
    }

    /// Accept an encoded body (OTLP/HTTP).
    pub async fn export_bytes(
        self: &Arc<Self>,
        signal: Signal,
        transport: Transport,
        body: bytes::Bytes,
        encoding: Encoding,
    ) -> Result<Accepted, IngestError> {
        self.export_bytes_held(signal, transport, body, encoding, None)
            .await
    }

    /// [`Ingest::export_bytes`] for a body already held against the budget by `held`
    /// (inflated from gzip or zstd): it stays counted while the request waits for the
    /// rest of its admission, instead of being held uncounted meanwhile.
    pub async fn export_bytes_held(
        self: &Arc<Self>,
        signal: Signal,
        transport: Transport,
        body: bytes::Bytes,
        encoding: Encoding,
        held: Option<Charge>,
    ) -> Result<Accepted, IngestError> {
        let need = match encoding {
            Encoding::Protobuf => self.size_protobuf(signal, transport, &body).await?,
            Encoding::Json => body.len() as u64,
        };
        let already = held.as_ref().map_or(0, Charge::bytes);
        let mut charge = self
            .admit(signal, transport, need.saturating_sub(already))
            .await?;
        if let Some(held) = held {
            charge.absorb(held);
        }
        let this = self.clone();
        let (prepared, charge) = self
            .off_reactor(body.len(), "decoder", move || {
                this.prepare_bytes(signal, body, encoding, charge)
            })
            .await?;
        self.finish(signal, transport, prepared, charge).await
    }

    /// Accept an already decoded batch (OTLP/gRPC, demo traffic).
    pub async fn export_batch(
        self: &Arc<Self>,
        batch: Batch,
        transport: Transport,
        wire_size: usize,
    ) -> Result<Accepted, IngestError> {
        let signal = batch.signal();
        let charge = self
            .admit(signal, transport, wire_size as u64 * DECODED_EXPANSION)
            .await?;
        let this = self.clone();
        let prepared = self
            .off_reactor(wire_size, "encoder", move || this.prepare(batch, None))
            .await?;
        self.finish(signal, transport, prepared, charge).await
    }

    /// Run `work` on a request of `size` bytes: inline when small, on the blocking pool
    /// when large, so that the reactor is never held for long.
    async fn off_reactor<T: Send + 'static>(
        &self,
        size: usize,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, IngestError> {
        if size <= INLINE_DECODE_LIMIT {
            return Ok(work());
        }
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| IngestError::Unavailable {
                message: format!("{what} task failed: {e}"),
                retry_after: self.opts.retry_after,
            })
    }

    /// What decoding `body` will hold, found before decoding it ([`prescan`]): a request
    /// that cannot be framed, holds too many items, or would take more than the whole
    /// ingest budget once decoded is refused here, before it is allocated.
    async fn size_protobuf(
        self: &Arc<Self>,
        signal: Signal,
        transport: Transport,
        body: &bytes::Bytes,
    ) -> Result<u64, IngestError> {
        let b = body.clone();
        let scanned = self
            .off_reactor(body.len(), "decoder", move || prescan::scan(signal, &b))
            .await?;
        let refuse = |e: IngestError, items: Option<u64>| {
            self.count_refused(signal, transport, &e, items);
            Err(e)
        };
        let shape = match scanned {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    IngestError::Invalid(format!("invalid protobuf {}: {e}", request_name(signal))),
                    None,
                )
            }
        };
        if shape.items > self.opts.max_items_per_request {
            return refuse(
                too_many_items(signal, shape.items, self.opts.max_items_per_request),
                Some(shape.items),
            );
        }
        if shape.decoded_bytes > self.budget.max() {
            return refuse(
                IngestError::TooLarge(format!(
                    "{} of {} bytes would take {} bytes decoded, more than the whole ingest \
                     budget ({} bytes); send fewer {} or attributes per request",
                    request_name(signal),
                    body.len(),
                    shape.decoded_bytes,
                    self.budget.max(),
                    signal.item_name()
                )),
                Some(shape.items),
            );
        }
        Ok(shape.decoded_bytes + body.len() as u64)
    }

    async fn admit(
        &self,
        signal: Signal,
        transport: Transport,
        charge: u64,
    ) -> Result<Charge, IngestError> {
        let charged = self.reserve(charge).await;
        if let Err(e) = &charged {
            self.count_refused(signal, transport, e, None);
        }
        charged
    }

    /// `n` bytes of the ingest budget, waiting for room as admission does; the refusal is
    /// not counted (the caller counts it with the request).
    pub(crate) async fn reserve(&self, n: u64) -> Result<Charge, IngestError> {
        match self.budget.charge_within(n, self.opts.admission_wait).await {
            Some(charge) => Ok(charge),
            None => Err(self.overloaded()),
        }
    }

    /// The refusal of a request the budget has no room for.
    pub(crate) fn overloaded(&self) -> IngestError {
        IngestError::Overloaded {
            message: format!(
                "collector is overloaded: {} bytes are waiting to be indexed (limit {}); retry later",
                self.budget.used(),
                self.budget.max()
            ),
            retry_after: self.opts.retry_after,
        }
    }

    fn prepare_bytes(
        &self,
        signal: Signal,
        body: bytes::Bytes,
        encoding: Encoding,
        mut charge: Charge,
    ) -> (Result<Prepared, IngestError>, Charge) {
        let batch = match encoding {
            Encoding::Protobuf => Batch::decode_protobuf(signal, &body).map_err(|e| {
                IngestError::Invalid(format!("invalid protobuf {}: {e}", request_name(signal)))
            }),
            Encoding::Json => self.decode_json(signal, &body, &mut charge),
        };
        let raw = (encoding == Encoding::Protobuf).then_some(body);
        (batch.and_then(|b| self.prepare(b, raw)), charge)
    }

    /// Decodes an OTLP/JSON body, growing `charge` with what the decoding allocates:
    /// a request that would take more than the whole budget is refused (413), one the
    /// budget has no room for now is refused as overload (503), both as soon as they pass.
    fn decode_json(
        &self,
        signal: Signal,
        body: &[u8],
        charge: &mut Charge,
    ) -> Result<Batch, IngestError> {
        let base = charge.bytes();
        let max = self.budget.max();
        let mut refusal = None;
        let decoded = Batch::decode_json_metered(signal, body, &mut |heap| {
            if heap > max {
                refusal = Some(IngestError::TooLarge(format!(
                    "{} of {} bytes would take over {max} bytes decoded, more than the \
                     whole ingest budget ({max} bytes); send fewer {} or attributes per request",
                    request_name(signal),
                    body.len(),
                    signal.item_name()
                )));
                return Err(format!("decoded request passes {max} bytes"));
            }
            if !charge.try_grow(base.saturating_add(heap)) {
                refusal = Some(self.overloaded());
                return Err("no room left in the ingest budget".to_owned());
            }
            Ok(())
        });
        decoded.map_err(|e| {
            refusal.unwrap_or_else(|| {
                IngestError::Invalid(format!("invalid OTLP/JSON {}: {e}", request_name(signal)))
            })
        })
    }

    /// Check and limit; encode for the WAL unless the raw protobuf can be kept as is.
    fn prepare(
        &self,
        mut batch: Batch,
        raw: Option<bytes::Bytes>,
    ) -> Result<Prepared, IngestError> {
        let limits = Limits {
            max_time_unix_nano: now_unix_nano().saturating_add(
                u64::try_from(self.opts.max_future_skew.as_nanos()).unwrap_or(u64::MAX),
            ),
            ..self.opts.limits.clone()
        };
        let items = batch.item_count();
        if items > self.opts.max_items_per_request {
            return Err(too_many_items(
                batch.signal(),
                items,
                self.opts.max_items_per_request,
            ));
        }
        let mut report = sanitize(&mut batch, &limits, now_unix_nano());
        let rate_limited = self.apply_rates(&mut batch, &mut report)?;
        let accepted = batch.item_count();
        if report.limited > 0 {
            self.metrics
                .limited_attributes
                .with_label_values(&[batch.signal().as_str()])
                .inc_by(report.limited);
        }
        if accepted == 0 && report.rejected > 0 {
            return Err(IngestError::Invalid(format!(
                "every item was invalid ({} {}): {}",
                report.rejected,
                batch.signal().item_name(),
                report.message
            )));
        }
        let missing = enrich::missing(&batch, &self.opts.resource_defaults);
        let enriched = enrich::add_to_batch(&mut batch, &missing);
        let payload = match raw {
            Some(raw) if !report.modified => {
                if enriched {
                    enrich::append_to_raw(&raw, &missing).map_err(|e| {
                        IngestError::Invalid(format!(
                            "invalid protobuf {}: {e}",
                            request_name(batch.signal())
                        ))
                    })?
                } else {
                    raw
                }
            }
            _ => bytes::Bytes::from(batch.encode_protobuf()),
        };
        let held = batch.heap_size() + payload.len() as u64;
        Ok(Prepared {
            batch,
            payload,
            held,
            accepted,
            rejected: report.rejected,
            rate_limited,
            message: report.message,
        })
    }

    /// Enforce the per-service rates: `Err(Throttled)` when every service of the batch is
    /// over its rate, else the items of those over it are removed and reported; returns
    /// how many.
    fn apply_rates(
        &self,
        batch: &mut Batch,
        report: &mut validate::Report,
    ) -> Result<u64, IngestError> {
        let Some(rates) = &self.rates else {
            return Ok(0);
        };
        let counts = quota::items_by_service(batch);
        let over = rates.take(&counts, std::time::Instant::now());
        if over.is_empty() {
            return Ok(0);
        }
        let names = over
            .iter()
            .map(|o| format!("{:?}", o.service))
            .collect::<Vec<_>>()
            .join(", ");
        let what = batch.signal().item_name();
        if over.len() == counts.len() {
            let wait = over.iter().map(|o| o.wait).max().unwrap_or_default();
            return Err(IngestError::Throttled {
                message: format!(
                    "service {names} is over its ingest rate of {} {what}/s; retry later",
                    rates.rate()
                ),
                retry_after: wait.max(Duration::from_secs(1)),
            });
        }
        let dropped: u64 = over.iter().map(|o| o.items).sum();
        quota::drop_services(batch, &over);
        report.rejected += dropped;
        report.modified = true;
        let msg = format!(
            "{dropped} {what} of service {names} rejected: over the ingest rate of {}/s",
            rates.rate()
        );
        if report.message.is_empty() {
            report.message = msg;
        } else {
            report.message = format!("{}; {msg}", report.message);
        }
        Ok(dropped)
    }

    async fn finish(
        &self,
        signal: Signal,
        transport: Transport,
        prepared: Result<Prepared, IngestError>,
        mut charge: Charge,
    ) -> Result<Accepted, IngestError> {
        let p = match prepared {
            Ok(p) => p,
            Err(e) => {
                drop(charge);
                self.count_refused(signal, transport, &e, None);
                return Err(e);
            }
        };
        if p.accepted == 0 {
            // Nothing to store (an empty request is valid OTLP).
            drop(charge);
            self.count_ok(signal, transport, 0, 0, 0);
            return Ok(Accepted {
                accepted: 0,
                rejected: 0,
                message: String::new(),
            });
        }
        charge.resize(p.held);
        let stored = match self.sink.submit(SinkRequest {
            signal,
            payload: p.payload,
            batch: p.batch,
            items: p.accepted,
            charge,
        }) {
            Ok(fut) => fut.await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                self.count_ok(signal, transport, p.accepted, p.rejected, p.rate_limited);
                Ok(Accepted {
                    accepted: p.accepted,
                    rejected: p.rejected,
                    message: p.message,
                })
            }
            Err(e) => {
                self.count_refused(signal, transport, &e, Some(p.accepted + p.rejected));
                Err(e)
            }
        }
    }

    fn count_ok(
        &self,
        signal: Signal,
        transport: Transport,
        accepted: u64,
        rejected: u64,
        rate_limited: u64,
    ) {
        let (s, t) = (signal.as_str(), transport.as_str());
        self.metrics
            .accepted_items
            .with_label_values(&[s, t])
            .inc_by(accepted);
        let invalid = rejected.saturating_sub(rate_limited);
        if invalid > 0 {
            self.metrics
                .dropped_items
                .with_label_values(&[s, t, "invalid"])
                .inc_by(invalid);
        }
        if rate_limited > 0 {
            self.metrics
                .dropped_items
                .with_label_values(&[s, t, "rate_limited"])
                .inc_by(rate_limited);
        }
        let outcome = if rejected > 0 { "partial" } else { "ok" };
        self.metrics
            .requests
            .with_label_values(&[s, t, outcome])
            .inc();
    }

    /// Count a refused request; `items` when known (unknown for undecodable bodies).
    pub fn count_refused(
        &self,
        signal: Signal,
        transport: Transport,
        e: &IngestError,
        items: Option<u64>,
    ) {
        let (s, t) = (signal.as_str(), transport.as_str());
        if let Some(n) = items {
            self.metrics
                .refused_items
                .with_label_values(&[s, t, e.reason()])
                .inc_by(n);
        }
        self.metrics
            .requests
            .with_label_values(&[s, t, e.reason()])
            .inc();
    }
}

struct Prepared {
    batch: Batch,
    payload: bytes::Bytes,
    /// Bytes of `batch` and `payload` in memory.
    held: u64,
    accepted: u64,
    /// Removed by the checks, `rate_limited` of them by the per-service rates.
    rejected: u64,
    rate_limited: u64,
    message: String,
}

/// The export response of `signal` in `encoding`, with `partial_success` when items were
/// rejected.
pub fn encode_response(signal: Signal, encoding: Encoding, a: &Accepted) -> Vec<u8> {
    use lookout_proto::otlp::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceResponse,
    };
    use lookout_proto::otlp::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
    };
    use lookout_proto::otlp::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message;

    use lookout_proto::json;
    let rejected = i64::try_from(a.rejected).unwrap_or(i64::MAX);
    let msg = a.message.clone();
    let partial = a.rejected > 0;
    match (signal, encoding) {
        (Signal::Traces, enc) => {
            let r = ExportTraceServiceResponse {
                partial_success: partial.then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: msg,
                }),
            };
            match enc {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => json::encode_trace_response(&r),
            }
        }
        (Signal::Logs, enc) => {
            let r = ExportLogsServiceResponse {
                partial_success: partial.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: msg,
                }),
            };
            match enc {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => json::encode_logs_response(&r),
            }
        }
        (Signal::Metrics, enc) => {
            let r = ExportMetricsServiceResponse {
                partial_success: partial.then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: msg,
                }),
            };
            match enc {
                Encoding::Protobuf => r.encode_to_vec(),
                Encoding::Json => json::encode_metrics_response(&r),
            }
        }
    }
}

fn too_many_items(signal: Signal, items: u64, max: u64) -> IngestError {
    IngestError::TooLarge(format!(
        "{items} {} in one request, more than the limit of {max}; send smaller batches",
        signal.item_name()
    ))
}

fn request_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "ExportTraceServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
        Signal::Metrics => "ExportMetricsServiceRequest",
    }
}
