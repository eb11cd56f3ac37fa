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
use crate::ingest::{self, Budget, Ingest, IngestOptions, WalSink};
use crate::metrics::Metrics;
use crate::signal::Signal;
use crate::store::logs::{LogFields, LogMapper};
use crate::store::partition::PartitionedIndex;
use crate::store::spans::{SpanFields, SpanMapper};
use crate::store::traces::TraceFields;
use crate::store::{spawn_indexer, spawn_metrics_window, IndexerContext};
use crate::traces::tracker::{self, CheckpointGate, TracesShared};
use crate::wal::{Checkpoints, Record, Wal, WalOptions};

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
    let data = &cfg.data_dir;
    std::fs::create_dir_all(data)
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
            metrics: metrics.clone(),
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
    };
    let api_shutdown = shutdown.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(listeners.api, api::router(api_state))
            .with_graceful_shutdown(api_shutdown.cancelled_owned())
            .await
    });

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

    let ingest_opts = IngestOptions::new(&cfg.limits, cfg.ingest.retry_after.get());
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
    let grpc_task = tokio::spawn(ingest::grpc::serve(
        listeners.grpc,
        ingest.clone(),
        cfg.limits.max_request_size.as_usize(),
        shutdown.clone().cancelled_owned(),
    ));
    let http_router = ingest::http::router(
        ingest.clone(),
        cfg.limits.max_request_size.as_usize(),
        cfg.limits.max_decompressed_size.as_usize(),
    );
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(listeners.http, http_router)
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
    });
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
    http_task.await?.context("OTLP/HTTP server failed")?;
    api_task.await?.context("query API server failed")?;
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
