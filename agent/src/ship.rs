//! Shipping: read the buffer in order, batch, compress, export to the collector, retry
//! what may be retried, and acknowledge to the buffer in order.
//!
//! A batcher thread reads records and merges consecutive records of one signal into one
//! export request (concatenated protobuf export requests are one valid request: the
//! repeated top-level field just continues). Up to `concurrency` requests are in flight;
//! the buffer's acknowledged position only moves past a request once it and every
//! request before it are done, so a crash never skips an unsent batch.
//!
//! Outcomes follow the OTLP specification: success (with `partial_success` rejections
//! counted); retryable failures (gRPC UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
//! OUT_OF_RANGE, DATA_LOSS, CANCELLED, RESOURCE_EXHAUSTED with RetryInfo; HTTP 429, 502,
//! 503, 504; connection errors and timeouts) are retried without end, with exponential
//! backoff and jitter or the server's hint, since the data is safe on disk; permanent
//! failures (INVALID_ARGUMENT, HTTP 400, 413, ...) drop the batch with a counter and a log
//! line. Authentication failures are retried slowly rather than dropped, so that fixing a
//! token loses nothing.
//!
//! In cluster mode ([`crate::cluster`]) each record is published to the cluster's stream
//! on its own, never merged with others: a record sent again after a crash must split
//! into the same messages, with the same ids, for JetStream to recognise them.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lookout_config::{Compression, ExportProtocol, ExporterConfig};
use lookout_ingest::grpc::RawCodec;
use lookout_proto::otlp::collector::logs::v1::ExportLogsServiceResponse;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceResponse;
use lookout_proto::otlp::collector::trace::v1::ExportTraceServiceResponse;
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use prost::Message;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::buffer::{Buffer, Delivered, Pos, Read};
use crate::cluster::{ClusterSetup, Published, StreamLink};
use crate::sink::Signal;

/// Longest wait a server's retry hint can impose.
const MAX_HINT: Duration = Duration::from_secs(300);

/// Self-metrics of shipping.
#[derive(Clone)]
pub struct ShipMetrics {
    /// Items the collector accepted, by signal.
    pub sent_items: IntCounterVec,
    /// Items the collector rejected in `partial_success`, by signal.
    pub rejected_items: IntCounterVec,
    /// Items dropped after a permanent error, by signal and reason.
    pub dropped_items: IntCounterVec,
    /// Retries, by signal and reason.
    pub retries: IntCounterVec,
    /// Items not sent again after a restart because the collector had acknowledged them
    /// before the shutdown, by signal.
    pub skipped_items: IntCounterVec,
    /// Export attempts, by signal and outcome.
    pub requests: IntCounterVec,
    /// Export requests in flight.
    pub inflight: IntGauge,
    /// Age of the oldest record not yet acknowledged by the collector, in seconds.
    pub lag_seconds: prometheus::Gauge,
    /// Duration of export attempts.
    pub request_seconds: Histogram,
}

impl ShipMetrics {
    /// Create and register on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let cv = |n: &str, h: &str, l: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(n, h), l)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let inflight = IntGauge::new(
            "lookout_agent_exporter_inflight_requests",
            "Export requests in flight.",
        )?;
        registry.register(Box::new(inflight.clone()))?;
        let lag_seconds = prometheus::Gauge::new(
            "lookout_agent_exporter_lag_seconds",
            "Age of the oldest buffered record not yet acknowledged by the collector.",
        )?;
        registry.register(Box::new(lag_seconds.clone()))?;
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "lookout_agent_exporter_request_seconds",
                "Duration of export attempts.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )?;
        registry.register(Box::new(request_seconds.clone()))?;
        Ok(Self {
            sent_items: cv(
                "lookout_agent_exporter_sent_items_total",
                "Items accepted by the collector, by signal.",
                &["signal"],
            )?,
            rejected_items: cv(
                "lookout_agent_exporter_rejected_items_total",
                "Items the collector rejected in partial_success, by signal.",
                &["signal"],
            )?,
            dropped_items: cv(
                "lookout_agent_exporter_dropped_items_total",
                "Items dropped after a permanent export error, by signal and reason.",
                &["signal", "reason"],
            )?,
            retries: cv(
                "lookout_agent_exporter_retries_total",
                "Export retries, by signal and reason.",
                &["signal", "reason"],
            )?,
            skipped_items: cv(
                "lookout_agent_exporter_skipped_items_total",
                "Items not sent again after a restart: the collector acknowledged them before the shutdown, out of order.",
                &["signal"],
            )?,
            requests: cv(
                "lookout_agent_exporter_requests_total",
                "Export attempts, by signal and outcome (ok, retry, dropped).",
                &["signal", "outcome"],
            )?,
            inflight,
            lag_seconds,
            request_seconds,
        })
    }
}

/// What [`spawn`] needs.
pub struct ShipperSetup {
    /// The buffer to read.
    pub buffer: Buffer,
    /// Exporter settings.
    pub cfg: ExporterConfig,
    /// Collector endpoint (gRPC address or OTLP/HTTP base URL).
    pub endpoint: String,
    /// Self-metrics.
    pub metrics: ShipMetrics,
    /// Cluster mode: publish to this stream instead of exporting to `endpoint`.
    pub cluster: Option<ClusterSetup>,
}

/// One export request assembled from consecutive records.
struct Batch {
    id: u64,
    signal: Signal,
    payload: Vec<u8>,
    items: u64,
    /// End of the record before this batch's first one.
    start: Pos,
    /// Records the collector acknowledged before the last shutdown: not sent again.
    delivered: bool,
}

/// Requests in flight, in buffer order; the ack moves over the done prefix.
struct Inflight {
    base: u64,
    slots: VecDeque<Slot>,
}

struct Slot {
    start: Pos,
    end: Pos,
    items: u64,
    first_time: u64,
    done: bool,
}

/// How one export attempt went.
#[derive(Debug)]
enum Outcome {
    Ok {
        rejected: u64,
        message: String,
    },
    Retry {
        hint: Option<Duration>,
        reason: &'static str,
        why: String,
    },
    Permanent {
        reason: &'static str,
        why: String,
    },
}

/// Persist the buffer's ack position every 200 ms until `token` is cancelled.
fn spawn_ack_flusher(buffer: Buffer, token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !token.is_cancelled() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = token.cancelled() => break,
            }
            let b = buffer.clone();
            match tokio::task::spawn_blocking(move || b.flush_ack()).await {
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot persist the buffer's ack position")
                }
                Err(e) => tracing::error!(error = %e, "ack flush task failed"),
                Ok(Ok(())) => {}
            }
        }
    })
}

impl Outcome {
    /// The `outcome` label of `lookout_agent_exporter_requests_total`.
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok { .. } => "ok",
            Outcome::Retry { .. } => "retry",
            Outcome::Permanent { .. } => "dropped",
        }
    }
}

enum Client {
    /// The configured compression, and gzip for receivers that do not take zstd.
    Grpc {
        main: Box<tonic::client::Grpc<Channel>>,
        gzip: Box<tonic::client::Grpc<Channel>>,
    },
    Http(reqwest::Client),
    /// Cluster mode: the stream, connected in the background.
    Cluster(StreamLink),
}

/// Start shipping; the task ends when `shutdown` is cancelled (after a grace period for
/// requests in flight) or when the buffer is closed and drained.
pub fn spawn(
    setup: ShipperSetup,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let token = BearerToken::load(setup.cfg.bearer_token_file.clone())?;
    let https = setup.endpoint.starts_with("https://");
    let merge = setup.cluster.is_none();
    let client = match (setup.cluster, setup.cfg.protocol) {
        (Some(cluster), _) => Client::Cluster(StreamLink::spawn(
            cluster,
            setup.cfg.retry_initial_interval.get(),
            setup.cfg.retry_max_interval.get(),
            shutdown.clone(),
        )),
        (None, ExportProtocol::Grpc) => {
            let mut endpoint = Channel::from_shared(setup.endpoint.clone())?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            if https {
                endpoint = endpoint.tls_config(grpc_tls(&setup.cfg.tls)?)?;
            }
            let channel = endpoint.connect_lazy();
            let g = tonic::client::Grpc::new(channel)
                .max_decoding_message_size(16 << 20)
                .accept_compressed(CompressionEncoding::Gzip);
            let gzip = g.clone().send_compressed(CompressionEncoding::Gzip);
            let main = match setup.cfg.compression {
                Compression::Gzip => g.send_compressed(CompressionEncoding::Gzip),
                Compression::Zstd => g.send_compressed(CompressionEncoding::Zstd),
                Compression::None => g,
            };
            Client::Grpc {
                main: Box::new(main),
                gzip: Box::new(gzip),
            }
        }
        (None, ExportProtocol::Http) => Client::Http(http_client(&setup.cfg.tls)?),
    };
    let shipper = Arc::new(Shipper {
        buffer: setup.buffer,
        cfg: setup.cfg,
        endpoint: setup.endpoint.trim_end_matches('/').to_string(),
        metrics: setup.metrics,
        client,
        inflight: Mutex::new(Inflight {
            base: 0,
            slots: VecDeque::new(),
        }),
        gzip_fallback: AtomicBool::new(false),
        token,
    });
    let (tx, rx) = mpsc::channel::<(Batch, Pos, u64)>(1);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (reader, cfg, stop) = (shipper.buffer.reader(), shipper.cfg.clone(), stop.clone());
        let delivered = shipper.buffer.read_delivered();
        if !delivered.is_empty() {
            tracing::info!(
                stretches = delivered.len(),
                items = delivered.iter().map(|d| d.items).sum::<u64>(),
                "buffered records the collector acknowledged before the last shutdown will not be sent again"
            );
        }
        std::thread::Builder::new()
            .name("lookout-batcher".into())
            .spawn(move || batcher(reader, cfg, merge, delivered, tx, stop))?;
    }
    Ok(tokio::spawn(shipper.run(rx, stop, shutdown)))
}

struct Shipper {
    buffer: Buffer,
    cfg: ExporterConfig,
    endpoint: String,
    metrics: ShipMetrics,
    client: Client,
    inflight: Mutex<Inflight>,
    /// The receiver refused zstd: send gzip from now on.
    gzip_fallback: AtomicBool,
    /// Bearer token from `bearer_token_file`.
    token: BearerToken,
}

/// Why the bearer token file cannot be used (the token itself is never in the message).
#[derive(Debug, thiserror::Error)]
enum TokenFileError {
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Invalid {
        path: std::path::PathBuf,
        reason: lookout_config::TokenError,
    },
    #[error("{}: not a valid header value", .0.display())]
    NotAHeaderValue(std::path::PathBuf),
}

/// The bearer token of `exporter.bearer_token_file`, re-read after the collector refuses
/// it so a rotated token is picked up without a restart.
struct BearerToken {
    path: Option<std::path::PathBuf>,
    value: Mutex<Option<http::HeaderValue>>,
}

impl BearerToken {
    fn load(path: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let value = match &path {
            Some(p) => Some(
                Self::read(p).map_err(|e| anyhow::anyhow!("exporter.bearer_token_file: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            path,
            value: Mutex::new(value),
        })
    }

    fn read(path: &std::path::Path) -> Result<http::HeaderValue, TokenFileError> {
        let at = || path.to_path_buf();
        let text = std::fs::read_to_string(path)
            .map_err(|error| TokenFileError::Read { path: at(), error })?;
        let token = text.trim();
        lookout_config::validate_token(token)
            .map_err(|reason| TokenFileError::Invalid { path: at(), reason })?;
        let mut v = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TokenFileError::NotAHeaderValue(at()))?;
        v.set_sensitive(true);
        Ok(v)
    }

    fn get(&self) -> Option<http::HeaderValue> {
        self.value.lock().clone()
    }

    /// Re-read the file after a refusal; a broken file keeps the previous token.
    fn refresh(&self) {
        if let Some(p) = &self.path {
            match Self::read(p) {
                Ok(v) => *self.value.lock() = Some(v),
                Err(e) => tracing::error!(error = %e, "cannot re-read exporter.bearer_token_file"),
            }
        }
    }
}

fn read_pem(path: &std::path::Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))
}

/// TLS of the gRPC channel: the CA file (or the system roots) and a client certificate.
fn grpc_tls(
    cfg: &lookout_config::ClientTlsConfig,
) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new();
    tls = match &cfg.ca_file {
        Some(ca) => {
            tls.ca_certificate(Certificate::from_pem(read_pem(ca, "exporter.tls.ca_file")?))
        }
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
        tls = tls.identity(Identity::from_pem(
            read_pem(cert, "exporter.tls.cert_file")?,
            read_pem(key, "exporter.tls.key_file")?,
        ));
    }
    if let Some(name) = &cfg.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(tls)
}

/// The OTLP/HTTP client: no redirects, the CA file (or the system roots) and a client
/// certificate.
fn http_client(cfg: &lookout_config::ClientTlsConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &cfg.ca_file {
        let pem = read_pem(ca, "exporter.tls.ca_file")?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("exporter.tls.ca_file: {}: {e}", ca.display()))?;
        b = b.tls_certs_only(certs);
    }
    if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
        let mut pem = read_pem(cert, "exporter.tls.cert_file")?;
        pem.extend(read_pem(key, "exporter.tls.key_file")?);
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("exporter.tls.cert_file/key_file: {e}"))?;
        b = b.identity(id);
    }
    if cfg.server_name.is_some() {
        anyhow::bail!("exporter.tls.server_name: only supported with protocol = \"grpc\"; use a URL with the certificate's host name");
    }
    Ok(b.tls_version_min(reqwest::tls::Version::TLS_1_2).build()?)
}

/// Reads the buffer and cuts batches by signal, items, bytes and time; without `merge`,
/// every record is a batch of its own.
fn batcher(
    mut reader: crate::buffer::Reader,
    cfg: ExporterConfig,
    merge: bool,
    mut delivered: Vec<Delivered>,
    tx: mpsc::Sender<(Batch, Pos, u64)>,
    stop: Arc<AtomicBool>,
) {
    let max_items = u64::from(cfg.max_batch_items);
    let max_bytes = cfg.max_batch_size.as_usize();
    let timeout = cfg.batch_timeout.get();
    let mut next_id = 0u64;
    let mut prev_end = reader.position();
    // (batch, end of its last record, append time of its first record, deadline)
    let mut cur: Option<(Batch, Pos, u64, Instant)> = None;
    let emit = |cur: &mut Option<(Batch, Pos, u64, Instant)>| -> bool {
        match cur.take() {
            Some((b, end, t, _)) => tx.blocking_send((b, end, t)).is_ok(),
            None => true,
        }
    };
    while !stop.load(Ordering::Acquire) {
        let wait = match &cur {
            Some((_, _, _, deadline)) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(250),
        };
        match reader.next(wait) {
            Ok(Read::Record(rec, end)) => {
                delivered.retain(|d| d.end >= end);
                let skip = delivered.first().is_some_and(|d| d.holds(end));
                // Delivered records form batches of their own, which are never sent.
                let fits = merge
                    && cur.as_ref().is_some_and(|(b, _, _, _)| {
                        b.delivered == skip
                            && b.signal == rec.signal
                            && (skip
                                || (b.items + u64::from(rec.items) <= max_items
                                    && b.payload.len() + rec.payload.len() <= max_bytes))
                    });
                if fits {
                    if let Some((b, e, _, _)) = &mut cur {
                        if !skip {
                            b.payload.extend_from_slice(&rec.payload);
                        }
                        b.items += u64::from(rec.items);
                        *e = end;
                    }
                } else {
                    if !emit(&mut cur) {
                        return;
                    }
                    let mut payload = Vec::new();
                    if !skip {
                        if merge {
                            payload.reserve(max_bytes.min(rec.payload.len() * 4));
                        }
                        payload.extend_from_slice(&rec.payload);
                    }
                    cur = Some((
                        Batch {
                            id: next_id,
                            signal: rec.signal,
                            payload,
                            items: u64::from(rec.items),
                            start: prev_end,
                            delivered: skip,
                        },
                        end,
                        rec.time,
                        Instant::now() + timeout,
                    ));
                    next_id += 1;
                }
                prev_end = end;
                let full = !merge
                    || cur.as_ref().is_some_and(|(b, _, _, _)| {
                        b.items >= max_items || b.payload.len() >= max_bytes
                    });
                if full && !emit(&mut cur) {
                    return;
                }
            }
            Ok(Read::Idle) => {
                let due = cur
                    .as_ref()
                    .is_some_and(|(_, _, _, d)| Instant::now() >= *d);
                if due && !emit(&mut cur) {
                    return;
                }
            }
            Ok(Read::Closed) => {
                emit(&mut cur);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the disk buffer; retrying in 1s");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

impl Shipper {
    async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(Batch, Pos, u64)>,
        stop: Arc<AtomicBool>,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency as usize));
        let flusher = spawn_ack_flusher(self.buffer.clone(), shutdown.clone());
        let lag = {
            let me = self.clone();
            let token = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                while !token.is_cancelled() {
                    tokio::select! {
                        _ = tick.tick() => me.update_lag(),
                        _ = token.cancelled() => break,
                    }
                }
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        // At shutdown no new batch starts; those in flight (and their retries) get the grace
        // period, so a batch the collector is storing is marked done, not sent twice.
        let abort = CancellationToken::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let next = tokio::select! {
                b = rx.recv() => b,
                _ = shutdown.cancelled() => break,
            };
            let Some((batch, end, first_time)) = next else {
                break;
            };
            self.track(&batch, end, first_time);
            if batch.delivered {
                self.metrics
                    .skipped_items
                    .with_label_values(&[batch.signal.as_str()])
                    .inc_by(batch.items);
                self.complete(batch.id);
                continue;
            }
            let me = self.clone();
            let abort = abort.clone();
            tasks.spawn(async move {
                me.deliver(batch, abort).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        stop.store(true, Ordering::Release);
        drop(rx);
        // Requests in flight get a grace period; what is cut off stays in the buffer.
        let grace = self.cfg.timeout.get().min(Duration::from_secs(5));
        let _ =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        abort.cancel();
        while tasks.join_next().await.is_some() {}
        flusher.abort();
        lag.abort();
        self.persist_progress().await;
    }

    /// Note `batch` (ending at `end`, its oldest record from `first_time`) as in flight.
    fn track(&self, batch: &Batch, end: Pos, first_time: u64) {
        let mut inf = self.inflight.lock();
        if inf.slots.is_empty() {
            inf.base = batch.id;
        }
        inf.slots.push_back(Slot {
            start: batch.start,
            end,
            items: batch.items,
            first_time,
            done: false,
        });
    }

    /// At shutdown: persist the ack position, and the batches done behind one that was cut
    /// off, so that a restart skips them.
    async fn persist_progress(&self) {
        let delivered: Vec<Delivered> = self
            .inflight
            .lock()
            .slots
            .iter()
            .filter(|s| s.done)
            .map(|s| Delivered {
                start: s.start,
                end: s.end,
                items: s.items,
            })
            .collect();
        let b = self.buffer.clone();
        let persisted = tokio::task::spawn_blocking(move || {
            b.flush_ack()?;
            b.write_delivered(&delivered)?;
            Ok::<_, crate::buffer::BufferError>(delivered.len())
        })
        .await;
        match persisted {
            Ok(Err(e)) => tracing::error!(error = %e, "cannot persist the buffer's ack position"),
            Err(e) => tracing::error!(error = %e, "ack flush task failed"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(
                stretches = n,
                "batches delivered out of order behind one cut off by the shutdown are recorded and will not be sent again"
            ),
        }
    }

    fn update_lag(&self) {
        let oldest = self.inflight.lock().slots.front().map(|s| s.first_time);
        let lag = match oldest {
            Some(t) => {
                let now = lookout_ingest::clock::now_unix_nano();
                now.saturating_sub(t) as f64 / 1e9
            }
            None if self.buffer.unacked_bytes() == 0 => 0.0,
            None => self.metrics.lag_seconds.get(),
        };
        self.metrics.lag_seconds.set(lag);
    }

    /// Send one batch until it is delivered or permanently refused, or until `abort` (the
    /// end of the shutdown grace period; the batch then stays in the buffer).
    async fn deliver(&self, batch: Batch, abort: CancellationToken) {
        let signal = batch.signal.as_str();
        let body = Bytes::from(batch.payload);
        let mut attempt = 0u32;
        loop {
            let waiting_for_stream =
                matches!(&self.client, Client::Cluster(link) if !link.is_connected());
            self.metrics.inflight.inc();
            let started = Instant::now();
            let outcome = tokio::select! {
                o = self.export(batch.signal, body.clone()) => o,
                _ = abort.cancelled() => {
                    self.metrics.inflight.dec();
                    return;
                }
            };
            self.metrics.inflight.dec();
            self.metrics
                .request_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .requests
                .with_label_values(&[signal, outcome.label()])
                .inc();
            match outcome {
                Outcome::Ok { rejected, message } => {
                    let accepted = batch.items.saturating_sub(rejected);
                    self.metrics
                        .sent_items
                        .with_label_values(&[signal])
                        .inc_by(accepted);
                    if rejected > 0 {
                        self.metrics
                            .rejected_items
                            .with_label_values(&[signal])
                            .inc_by(rejected);
                        tracing::warn!(
                            signal,
                            rejected,
                            message,
                            "the collector rejected part of a batch"
                        );
                    }
                    break;
                }
                Outcome::Permanent { reason, why } => {
                    self.metrics
                        .dropped_items
                        .with_label_values(&[signal, reason])
                        .inc_by(batch.items);
                    if matches!(self.client, Client::Cluster(_)) {
                        tracing::error!(signal, items = batch.items, reason, error = %why, "a buffered record cannot be published; dropping it");
                    } else {
                        tracing::error!(signal, items = batch.items, reason, error = %why, "the collector refused a batch permanently; dropping it");
                    }
                    break;
                }
                Outcome::Retry { hint, reason, why } => {
                    self.metrics
                        .retries
                        .with_label_values(&[signal, reason])
                        .inc();
                    if reason == "unauthenticated" {
                        self.token.refresh();
                    }
                    let delay = match hint {
                        Some(h) => h.min(MAX_HINT),
                        None if reason == "unauthenticated" => self.cfg.retry_max_interval.get(),
                        None => self.backoff(attempt),
                    };
                    if waiting_for_stream {
                        // The connecting task warns, at its own backoff.
                        tracing::debug!(signal, attempt, error = %why, "stream not connected yet; the record waits in the buffer");
                    } else if attempt == 0 || attempt.is_power_of_two() {
                        let level_error = reason == "unauthenticated";
                        if level_error {
                            tracing::error!(signal, attempt, reason, error = %why, delay_ms = delay.as_millis() as u64, "the collector refused the agent's credentials; the data stays in the buffer and is retried slowly (check exporter.bearer_token_file, exporter.headers and TLS settings)");
                        } else {
                            tracing::warn!(signal, attempt, reason, error = %why, delay_ms = delay.as_millis() as u64, "export failed; retrying");
                        }
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        // Waiting for the stream's first connection: go as soon as it is up.
                        _ = async {
                            match &self.client {
                                Client::Cluster(link) if waiting_for_stream => link.connected().await,
                                _ => std::future::pending().await,
                            }
                        } => {}
                        _ = abort.cancelled() => return,
                    }
                }
            }
        }
        self.complete(batch.id);
    }

    /// Mark a batch done and move the buffer's ack over the done prefix.
    fn complete(&self, id: u64) {
        let mut inf = self.inflight.lock();
        let Some(i) = id.checked_sub(inf.base) else {
            return;
        };
        if let Some(slot) = inf.slots.get_mut(i as usize) {
            slot.done = true;
        }
        let mut acked = None;
        while inf.slots.front().is_some_and(|s| s.done) {
            if let Some(s) = inf.slots.pop_front() {
                acked = Some(s.end);
                inf.base += 1;
            }
        }
        drop(inf);
        if let Some(pos) = acked {
            self.buffer.ack(pos);
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        crate::cluster::backoff(
            self.cfg.retry_initial_interval.get(),
            self.cfg.retry_max_interval.get(),
            attempt,
        )
    }

    /// The HTTP body encoding now in use (gRPC compresses inside tonic).
    fn http_compression(&self) -> Compression {
        match self.cfg.compression {
            Compression::Zstd if self.gzip_fallback.load(Ordering::Relaxed) => Compression::Gzip,
            c => c,
        }
    }

    fn compress(compression: Compression, payload: &[u8]) -> std::io::Result<Bytes> {
        Ok(match compression {
            Compression::None => Bytes::copy_from_slice(payload),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(
                    Vec::with_capacity(payload.len() / 4),
                    flate2::Compression::fast(),
                );
                e.write_all(payload)?;
                Bytes::from(e.finish()?)
            }
            Compression::Zstd => Bytes::from(zstd::encode_all(payload, 1)?),
        })
    }

    async fn export(&self, signal: Signal, body: Bytes) -> Outcome {
        match &self.client {
            Client::Grpc { main, gzip } => {
                let client = if self.gzip_fallback.load(Ordering::Relaxed) {
                    gzip
                } else {
                    main
                };
                let outcome = self
                    .export_grpc((**client).clone(), signal, body.clone())
                    .await;
                match outcome {
                    Outcome::Permanent {
                        reason: "compression",
                        why,
                    } if !self.gzip_fallback.swap(true, Ordering::Relaxed) => {
                        tracing::warn!(error = %why, "the collector does not take this compression; sending gzip from now on (set exporter.compression)");
                        self.export_grpc((**gzip).clone(), signal, body).await
                    }
                    Outcome::Permanent {
                        reason: "compression",
                        ..
                    } => self.export_grpc((**gzip).clone(), signal, body).await,
                    o => o,
                }
            }
            Client::Http(c) => self.export_http(c, signal, body).await,
            Client::Cluster(link) => publish_outcome(link.publish(signal, body).await),
        }
    }

    async fn export_grpc(
        &self,
        mut grpc: tonic::client::Grpc<Channel>,
        signal: Signal,
        body: Bytes,
    ) -> Outcome {
        let path = match signal {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        };
        let mut req = tonic::Request::new(body);
        req.set_timeout(self.cfg.timeout.get());
        if let Some(v) = self.token.get() {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes()) {
                req.metadata_mut().insert("authorization", v);
            }
        }
        for (k, v) in &self.cfg.headers {
            let key =
                match tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()) {
                    Ok(k) => k,
                    Err(_) => continue,
                };
            if let Ok(v) = v.parse() {
                req.metadata_mut().insert(key, v);
            }
        }
        let call = async {
            grpc.ready().await.map_err(|e| {
                tonic::Status::unavailable(format!("cannot connect to {}: {e}", self.endpoint))
            })?;
            grpc.unary(req, http::uri::PathAndQuery::from_static(path), RawCodec)
                .await
        };
        let res = match tokio::time::timeout(self.cfg.timeout.get() + Duration::from_secs(1), call)
            .await
        {
            Ok(r) => r,
            Err(_) => {
                return Outcome::Retry {
                    hint: None,
                    reason: "timeout",
                    why: format!("no answer within {:?}", self.cfg.timeout.get()),
                }
            }
        };
        match res {
            Ok(resp) => ok_outcome(signal, &resp.into_inner()),
            Err(status) => classify_grpc(&status),
        }
    }

    async fn export_http(&self, client: &reqwest::Client, signal: Signal, body: Bytes) -> Outcome {
        let url = format!("{}/v1/{}", self.endpoint, signal.as_str());
        let compression = self.http_compression();
        let body = match Self::compress(compression, &body) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Retry {
                    hint: None,
                    reason: "compression",
                    why: format!("cannot compress the batch: {e}"),
                }
            }
        };
        let mut req = client
            .post(&url)
            .timeout(self.cfg.timeout.get())
            .header("content-type", "application/x-protobuf")
            .body(body);
        match compression {
            Compression::Gzip => req = req.header("content-encoding", "gzip"),
            Compression::Zstd => req = req.header("content-encoding", "zstd"),
            Compression::None => {}
        }
        for (k, v) in &self.cfg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(v) = self.token.get() {
            req = req.header(http::header::AUTHORIZATION, v);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = if e.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                return Outcome::Retry {
                    hint: None,
                    reason,
                    why: format!("{url}: {e}"),
                };
            }
        };
        let status = resp.status();
        let hint = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.unwrap_or_default();
        if status.is_success() {
            return ok_outcome(signal, &body);
        }
        let message = tonic_types::Status::decode(&body[..])
            .map(|s| s.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        let why = format!("HTTP {status}: {message}");
        match status.as_u16() {
            429 => Outcome::Retry {
                hint,
                reason: "throttled",
                why,
            },
            502..=504 => Outcome::Retry {
                hint,
                reason: "unavailable",
                why,
            },
            401 | 403 => Outcome::Retry {
                hint: None,
                reason: "unauthenticated",
                why,
            },
            413 => Outcome::Permanent {
                reason: "too_large",
                why,
            },
            415 if compression == Compression::Zstd
                && !self.gzip_fallback.swap(true, Ordering::Relaxed) =>
            {
                tracing::warn!(error = %why, "the collector does not take zstd; sending gzip from now on (set exporter.compression)");
                Outcome::Retry {
                    hint: Some(Duration::ZERO),
                    reason: "compression",
                    why,
                }
            }
            _ => Outcome::Permanent {
                reason: "invalid",
                why,
            },
        }
    }
}

/// A publish to the cluster's stream as an export outcome, so that requests, retries
/// and drops are counted as for a collector.
fn publish_outcome(p: Published) -> Outcome {
    match p {
        Published::Ok { .. } => Outcome::Ok {
            rejected: 0,
            message: String::new(),
        },
        Published::NotConnected(why) | Published::NotAcknowledged(why) => Outcome::Retry {
            hint: None,
            reason: "unavailable",
            why,
        },
        Published::TooLarge(why) => Outcome::Permanent {
            reason: "too_large",
            why,
        },
        Published::Undecodable(why) => Outcome::Permanent {
            reason: "invalid",
            why,
        },
    }
}

fn ok_outcome(signal: Signal, body: &[u8]) -> Outcome {
    let partial = match signal {
        Signal::Traces => ExportTraceServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
    };
    let (rejected, message) = partial.unwrap_or((0, String::new()));
    Outcome::Ok {
        rejected: u64::try_from(rejected).unwrap_or(0),
        message,
    }
}

fn classify_grpc(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    let why = format!("{:?}: {}", status.code(), status.message());
    let hint = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match status.code() {
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => Outcome::Retry {
            hint,
            reason: "unavailable",
            why,
        },
        Code::ResourceExhausted if hint.is_some() => Outcome::Retry {
            hint,
            reason: "throttled",
            why,
        },
        Code::ResourceExhausted => Outcome::Permanent {
            reason: "too_large",
            why,
        },
        Code::Unimplemented if status.message().contains("compress") => Outcome::Permanent {
            reason: "compression",
            why,
        },
        Code::Unauthenticated | Code::PermissionDenied => Outcome::Retry {
            hint: None,
            reason: "unauthenticated",
            why,
        },
        _ => Outcome::Permanent {
            reason: "invalid",
            why,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Batches the batcher cuts from `records` records of 10 logs each.
    fn batches_of(records: u32, merge: bool) -> Vec<(u64, u64, usize)> {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new();
        let metrics = crate::buffer::BufferMetrics::new(&registry).unwrap();
        let opts = crate::buffer::BufferOptions {
            max_size: 64 << 20,
            segment_size: 8 << 20,
            when_full: lookout_config::WhenFull::Block,
            fsync: lookout_config::FsyncPolicy::Never,
            fsync_interval: Duration::from_secs(1),
        };
        let (buffer, _) = Buffer::open(dir.path(), opts, metrics).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..records {
            let entry = crate::sink::Entry {
                signal: Signal::Logs,
                payload: Bytes::from(vec![i as u8; 100]),
                items: 10,
                positions: Vec::new(),
            };
            rt.block_on(buffer.append(entry)).unwrap();
        }
        buffer.close();
        let (tx, mut rx) = mpsc::channel(1);
        let reader = buffer.reader();
        let t = std::thread::spawn(move || {
            batcher(
                reader,
                ExporterConfig::default(),
                merge,
                Vec::new(),
                tx,
                Arc::new(AtomicBool::new(false)),
            )
        });
        let mut out = Vec::new();
        while let Some((b, _, _)) = rx.blocking_recv() {
            out.push((b.id, b.items, b.payload.len()));
        }
        t.join().unwrap();
        out
    }

    #[test]
    fn records_merge_for_a_collector_and_stay_apart_for_the_stream() {
        assert_eq!(batches_of(5, true), vec![(0, 50, 500)]);
        // Cluster mode: a record resent after a crash must split into the same messages.
        assert_eq!(
            batches_of(5, false),
            (0..5).map(|i| (i, 10, 100)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn publishes_map_to_export_outcomes() {
        let label = |p| publish_outcome(p).label();
        assert_eq!(label(Published::Ok { messages: 3 }), "ok");
        assert_eq!(label(Published::NotConnected("x".into())), "retry");
        assert_eq!(label(Published::NotAcknowledged("x".into())), "retry");
        assert_eq!(label(Published::TooLarge("x".into())), "dropped");
        assert_eq!(label(Published::Undecodable("x".into())), "dropped");
    }

    #[test]
    fn grpc_codes_are_classified_per_otlp() {
        let retry = |s: tonic::Status| matches!(classify_grpc(&s), Outcome::Retry { .. });
        assert!(retry(tonic::Status::unavailable("x")));
        assert!(retry(tonic::Status::deadline_exceeded("x")));
        assert!(!retry(tonic::Status::invalid_argument("x")));
        assert!(!retry(tonic::Status::resource_exhausted("too big")));
        let with_hint = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        );
        match classify_grpc(&with_hint) {
            Outcome::Retry { hint, .. } => assert_eq!(hint, Some(Duration::from_secs(2))),
            o => unreachable!("{o:?}"),
        }
        assert!(retry(tonic::Status::unauthenticated("bad token")));
    }
}
