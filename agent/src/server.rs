//! The running agent: receivers → disk buffer → shipper (to the collector, or to the
//! cluster's stream), plus the log tailer, host metrics, and `/metrics` + `/healthz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use lookout_config::AgentConfig;
use lookout_ingest::net::{BindError, ServerListeners};
use lookout_ingest::{
    self as ingest, Budget, Ingest, IngestError, IngestOptions, IngestSink, ReceiverMetrics,
    SinkRequest,
};
use lookout_proto::attr;
use lookout_proto::otlp::common::v1::KeyValue;
use prometheus::{Encoder, Registry};
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, BufferMetrics, BufferOptions};
use crate::cluster::{ClusterMetrics, ClusterSetup};
use crate::ship::{self, ShipMetrics, ShipperSetup};
use crate::sink::{Entry, SinkError};

/// Retry hint when the buffer is full or failing.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Memory for requests being decoded and written at once.
const DECODE_BUDGET: u64 = 64 << 20;
/// How long a request waits for room in `DECODE_BUDGET` before it is refused: room frees
/// as each group commit of the buffer completes, while a refused SDK stays away for
/// `RETRY_AFTER`.
const ADMISSION_WAIT: Duration = Duration::from_secs(2);

/// The agent's three listeners: OTLP/gRPC, OTLP/HTTP, and `/metrics` + `/healthz`.
pub type Listeners = ServerListeners;

/// Binds the configured addresses.
pub async fn bind_listeners(cfg: &AgentConfig) -> Result<Listeners, BindError> {
    ServerListeners::bind(
        cfg.otlp_grpc,
        cfg.otlp_http,
        cfg.api,
        "/metrics and /healthz",
    )
    .await
}

/// The receivers' sink: the disk buffer.
struct BufferSink {
    buffer: Buffer,
}

impl IngestSink for BufferSink {
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError> {
        let items = u32::try_from(req.items)
            .map_err(|_| IngestError::TooLarge(format!("{} items in one request", req.items)))?;
        let fut = self.buffer.append(Entry {
            signal: req.signal,
            payload: req.payload,
            items,
            positions: Vec::new(),
        });
        let charge = req.charge;
        drop(req.batch);
        Ok(Box::pin(async move {
            let r = fut.await;
            drop(charge);
            r.map_err(|e| match e {
                SinkError::Full(message) => IngestError::Throttled {
                    message,
                    retry_after: RETRY_AFTER,
                },
                SinkError::Unavailable(message) => IngestError::Unavailable {
                    message,
                    retry_after: RETRY_AFTER,
                },
            })
        }))
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Resource attributes the agent adds where the sender set none: `service.name` (when
/// configured), `service.instance.id`, `host.name` and `[resource.attributes]`.
pub fn resource_defaults(cfg: &AgentConfig) -> Vec<KeyValue> {
    let r = &cfg.resource;
    let host = if r.host_name.is_empty() {
        host_name()
    } else {
        r.host_name.clone()
    };
    let instance = if r.service_instance_id.is_empty() {
        format!("{host}:{}", std::process::id())
    } else {
        r.service_instance_id.clone()
    };
    let mut out = Vec::new();
    if !r.service_name.is_empty() {
        out.push(attr::string("service.name", &r.service_name));
    }
    out.push(attr::string("service.instance.id", &instance));
    out.push(attr::string("host.name", &host));
    for (k, v) in &r.attributes {
        if !out.iter().any(|kv| &kv.key == k) {
            out.push(attr::string(k, v));
        }
    }
    out
}

#[derive(Clone)]
struct ApiState {
    registry: Registry,
    buffer: Buffer,
    ready: Arc<AtomicBool>,
    process: ProcessMetrics,
}

/// The agent's own CPU and memory, read from `/proc/self` at each scrape.
#[derive(Clone)]
struct ProcessMetrics {
    cpu_seconds: prometheus::Gauge,
    resident_bytes: prometheus::IntGauge,
    threads: prometheus::IntGauge,
}

impl ProcessMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let cpu_seconds = prometheus::Gauge::new(
            "lookout_agent_process_cpu_seconds_total",
            "CPU time (user + system) the agent has used.",
        )?;
        let resident_bytes = prometheus::IntGauge::new(
            "lookout_agent_process_resident_memory_bytes",
            "Resident memory of the agent.",
        )?;
        let threads =
            prometheus::IntGauge::new("lookout_agent_process_threads", "Threads of the agent.")?;
        registry.register(Box::new(cpu_seconds.clone()))?;
        registry.register(Box::new(resident_bytes.clone()))?;
        registry.register(Box::new(threads.clone()))?;
        Ok(Self {
            cpu_seconds,
            resident_bytes,
            threads,
        })
    }

    fn update(&self) {
        let Some(st) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| crate::host::procfs::parse_proc_stat(&t))
        else {
            return;
        };
        let hz = crate::host::sysconf(libc::_SC_CLK_TCK, 100);
        let page = crate::host::sysconf(libc::_SC_PAGESIZE, 4096);
        self.cpu_seconds
            .set((st.utime + st.stime) as f64 / hz as f64);
        self.resident_bytes
            .set(i64::try_from(st.rss_pages.saturating_mul(page)).unwrap_or(i64::MAX));
        self.threads.set(st.threads as i64);
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    s.process.update();
    let mut out = Vec::new();
    let enc = prometheus::TextEncoder::new();
    if let Err(e) = enc.encode(&s.registry.gather(), &mut out) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode metrics: {e}").into_bytes(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
}

async fn healthz(State(s): State<ApiState>) -> impl IntoResponse {
    let body = serde_json::json!({
        "status": if s.ready.load(Ordering::Acquire) { "ok" } else { "starting" },
        "buffer_unacked_bytes": s.buffer.unacked_bytes(),
    });
    (StatusCode::OK, axum::Json(body))
}

/// Open the disk buffer (on a blocking thread: recovery reads every segment).
async fn open_buffer(
    cfg: &AgentConfig,
    metrics: BufferMetrics,
) -> anyhow::Result<(Buffer, crate::buffer::Recovery)> {
    let opts = BufferOptions {
        max_size: cfg.buffer.max_size.get(),
        segment_size: cfg.buffer.segment_size.get(),
        when_full: cfg.buffer.when_full,
        fsync: cfg.buffer.fsync,
        fsync_interval: cfg.buffer.fsync_interval.get(),
    };
    let dir = cfg.buffer_dir.join(crate::buffer::SUBDIR);
    tokio::task::spawn_blocking(move || Buffer::open(&dir, opts, metrics))
        .await?
        .context("cannot open the disk buffer")
}

/// Serve `/metrics` and `/healthz` on `listener` until `token` is cancelled.
fn spawn_api(
    listener: tokio::net::TcpListener,
    state: ApiState,
    token: CancellationToken,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, api)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    })
}

/// The OTLP/gRPC and OTLP/HTTP receivers, stopped together.
struct Receivers {
    token: CancellationToken,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<()>,
}

impl Receivers {
    /// Serve OTLP on both listeners into `ingest`.
    fn spawn(
        cfg: &AgentConfig,
        grpc: tokio::net::TcpListener,
        http: tokio::net::TcpListener,
        ingest: Arc<Ingest>,
        registry: &Registry,
    ) -> anyhow::Result<Self> {
        let token = CancellationToken::new();
        // The receivers face the local service only: plain TCP, default connection limits.
        let families =
            lookout_ingest::net::ListenerMetricsVec::register(registry, "lookout_agent")?;
        let setup = |name| lookout_ingest::net::ListenerSetup {
            name,
            tls: None,
            limits: lookout_config::ConnectionLimits::default(),
            metrics: families.listener(name),
        };
        let grpc_setup = setup("otlp_grpc");
        let grpc_task = tokio::spawn(ingest::grpc::serve(
            lookout_ingest::net::incoming(grpc, grpc_setup.clone(), token.clone()),
            ingest.clone(),
            ingest::grpc::GrpcOptions {
                max_message_size: cfg.limits.max_request_size.as_usize(),
                tokens: None,
                unauthenticated: grpc_setup.metrics.unauthenticated.clone(),
                max_concurrent_streams: grpc_setup.limits.max_concurrent_streams,
                request_timeout: grpc_setup.limits.request_timeout.get(),
            },
            token.clone().cancelled_owned(),
        ));
        let http_router = ingest::http::router(
            ingest.clone(),
            cfg.limits.max_request_size.as_usize(),
            cfg.limits.max_decompressed_size.as_usize(),
            grpc_setup.limits.request_timeout.get(),
        );
        let http_setup = setup("otlp_http");
        let http_task = tokio::spawn(lookout_ingest::net::serve_http(
            lookout_ingest::net::incoming(http, http_setup.clone(), token.clone()),
            http_router,
            http_setup.limits.clone(),
            token.clone(),
            std::time::Duration::from_secs(10),
        ));
        Ok(Self {
            token,
            grpc: grpc_task,
            http: http_task,
        })
    }

    /// Stop accepting; in-flight requests finish first.
    async fn stop(self) {
        self.token.cancel();
        if let Ok(Err(e)) = self.grpc.await {
            tracing::warn!(error = %e, "OTLP/gRPC server stopped with an error");
        }
        let _ = self.http.await;
    }
}

/// Run the agent until `shutdown` is cancelled, then stop cleanly: stop the receivers
/// (in-flight requests finish and are buffered), flush the tailer, close the buffer and
/// give requests to the collector a short grace period. Everything acknowledged is in
/// the buffer by then and is shipped after the next start.
pub async fn run(
    cfg: AgentConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    let receiver_metrics = ReceiverMetrics::register(&registry, "lookout_agent")?;
    let buffer_metrics = BufferMetrics::new(&registry)?;
    let ship_metrics = ShipMetrics::new(&registry)?;
    let cluster = match &cfg.cluster {
        Some(nats) => Some(ClusterSetup {
            nats: nats.clone(),
            metrics: ClusterMetrics::new(&registry)?,
        }),
        None => None,
    };

    let buffer_dir = cfg.buffer_dir.clone();
    // Two agents on one buffer would ship each record twice and tail each file twice.
    let _lock = lookout_ingest::fsutil::DirLock::acquire(&buffer_dir)?;
    let (buffer, recovery) = open_buffer(&cfg, buffer_metrics).await?;

    let (grpc_addr, http_addr, api_addr) = listeners.local_addrs()?;
    // Where the data goes: the collector, or the cluster's stream.
    let ships_to = match &cfg.cluster {
        Some(c) => format!(
            "stream {} at {}",
            c.stream,
            c.urls
                .iter()
                .map(|u| u.redacted())
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => lookout_config::redact_url(&cfg.collector),
    };
    tracing::info!(
        otlp_grpc = %grpc_addr,
        otlp_http = %http_addr,
        api = %api_addr,
        ships_to = %ships_to,
        buffer_dir = %buffer_dir.display(),
        "listening"
    );

    let ready = Arc::new(AtomicBool::new(false));
    let api_state = ApiState {
        registry: registry.clone(),
        buffer: buffer.clone(),
        ready: ready.clone(),
        process: ProcessMetrics::new(&registry)?,
    };
    let api_token = shutdown.child_token();
    let api_task = spawn_api(listeners.api, api_state, api_token.clone());

    // Shipping runs until the very end.
    let ship_token = CancellationToken::new();
    let ship_task = ship::spawn(
        ShipperSetup {
            buffer: buffer.clone(),
            cfg: cfg.exporter.clone(),
            endpoint: cfg.collector.clone(),
            metrics: ship_metrics,
            cluster,
        },
        ship_token.clone(),
    )?;

    let defaults = resource_defaults(&cfg);
    let mut ingest_opts = IngestOptions::new(&cfg.limits, RETRY_AFTER);
    ingest_opts.resource_defaults = defaults.clone();
    ingest_opts.admission_wait = ADMISSION_WAIT;
    let budget =
        Arc::new(Budget::new(DECODE_BUDGET).shown_on(receiver_metrics.pending_bytes.clone()));
    let ingest = Arc::new(Ingest::new(
        ingest_opts,
        Arc::new(BufferSink {
            buffer: buffer.clone(),
        }),
        budget,
        receiver_metrics,
    ));
    let receivers = Receivers::spawn(&cfg, listeners.grpc, listeners.http, ingest, &registry)?;

    let sources_token = CancellationToken::new();
    let sources = crate::sources::spawn(
        &cfg,
        &buffer_dir,
        defaults,
        recovery.positions,
        Arc::new(buffer.clone()),
        &registry,
        sources_token.clone(),
    )?;

    ready.store(true, Ordering::Release);
    tracing::info!("ready");
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    receivers.stop().await;
    sources_token.cancel();
    for t in sources {
        let _ = t.await;
    }
    buffer.close();
    ship_token.cancel();
    let _ = ship_task.await;
    api_token.cancel();
    let _ = api_task.await;
    tracing::info!("stopped");
    Ok(())
}
