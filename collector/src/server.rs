//! Start-up, wiring and shutdown of the collector.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use lookout_config::CollectorConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts;
use crate::api::{self, ApiState};
use crate::metrics::Metrics;
use crate::prom::window::spawn_metrics_window;
use crate::store::logs::{LogFields, LogMapper};
use crate::store::partition::PartitionedIndex;
use crate::store::spans::{SpanFields, SpanMapper};
use crate::store::traces::TraceFields;
use crate::store::{spawn_indexer, IndexerContext};
use crate::traces::tracker::{self, CheckpointGate, TracesShared};
use crate::wal::sink::WalSink;
use crate::wal::{Checkpoints, Record, Wal, WalOptions};
use lookout_ingest::net::{self, ListenerSetup};
use lookout_ingest::signal::Signal;
use lookout_ingest::{self as ingest, Budget, Ingest, IngestOptions};

/// How long metric records stay in the WAL (the staleness window of OTLP metrics).
const METRICS_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The three listeners, bound before start-up so tests can use port 0.
pub struct Listeners {
    /// OTLP/gRPC.
    pub grpc: TcpListener,
    /// OTLP/HTTP.
    pub http: TcpListener,
    /// Query API.
    pub api: TcpListener,
}

impl Listeners {
    /// Bind the addresses of `cfg`.
    pub async fn bind(cfg: &CollectorConfig) -> anyhow::Result<Self> {
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for {what} on {addr}"))
        };
        Ok(Self {
            grpc: bind(cfg.otlp.grpc, "OTLP/gRPC").await?,
            http: bind(cfg.otlp.http, "OTLP/HTTP").await?,
            api: bind(cfg.api.listen, "the query API").await?,
        })
    }
}

/// Options of [`run`] besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Also generate demo traffic.
    pub demo: bool,
    /// The config file, re-read on SIGHUP to reload alert rules and receivers.
    pub config_path: Option<std::path::PathBuf>,
}

/// Run the collector until `shutdown` is cancelled, then stop cleanly: stop accepting,
/// finish in-flight requests, flush the WAL and commit the indexes.
pub async fn run(
    cfg: CollectorConfig,
    listeners: Listeners,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (grpc_addr, http_addr, api_addr) = (
        listeners.grpc.local_addr()?,
        listeners.http.local_addr()?,
        listeners.api.local_addr()?,
    );
    tracing::info!(
        otlp_grpc = %grpc_addr,
        otlp_http = %http_addr,
        api = %api_addr,
        data_dir = %cfg.data_dir.display(),
        "listening"
    );
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let store_metrics = crate::prom::StoreMetrics::register(&metrics.registry)
        .context("cannot register metrics")?;
    let alert_metrics =
        alerts::AlertMetrics::register(&metrics.registry).context("cannot register metrics")?;
    let net = Security::load(&cfg, opts.config_path.as_deref(), &metrics, &shutdown)?;
    let data = &cfg.data_dir;
    lookout_ingest::fsutil::create_dir_all(data)
        .with_context(|| format!("cannot create data directory {}", data.display()))?;
    let width = i64::try_from(cfg.index.partition.get().as_secs()).unwrap_or(i64::MAX);
    let log_fields = LogFields::new();
    let span_fields = SpanFields::new();
    let logs = Arc::new(
        PartitionedIndex::open(
            &data.join("logs"),
            Signal::Logs,
            log_fields.schema.clone(),
            width,
        )
        .context("cannot open the log index")?,
    );
    let spans = Arc::new(
        PartitionedIndex::open(
            &data.join("spans"),
            Signal::Traces,
            span_fields.schema.clone(),
            width,
        )
        .context("cannot open the span index")?,
    );
    let trace_fields = TraceFields::new();
    let traces = Arc::new(
        PartitionedIndex::open(
            &data.join("traces"),
            Signal::Traces,
            trace_fields.schema.clone(),
            width,
        )
        .context("cannot open the trace index")?,
    );
    let checkpoints = Arc::new(Checkpoints::default());
    checkpoints.advance(Signal::Logs, logs.checkpoint());
    // Replay of spans starts where both the span index and the trace tracker are done.
    let gate = Arc::new(CheckpointGate::new(spans.checkpoint(), traces.checkpoint()));
    checkpoints.advance(Signal::Traces, gate.get());
    let shared = Arc::new(TracesShared::new(&cfg.traces));
    let metric_store = Arc::new(parking_lot::Mutex::new(crate::prom::MetricStore::new(
        crate::prom::StoreConfig::from(&cfg.metrics),
    )));

    let ready = Arc::new(AtomicBool::new(false));
    let alerts = alerts::spawn(
        alerts::AlertsSetup {
            cfg: alerts::AlertsConfig::from_collector(&cfg),
            api_base: format!("http://{api_addr}"),
            traces: shared.clone(),
            metric_source: Some(Arc::new(alerts::StoreSource(metric_store.clone()))),
            metrics: alert_metrics,
            dir: data.join("alerts"),
            ready: ready.clone(),
        },
        shutdown.clone(),
    );
    #[cfg(unix)]
    if let Some(path) = opts.config_path.clone() {
        tokio::spawn(reload_on_sighup(path, alerts.clone(), shutdown.clone()));
    }
    let api_state = ApiState {
        ready: ready.clone(),
        metrics: metrics.clone(),
        logs: logs.clone(),
        log_fields: log_fields.clone(),
        spans: spans.clone(),
        span_fields: span_fields.clone(),
        traces: traces.clone(),
        trace_fields: trace_fields.clone(),
        shared: shared.clone(),
        red_window: cfg.traces.red_window.get(),
        metric_store: metric_store.clone(),
        alerts,
        query: cfg.query.clone(),
        query_guard: api::QueryGuard::new(&cfg.query, {
            let c = prometheus::IntCounter::new(
                "lookout_query_refused_total",
                "Query API requests answered 503: timed out or no free slot (query.timeout, query.max_concurrent).",
            )?;
            metrics.registry.register(Box::new(c.clone()))?;
            c
        }),
    };
    let api_router = with_auth(
        api::router(api_state),
        net.api_tokens.clone(),
        &["/healthz", "/readyz"],
        net::auth::reject_json,
        &net.api.metrics,
    );
    let api_conns = net::incoming(listeners.api, net.api.clone(), shutdown.clone());
    let api_task = tokio::spawn(net::serve_http(
        api_conns,
        api_router,
        cfg.api.connections.clone(),
        shutdown.clone(),
        SHUTDOWN_GRACE,
    ));

    let budget = Arc::new(Budget::new(cfg.ingest.max_pending_bytes.get()));
    let ctx = IndexerContext {
        checkpoints: checkpoints.clone(),
        budget: budget.clone(),
        metrics: metrics.clone(),
        cfg: cfg.index.clone(),
        retention: cfg.retention.get(),
        gate: None,
    };
    let (trace_tx, trace_thread) = tracker::spawn(tracker::TrackerSetup {
        index: traces.clone(),
        fields: trace_fields,
        shared,
        gate: gate.clone(),
        checkpoints: checkpoints.clone(),
        metrics: metrics.clone(),
        cfg: cfg.traces.clone(),
        index_cfg: cfg.index.clone(),
        retention: cfg.retention.get(),
    })?;
    let (log_tx, log_thread) =
        spawn_indexer(logs.clone(), LogMapper::new(log_fields), ctx.clone())?;
    let (span_tx, span_thread) = spawn_indexer(
        spans.clone(),
        SpanMapper::new(span_fields, Some(trace_tx)),
        IndexerContext {
            gate: Some(gate),
            ..ctx.clone()
        },
    )?;
    let (metric_tx, metric_thread) = spawn_metrics_window(
        METRICS_WINDOW.max(cfg.metrics.stale_after.get()),
        ctx,
        metric_store,
        store_metrics,
    )?;
    let dispatch = Box::new(move |rec: Record| {
        let tx = match rec.signal {
            Signal::Logs => &log_tx,
            Signal::Traces => &span_tx,
            Signal::Metrics => &metric_tx,
        };
        if tx.send(rec).is_err() {
            tracing::error!("a store thread is gone; the record stays in the WAL only");
        }
    });

    let wal_dir = data.join("wal");
    let wal_opts = WalOptions {
        segment_size: cfg.wal.segment_size.get(),
        fsync: cfg.wal.fsync,
    };
    let (wal, wal_thread) = {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || {
            Wal::open(&wal_dir, wal_opts, checkpoints, metrics, dispatch)
        })
        .await?
        .context("cannot open the write-ahead log")?
    };
    ready.store(true, Ordering::Release);
    tracing::info!("ready");

    let mut ingest_opts = IngestOptions::new(&cfg.limits, cfg.ingest.retry_after.get());
    ingest_opts.admission_wait = cfg.ingest.admission_wait.get();
    let sink = WalSink::new(
        wal,
        budget.clone(),
        &metrics.receiver,
        ingest_opts.retry_after,
    );
    let ingest = Arc::new(Ingest::new(
        ingest_opts,
        Arc::new(sink),
        budget,
        metrics.receiver.clone(),
    ));
    let grpc_conns = net::incoming(listeners.grpc, net.otlp_grpc.clone(), shutdown.clone());
    let grpc_task = tokio::spawn(ingest::grpc::serve(
        grpc_conns,
        ingest.clone(),
        ingest::grpc::GrpcOptions {
            max_message_size: cfg.limits.max_request_size.as_usize(),
            tokens: net.otlp_tokens.clone(),
            unauthenticated: net.otlp_grpc.metrics.unauthenticated.clone(),
            max_concurrent_streams: cfg.otlp.connections.max_concurrent_streams,
        },
        shutdown.clone().cancelled_owned(),
    ));
    let http_router = with_auth(
        ingest::http::router(
            ingest.clone(),
            cfg.limits.max_request_size.as_usize(),
            cfg.limits.max_decompressed_size.as_usize(),
        ),
        net.otlp_tokens.clone(),
        &[],
        ingest::http::reject_unauthenticated,
        &net.otlp_http.metrics,
    );
    let http_conns = net::incoming(listeners.http, net.otlp_http.clone(), shutdown.clone());
    let http_task = tokio::spawn(net::serve_http(
        http_conns,
        http_router,
        cfg.otlp.connections.clone(),
        shutdown.clone(),
        SHUTDOWN_GRACE,
    ));
    let demo_task = opts
        .demo
        .then(|| tokio::spawn(crate::demo::run(ingest.clone(), shutdown.clone())));
    drop(ingest);

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    if let Some(t) = demo_task {
        let _ = t.await;
    }
    grpc_task.await?.context("OTLP/gRPC server failed")?;
    http_task.await?;
    api_task.await?;
    // Every Ingest (and so every WAL handle) is gone: the WAL thread drains and exits,
    // which closes the store channels; the indexers commit and exit.
    tokio::task::spawn_blocking(move || {
        for (name, t) in [
            ("wal", wal_thread),
            ("log indexer", log_thread),
            ("span indexer", span_thread),
            ("trace tracker", trace_thread),
            ("metrics", metric_thread),
        ] {
            if t.join().is_err() {
                tracing::error!(thread = name, "thread panicked");
            }
        }
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS, tokens and metrics of the three listeners.
struct Security {
    otlp_grpc: ListenerSetup,
    otlp_http: ListenerSetup,
    api: ListenerSetup,
    otlp_tokens: Option<Arc<net::Tokens>>,
    api_tokens: Option<Arc<net::Tokens>>,
}

impl Security {
    /// Load certificates and tokens; errors name the config file and key.
    fn load(
        cfg: &CollectorConfig,
        config_path: Option<&std::path::Path>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let origin = config_path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<flags>".into());
        let tls = |t: &Option<lookout_config::TlsConfig>, prefix: &str| {
            t.as_ref()
                .map(|t| {
                    let r = net::ReloadingTls::load(t, prefix)
                        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
                    r.spawn_watcher(shutdown.clone());
                    anyhow::Ok(r)
                })
                .transpose()
        };
        let otlp_tls = tls(&cfg.otlp.tls, "otlp.tls")?;
        let api_tls = tls(&cfg.api.tls, "api.tls")?;
        let tokens = |a: &lookout_config::AuthConfig, prefix: &str| {
            net::Tokens::load(a, prefix).map_err(|e| anyhow::anyhow!("{origin}: {e}"))
        };
        let otlp_tokens = tokens(&cfg.otlp.auth, "otlp.auth")?;
        let api_tokens = tokens(&cfg.api.auth, "api.auth")?;
        let families = net::ListenerMetricsVec::register(&metrics.registry, "lookout")
            .context("cannot register listener metrics")?;
        let setup = |name,
                     tls: &Option<Arc<net::ReloadingTls>>,
                     limits: &lookout_config::ConnectionLimits| {
            ListenerSetup {
                name,
                tls: tls.clone(),
                limits: limits.clone(),
                metrics: families.listener(name),
            }
        };
        tracing::info!(
            otlp_tls = otlp_tls.is_some(),
            otlp_mtls = cfg
                .otlp
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_file.is_some()),
            otlp_auth = otlp_tokens.is_some(),
            api_tls = api_tls.is_some(),
            api_auth = api_tokens.is_some(),
            "listener security"
        );
        Ok(Self {
            otlp_grpc: setup("otlp_grpc", &otlp_tls, &cfg.otlp.connections),
            otlp_http: setup("otlp_http", &otlp_tls, &cfg.otlp.connections),
            api: setup("api", &api_tls, &cfg.api.connections),
            otlp_tokens,
            api_tokens,
        })
    }
}

/// `router` behind bearer-token auth when `tokens` is set.
fn with_auth(
    router: axum::Router,
    tokens: Option<Arc<net::Tokens>>,
    open_paths: &'static [&'static str],
    reject: net::auth::Reject,
    metrics: &net::ListenerMetrics,
) -> axum::Router {
    match tokens {
        None => router,
        Some(tokens) => router.layer(axum::middleware::from_fn_with_state(
            net::auth::HttpAuth {
                tokens,
                open_paths,
                reject,
                refused: metrics.unauthenticated.clone(),
            },
            net::auth::require_bearer,
        )),
    }
}

/// On SIGHUP, re-read `path` and hand new alert rules and receivers to the engine; an
/// invalid file is refused with its error logged, and the running rules stay.
#[cfg(unix)]
async fn reload_on_sighup(
    path: std::path::PathBuf,
    alerts: alerts::AlertsHandle,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload is off");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            () = shutdown.cancelled() => return,
        }
        tracing::info!(file = %path.display(), "SIGHUP: reloading alert rules and receivers");
        match lookout_config::load::<CollectorConfig>(Some(&path)) {
            Ok(cfg) => alerts.reload(alerts::AlertsConfig::from_collector(&cfg)),
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; the running alert rules stay");
            }
        }
    }
}
