//! OTLP ingest: one path for the three signals and both transports, shared by the
//! collector and the agent.
//!
//! `decode → check and limit → enrich → admit (bounded budget) → sink (durable) → respond`.
//! The transports ([`grpc`], [`http`]) only unwrap their framing and map [`IngestError`]
//! to their status codes through one table. The sink is the collector's write-ahead log
//! ([`WalSink`]) or the agent's disk buffer.

pub mod enrich;
pub mod grpc;
pub mod http;
pub mod quota;
pub mod validate;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use lookout_config::LimitsConfig;
use lookout_proto::otlp::common::v1::KeyValue;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::batch::Batch;
use crate::signal::{Signal, Transport};
use crate::wal::Wal;
use validate::{sanitize, Limits};

/// Admission charges a request this many times its protobuf size before decoding it; once
/// decoded, the charge becomes what the request really holds ([`Batch::heap_size`]).
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

/// Why a whole request was refused. [`IngestError::http_status`] and
/// [`IngestError::grpc_code`] are the one mapping table both transports use.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// Malformed or invalid data: never retried.
    #[error("{0}")]
    Invalid(String),
    /// Over a size limit: never retried.
    #[error("{0}")]
    TooLarge(String),
    /// Wrong `Content-Type` or `Content-Encoding` (HTTP only).
    #[error("{0}")]
    UnsupportedMedia(String),
    /// The receiver asks the sender to slow down (a full agent buffer): HTTP 429 and
    /// gRPC RESOURCE_EXHAUSTED, both with a retry hint, so OTLP clients retry.
    #[error("{message}")]
    Throttled {
        /// What is full.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The collector cannot take more now; retry after the hint.
    #[error("{message}")]
    Overloaded {
        /// What is full.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The collector cannot store data now (disk error, shutting down); retry later.
    #[error("{message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
}

impl IngestError {
    /// HTTP status of this error.
    pub fn http_status(&self) -> ::http::StatusCode {
        use ::http::StatusCode as S;
        match self {
            IngestError::Invalid(_) => S::BAD_REQUEST,
            IngestError::TooLarge(_) => S::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedMedia(_) => S::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Throttled { .. } => S::TOO_MANY_REQUESTS,
            IngestError::Overloaded { .. } | IngestError::Unavailable { .. } => {
                S::SERVICE_UNAVAILABLE
            }
        }
    }

    /// gRPC code of this error. Oversize is RESOURCE_EXHAUSTED *without* RetryInfo, which
    /// OTLP clients treat as permanent; overload is UNAVAILABLE with RetryInfo.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            IngestError::Invalid(_) | IngestError::UnsupportedMedia(_) => {
                tonic::Code::InvalidArgument
            }
            IngestError::TooLarge(_) | IngestError::Throttled { .. } => {
                tonic::Code::ResourceExhausted
            }
            IngestError::Overloaded { .. } | IngestError::Unavailable { .. } => {
                tonic::Code::Unavailable
            }
        }
    }

    /// The retry hint, for the retryable errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Overloaded { retry_after, .. }
            | IngestError::Throttled { retry_after, .. }
            | IngestError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Label used for the refused-items counter and the request outcome.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Invalid(_) => "invalid",
            IngestError::TooLarge(_) => "too_large",
            IngestError::UnsupportedMedia(_) => "unsupported_media",
            IngestError::Overloaded { .. } => "overloaded",
            IngestError::Throttled { .. } => "throttled",
            IngestError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Budget of bytes admitted and not yet applied by the stores; bounds memory.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    max: u64,
    /// Bytes asked for by requests waiting for room ([`Budget::take_within`]).
    waiting: AtomicU64,
    /// Woken whenever bytes are given back while someone waits.
    room: tokio::sync::Notify,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
            waiting: AtomicU64::new(0),
            room: tokio::sync::Notify::new(),
        }
    }

    /// Take `n` bytes, waiting up to `wait` for room when they do not fit now. Requests
    /// waiting at once may ask for a quarter of the budget between them (what they hold
    /// meanwhile is outside it); past that, or after `wait`, the answer is `false`.
    ///
    /// Waiting keeps the pipeline busy under overload: a refusal sends the client away
    /// for its retry hint (a second), while room frees as the indexers go on.
    pub async fn take_within(&self, n: u64, wait: Duration) -> bool {
        if self.try_take(n) {
            return true;
        }
        if wait.is_zero() {
            return false;
        }
        let cap = self.max / 4;
        // SeqCst here, in `try_take` and in `release`: a waiter counts itself and then
        // looks at `used`; a release changes `used` and then looks at `waiting`. One of
        // the two must see the other (at worst the wait runs out and tries once more).
        if self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                w.checked_add(n).filter(|&next| next <= cap)
            })
            .is_err()
        {
            return false;
        }
        struct Waiting<'a>(&'a AtomicU64, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(self.1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting, n);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release in between is not missed.
            notified.as_mut().enable();
            if self.try_take(n) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.try_take(n);
            }
        }
    }

    /// Take `n` bytes if they fit, or if nothing is taken (so one request larger than
    /// the whole budget still goes through, alone).
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                let next = u.checked_add(n)?;
                (next <= self.max || u == 0).then_some(next)
            })
            .is_ok()
    }

    /// Take `n` bytes even past the limit (memory that is held already), so admission
    /// stops until they are given back.
    pub fn take(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Give back `n` bytes.
    pub fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Self-metrics of the OTLP receivers; the collector and the agent register them under
/// their own prefix.
#[derive(Clone)]
pub struct ReceiverMetrics {
    /// Items durably accepted, by signal and transport.
    pub accepted_items: IntCounterVec,
    /// Items refused with the whole request (bad data, oversize, overload), by signal,
    /// transport and reason. The client was told; these were never acknowledged.
    pub refused_items: IntCounterVec,
    /// Items dropped from an accepted request and reported in `partial_success`, by
    /// signal, transport and reason.
    pub dropped_items: IntCounterVec,
    /// Requests by signal, transport and outcome (`ok`, `partial`, `invalid`, `too_large`,
    /// `overloaded`, `throttled`, `unavailable`).
    pub requests: IntCounterVec,
    /// Attributes dropped or values truncated by the limits, by signal.
    pub limited_attributes: IntCounterVec,
    /// Bytes of requests admitted and not yet stored (the ingest queue).
    pub pending_bytes: IntGauge,
}

impl ReceiverMetrics {
    /// Create the metrics as `PREFIX_receiver_*` and `PREFIX_ingest_pending_bytes`, and
    /// register them.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c =
                IntCounterVec::new(Opts::new(format!("{prefix}_receiver_{name}"), help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let pending_bytes = IntGauge::new(
            format!("{prefix}_ingest_pending_bytes"),
            "Bytes of admitted requests not yet stored (ingest queue depth).",
        )?;
        registry.register(Box::new(pending_bytes.clone()))?;
        Ok(Self {
            accepted_items: counter(
                "accepted_items_total",
                "Items durably accepted, by signal and transport.",
                &["signal", "transport"],
            )?,
            refused_items: counter(
                "refused_items_total",
                "Items refused together with their whole request, by signal, transport and reason.",
                &["signal", "transport", "reason"],
            )?,
            dropped_items: counter(
                "dropped_items_total",
                "Items dropped from accepted requests and reported in partial_success.",
                &["signal", "transport", "reason"],
            )?,
            requests: counter(
                "requests_total",
                "Export requests by signal, transport and outcome.",
                &["signal", "transport", "outcome"],
            )?,
            limited_attributes: counter(
                "limited_attributes_total",
                "Attributes dropped or values truncated by the configured limits.",
                &["signal"],
            )?,
            pending_bytes,
        })
    }
}

/// Budget bytes held by one request, given back when dropped unless handed over (the
/// collector's stores give it back once the record is applied). Dropping covers every
/// early return and a request abandoned by its client mid-way.
pub struct Charge {
    budget: Arc<Budget>,
    gauge: IntGauge,
    n: u64,
}

impl Charge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.n
    }

    /// Hold `n` bytes instead: the memory a request really takes is known only once it
    /// is decoded. Growing takes past the limit (the memory is in use already), so that
    /// admission stops until it is given back.
    pub fn resize(&mut self, n: u64) {
        if n > self.n {
            self.budget.take(n - self.n);
        } else {
            self.budget.release(self.n - n);
        }
        self.n = n;
        self.gauge.set(self.budget.used() as i64);
    }

    /// Stop tracking the bytes here: whoever takes them must [`Budget::release`] them.
    pub fn hand_over(mut self) -> u64 {
        std::mem::take(&mut self.n)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.release(self.n);
            self.gauge.set(self.budget.used() as i64);
        }
    }
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

/// The collector's sink: its write-ahead log, whose stores release the budget once they
/// have applied a record.
pub struct WalSink {
    wal: Wal,
    budget: Arc<Budget>,
    gauge: IntGauge,
    retry_after: Duration,
}

impl WalSink {
    /// A sink over `wal`.
    pub fn new(
        wal: Wal,
        budget: Arc<Budget>,
        metrics: &ReceiverMetrics,
        retry_after: Duration,
    ) -> Self {
        Self {
            wal,
            budget,
            gauge: metrics.pending_bytes.clone(),
            retry_after,
        }
    }
}

impl IngestSink for WalSink {
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError> {
        let retry_after = self.retry_after;
        let unavailable = move |e: &crate::wal::WalError| IngestError::Unavailable {
            message: format!("cannot store the batch: {e}"),
            retry_after,
        };
        let n = req.charge.bytes();
        let fut = match self.wal.submit(req.signal, req.payload, Some(req.batch), n) {
            Ok(fut) => {
                // From here the stores release the budget, even if the request is abandoned.
                req.charge.hand_over();
                fut
            }
            Err(e) => return Err(unavailable(&e)),
        };
        let (budget, gauge) = (self.budget.clone(), self.gauge.clone());
        Ok(Box::pin(async move {
            match fut.await {
                Ok(_lsn) => Ok(()),
                Err(e) => {
                    if !matches!(*e, crate::wal::WalError::Closed) {
                        // A failed write is never dispatched to the stores.
                        budget.release(n);
                        gauge.set(budget.used() as i64);
                    }
                    Err(unavailable(&e))
                }
            }
        }))
    }
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

/// Wall clock in Unix nanoseconds.
pub fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
        let charge = self
            .admit(signal, transport, body.len() as u64 * DECODED_EXPANSION)
            .await?;
        let body_len = body.len();
        let this = self.clone();
        let work = move || this.prepare_bytes(signal, body, encoding);
        let prepared = if body_len > INLINE_DECODE_LIMIT {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(|e| IngestError::Unavailable {
                    message: format!("decoder task failed: {e}"),
                    retry_after: self.opts.retry_after,
                })?
        } else {
            work()
        };
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
        let prepared = if wire_size > INLINE_DECODE_LIMIT {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.prepare(batch, None))
                .await
                .map_err(|e| IngestError::Unavailable {
                    message: format!("encoder task failed: {e}"),
                    retry_after: self.opts.retry_after,
                })?
        } else {
            self.prepare(batch, None)
        };
        self.finish(signal, transport, prepared, charge).await
    }

    async fn admit(
        &self,
        signal: Signal,
        transport: Transport,
        charge: u64,
    ) -> Result<Charge, IngestError> {
        if self
            .budget
            .take_within(charge, self.opts.admission_wait)
            .await
        {
            self.metrics.pending_bytes.set(self.budget.used() as i64);
            return Ok(Charge {
                budget: self.budget.clone(),
                gauge: self.metrics.pending_bytes.clone(),
                n: charge,
            });
        }
        let e = IngestError::Overloaded {
            message: format!(
                "collector is overloaded: {} bytes are waiting to be indexed (limit {}); retry later",
                self.budget.used(),
                self.budget.max
            ),
            retry_after: self.opts.retry_after,
        };
        self.count_refused(signal, transport, &e, None);
        Err(e)
    }

    fn prepare_bytes(
        &self,
        signal: Signal,
        body: bytes::Bytes,
        encoding: Encoding,
    ) -> Result<Prepared, IngestError> {
        let batch = match encoding {
            Encoding::Protobuf => Batch::decode_protobuf(signal, &body).map_err(|e| {
                IngestError::Invalid(format!("invalid protobuf {}: {e}", request_name(signal)))
            })?,
            Encoding::Json => Batch::decode_json(signal, &body).map_err(|e| {
                IngestError::Invalid(format!("invalid OTLP/JSON {}: {e}", request_name(signal)))
            })?,
        };
        let raw = (encoding == Encoding::Protobuf).then_some(body);
        self.prepare(batch, raw)
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
            return Err(IngestError::TooLarge(format!(
                "{items} {} in one request, more than the limit of {}; send smaller batches",
                batch.signal().item_name(),
                self.opts.max_items_per_request
            )));
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

fn request_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Traces => "ExportTraceServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
        Signal::Metrics => "ExportMetricsServiceRequest",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wal::{Checkpoints, WalOptions};

    fn ingest(dir: &std::path::Path, budget: Arc<Budget>) -> Arc<Ingest> {
        ingest_with(dir, budget, &lookout_config::LimitsConfig::default())
    }

    fn ingest_with(
        dir: &std::path::Path,
        budget: Arc<Budget>,
        limits: &lookout_config::LimitsConfig,
    ) -> Arc<Ingest> {
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let (wal, _h) = Wal::open(
            dir,
            WalOptions {
                segment_size: 1 << 20,
                fsync: false,
            },
            Arc::new(Checkpoints::default()),
            metrics.clone(),
            Box::new(|_| {}),
        )
        .unwrap();
        let cfg = lookout_config::CollectorConfig::default();
        let opts = IngestOptions::new(limits, cfg.ingest.retry_after.get());
        let sink = WalSink::new(wal, budget.clone(), &metrics.receiver, opts.retry_after);
        Arc::new(Ingest::new(
            opts,
            Arc::new(sink),
            budget,
            metrics.receiver.clone(),
        ))
    }

    #[test]
    fn budget_takes_a_lone_oversize_request_and_charges_can_grow() {
        let budget = Arc::new(Budget::new(100));
        assert!(
            budget.try_take(150),
            "nothing waits: an oversize request goes alone"
        );
        assert!(!budget.try_take(1), "and then nothing else");
        budget.release(150);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(60), "60 + 60 is past the limit");
        let gauge = IntGauge::new("pending", "pending").unwrap();
        let mut charge = Charge {
            budget: budget.clone(),
            gauge: gauge.clone(),
            n: 30,
        };
        budget.take(30);
        charge.resize(200);
        assert_eq!(budget.used(), 260, "growing takes past the limit");
        assert_eq!(gauge.get(), 260);
        charge.resize(10);
        assert_eq!(budget.used(), 70);
        drop(charge);
        assert_eq!(budget.used(), 60);
    }

    #[tokio::test]
    async fn a_waiting_request_is_admitted_when_room_frees_and_refused_after_its_wait() {
        let budget = Arc::new(Budget::new(100));
        assert!(budget.try_take(90));
        // Room frees while it waits: admitted without waiting out the whole wait.
        let b = budget.clone();
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            b.release(90);
        });
        let t = std::time::Instant::now();
        assert!(budget.take_within(20, Duration::from_secs(10)).await);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        freer.await.unwrap();
        assert_eq!(budget.used(), 20);
        assert_eq!(budget.waiting.load(Ordering::Acquire), 0);
        // No room comes: refused once the wait is over.
        assert!(budget.try_take(80));
        let t = std::time::Instant::now();
        assert!(!budget.take_within(20, Duration::from_millis(100)).await);
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Waiters may ask for a quarter of the budget (25) between them: while one of 20
        // waits, one of 10 is refused at once; so is any request with no wait.
        let b = budget.clone();
        let waiter = tokio::spawn(async move { b.take_within(20, Duration::from_secs(10)).await });
        while budget.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let t = std::time::Instant::now();
        assert!(!budget.take_within(10, Duration::from_secs(10)).await);
        assert!(!budget.take_within(5, Duration::ZERO).await);
        assert!(t.elapsed() < Duration::from_secs(5));
        budget.release(100);
        assert!(waiter.await.unwrap(), "the waiter gets the room");
        assert_eq!(budget.used(), 20);
    }

    #[tokio::test]
    async fn full_budget_means_overloaded_with_a_retry_hint() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(Budget::new(1000));
        let ingest = ingest(dir.path(), budget.clone());
        assert!(budget.try_take(990));
        let e = ingest
            .export_bytes(
                Signal::Logs,
                Transport::Http,
                bytes::Bytes::from(vec![0u8; 20]),
                Encoding::Protobuf,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, IngestError::Overloaded { .. }), "{e}");
        assert_eq!(e.http_status(), ::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        let status = grpc::to_status(&e);
        use tonic_types::StatusExt;
        assert!(
            status.get_details_retry_info().is_some(),
            "RetryInfo is attached"
        );
        // Once the stores catch up, the same request is admitted.
        budget.release(990);
        let a = ingest
            .export_bytes(
                Signal::Logs,
                Transport::Http,
                bytes::Bytes::new(),
                Encoding::Protobuf,
            )
            .await
            .unwrap();
        assert_eq!(a.accepted, 0);
        assert_eq!(budget.used(), 0, "an empty request gives its budget back");
    }

    #[test]
    fn oversize_is_permanent_not_retryable() {
        let e = IngestError::TooLarge("x".into());
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.retry_after(), None);
        use tonic_types::StatusExt;
        assert!(grpc::to_status(&e).get_details_retry_info().is_none());
    }

    /// Logs of several services, `(service, records)`.
    fn logs_of(services: &[(&str, usize)]) -> bytes::Bytes {
        use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
        use lookout_proto::otlp::common::v1::{any_value, AnyValue};
        use lookout_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use lookout_proto::otlp::resource::v1::Resource;
        use prost::Message;
        let now = now_unix_nano();
        let req = ExportLogsServiceRequest {
            resource_logs: services
                .iter()
                .map(|(svc, n)| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(svc.to_string())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        log_records: (0..*n)
                            .map(|_| LogRecord {
                                time_unix_nano: now,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        bytes::Bytes::from(req.encode_to_vec())
    }

    #[tokio::test]
    async fn items_per_request_and_per_service_rates_are_limited() {
        let dir = tempfile::tempdir().unwrap();
        let limits = lookout_config::LimitsConfig {
            max_items_per_request: 500,
            max_items_per_second_per_service: 100,
            ..Default::default()
        };
        let ingest = ingest_with(dir.path(), Arc::new(Budget::new(64 << 20)), &limits);
        let send =
            |body| ingest.export_bytes(Signal::Logs, Transport::Http, body, Encoding::Protobuf);

        let e = send(logs_of(&[("a", 300), ("b", 201)])).await.unwrap_err();
        assert!(matches!(e, IngestError::TooLarge(_)), "{e}");
        assert!(
            e.to_string().contains("501 log records in one request"),
            "{e}"
        );
        assert_eq!(e.retry_after(), None);

        // The burst (2 × rate) of "a" passes, then "a" alone is throttled with a hint.
        assert_eq!(send(logs_of(&[("a", 200)])).await.unwrap().accepted, 200);
        let e = send(logs_of(&[("a", 10)])).await.unwrap_err();
        assert!(matches!(e, IngestError::Throttled { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("service \"a\" is over its ingest rate"),
            "{e}"
        );
        assert_eq!(e.http_status(), ::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.grpc_code(), tonic::Code::ResourceExhausted);
        assert!(e.retry_after().unwrap() >= Duration::from_secs(1));

        // A request mixing services keeps the others and names the rejected one.
        let a = send(logs_of(&[("a", 7), ("b", 5)])).await.unwrap();
        assert_eq!((a.accepted, a.rejected), (5, 7));
        assert!(
            a.message
                .contains("7 log records of service \"a\" rejected"),
            "{}",
            a.message
        );
    }
}
