//! Start-up, wiring and shutdown of the collector, as a short composition of named stages:
//!
//! 1. [`Security::load`]: certificates and tokens of the three listeners;
//! 2. [`Stores::open`]: the data directory, its log index and the span and summary stores;
//! 3. [`Live::new`]: what is derived at ingest and read live (open traces, RED metrics,
//!    the service graph, OTLP metrics for `/metrics`), and the alert engine over it;
//! 4. [`serve_api`]: the query API (answers 503 on `/readyz` until step 7 is done);
//! 5. [`StoreThreads::spawn`]: one thread per store, fed from the WAL in log order;
//! 6. [`open_wal`]: replay of the WAL into them, then the writer thread;
//! 7. [`replay_applied`]: wait until the log and span stores applied what replay handed
//!    them, so that ready means what was acknowledged before answers queries;
//! 8. [`Receivers::serve`]: OTLP/gRPC and OTLP/HTTP (and `--demo` traffic) into the WAL.
//!
//! Shutdown runs the other way: receivers stop accepting and finish in-flight requests,
//! the WAL drains, the store threads commit and exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use lookout_config::CollectorConfig;
use lookout_ingest::net::{self, BindError, ListenerSetup, ServerListeners};
use lookout_ingest::{self as ingest, Budget, Ingest, IngestOptions, ReceiverMetrics, Signal};
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts;
use crate::api::{self, ApiMetrics, ApiState};
use crate::prom::window::{spawn_metrics_window, WindowSetup};
use crate::prom::MetricStore;
use crate::store::backlog::Backlog;
use crate::store::blocks::BlockMetrics;
use crate::store::partition::WriterOptions;
use crate::store::writer::{CommitPolicy, IndexLabels};
use crate::store::{
    spawn_indexer, IndexMetrics, IndexerContext, IndexerSetup, LogStore, Progress, SpanStore,
    TraceStore,
};
use crate::traces::metrics::TraceMetrics;
use crate::traces::tracker::{self, TracesShared};
use crate::wal::sink::WalSink;
use crate::wal::{
    Checkpoints, Dispatch, Quarantine, Record, RecordReader, Wal, WalMetrics, WalOptions,
};

/// How long metric records stay in the WAL (the staleness window of OTLP metrics).
const METRICS_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The three listeners, bound before start-up so tests can use port 0.
pub type Listeners = ServerListeners;

/// Bind the OTLP and query API addresses of `cfg`.
pub async fn bind_listeners(cfg: &CollectorConfig) -> Result<Listeners, BindError> {
    ServerListeners::bind(
        cfg.otlp.grpc,
        cfg.otlp.http,
        cfg.api.listen,
        "the query API",
    )
    .await
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
    // Before anything in the data directory is read: a second collector on it would
    // lose what both acknowledge.
    let _lock = lookout_ingest::fsutil::DirLock::acquire(&cfg.data_dir)?;
    let api_addr = log_addresses(&cfg, &listeners)?;
    let registry = Registry::new();
    let receiver = ReceiverMetrics::register(&registry, "lookout")?;
    let security = Security::load(&cfg, opts.config_path.as_deref(), &registry, &shutdown)?;
    let ctx = Stage {
        cfg: &cfg,
        opts: &opts,
        registry: &registry,
        security: &security,
        shutdown: &shutdown,
    };
    let stores = Stores::open(&ctx)?;
    let ready = Arc::new(AtomicBool::new(false));
    let cluster_status = cfg.cluster.as_ref().map(|c| {
        Arc::new(crate::cluster::ClusterStatus::new(
            member(c, api_addr),
            c.partitions,
        ))
    });
    let peers = cluster_status.clone().map(|status| {
        // Members share `api.auth`: this node asks the others with its first token.
        let token = security
            .api_tokens
            .as_ref()
            .and_then(|t| t.first())
            .map(|t| String::from_utf8_lossy(t).into_owned());
        crate::cluster::peers::Peers::new(status, token)
    });
    let live = Live::new(&ctx, api_addr, &ready, peers.clone())?;
    let api_task = serve_api(&ctx, &stores, &live, ready.clone(), listeners.api, peers)?;
    let budget = Arc::new(
        Budget::new(cfg.ingest.max_pending_bytes.get()).shown_on(receiver.pending_bytes.clone()),
    );
    let backlog = Arc::new(Backlog::default());
    let threads = StoreThreads::spawn(&ctx, &stores, &live, &budget, &backlog)?;
    let wal = open_wal(&ctx, &stores, threads.dispatch).await?;
    let compactor = tokio::spawn(crate::store::blocks::compact(
        vec![
            stores.spans.partitions().clone(),
            stores.traces.partitions().clone(),
        ],
        cfg.spans.block_spans,
        cfg.spans.compact_interval.get(),
        shutdown.clone(),
    ));
    replay_applied(&backlog, &shutdown).await;
    ready.store(true, Ordering::Release);
    tracing::info!("ready");
    // The WAL handle goes to whoever writes it (the consumers in cluster mode, the
    // receivers otherwise): the WAL thread ends at shutdown once every handle is gone.
    let (cluster, sink): (_, Arc<dyn ingest::IngestSink>) = match (&cfg.cluster, cluster_status) {
        (Some(c), Some(status)) => {
            let mode = ClusterMode::start(&ctx, c, status, wal.wal, budget.clone())?;
            let sink = Arc::new(mode.sink(cfg.ingest.retry_after.get()));
            (Some(mode), sink)
        }
        _ => (
            None,
            Arc::new(WalSink::new(wal.wal, cfg.ingest.retry_after.get())),
        ),
    };
    let receivers = Receivers::serve(&ctx, sink, budget, receiver, listeners.grpc, listeners.http);

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    receivers.stop().await?;
    if let Some(c) = cluster {
        c.stop().await;
    }
    api_task.await?;
    compactor.await?;
    // Every Ingest (and so every WAL handle) is gone: the WAL thread drains and exits,
    // which closes the store channels; the store threads commit and exit.
    let mut joins = vec![("wal", wal.thread)];
    joins.extend(threads.joins);
    tokio::task::spawn_blocking(move || {
        for (name, t) in joins {
            if t.join().is_err() {
                tracing::error!(thread = name, "thread panicked");
            }
        }
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Wait until the log and span stores have applied every record the WAL replay handed
/// them, so that what was acknowledged before a restart answers queries once ready.
async fn replay_applied(backlog: &Backlog, shutdown: &CancellationToken) {
    const QUERYABLE: [Signal; 2] = [Signal::Logs, Signal::Traces];
    let started = std::time::Instant::now();
    let mut last_report = started;
    loop {
        let pending = backlog.pending(&QUERYABLE);
        if pending == 0 || shutdown.is_cancelled() {
            break;
        }
        if last_report.elapsed() >= std::time::Duration::from_secs(5) {
            last_report = std::time::Instant::now();
            tracing::info!(
                pending,
                elapsed_s = started.elapsed().as_secs(),
                "applying replayed records before becoming ready"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "replayed records applied"
    );
}

/// What every stage of start-up reads: the configuration, the registry each subsystem
/// registers its self-metrics on, listener security, and the shutdown token.
struct Stage<'a> {
    cfg: &'a CollectorConfig,
    opts: &'a RunOptions,
    /// Where each subsystem registers its self-metrics.
    registry: &'a Registry,
    security: &'a Security,
    shutdown: &'a CancellationToken,
}

/// Log the bound addresses on one line (tests read it); returns the API's.
fn log_addresses(cfg: &CollectorConfig, l: &Listeners) -> anyhow::Result<SocketAddr> {
    let (grpc, http, api) = (
        l.grpc.local_addr()?,
        l.http.local_addr()?,
        l.api.local_addr()?,
    );
    tracing::info!(
        otlp_grpc = %grpc,
        otlp_http = %http,
        api = %api,
        data_dir = %cfg.data_dir.display(),
        "listening"
    );
    Ok(api)
}

/// The data directory: its stores, the WAL checkpoints they start from, and the
/// quarantine where the WAL and the stores set poison records aside.
struct Stores {
    logs: LogStore,
    spans: SpanStore,
    traces: TraceStore,
    checkpoints: Arc<Checkpoints>,
    wal_dir: PathBuf,
    wal_metrics: WalMetrics,
    quarantine: Arc<Quarantine>,
}

impl Stores {
    fn open(ctx: &Stage<'_>) -> anyhow::Result<Self> {
        let (cfg, registry) = (ctx.cfg, ctx.registry);
        let data = &cfg.data_dir;
        lookout_ingest::fsutil::create_dir_all(data)
            .with_context(|| format!("cannot create data directory {}", data.display()))?;
        let width = i64::try_from(cfg.index.partition.get().as_secs()).unwrap_or(i64::MAX);
        let writer = WriterOptions {
            memory: cfg.index.writer_memory.as_usize(),
            threads: cfg.index.writer_threads,
        };
        let wal_dir = data.join("wal");
        let wal_metrics = WalMetrics::register(registry)?;
        let spans = SpanStore::open(data, width).context("cannot open the span store")?;
        let traces = TraceStore::open(data, width).context("cannot open the trace summaries")?;
        let block_metrics = BlockMetrics::register(registry)?;
        spans.partitions().export_metrics(block_metrics.clone());
        traces.partitions().export_metrics(block_metrics);
        Ok(Self {
            logs: LogStore::open(&data.join("logs"), width, writer)
                .context("cannot open the log index")?,
            spans,
            traces,
            checkpoints: Arc::new(Checkpoints::default()),
            quarantine: Arc::new(Quarantine::beside(&wal_dir, wal_metrics.clone())),
            wal_dir,
            wal_metrics,
        })
    }
}

/// What is derived at ingest and read live: the trace tracker's shared state (open
/// traces, RED metrics, service graph), the OTLP metrics for `/metrics`, and the alert
/// engine that evaluates rules over them.
struct Live {
    traces: Arc<TracesShared>,
    metric_store: Arc<parking_lot::Mutex<MetricStore>>,
    alerts: alerts::AlertsHandle,
}

impl Live {
    fn new(
        ctx: &Stage<'_>,
        api_addr: SocketAddr,
        ready: &Arc<AtomicBool>,
        cluster: Option<crate::cluster::peers::Peers>,
    ) -> anyhow::Result<Self> {
        let (cfg, shutdown) = (ctx.cfg, ctx.shutdown);
        let traces = Arc::new(TracesShared::new(&cfg.traces));
        let metric_store = Arc::new(parking_lot::Mutex::new(MetricStore::new(
            crate::prom::StoreConfig::from(&cfg.metrics),
        )));
        let alert_metrics = alerts::AlertMetrics::register(ctx.registry)?;
        let alerts = alerts::spawn(
            alerts::AlertsSetup {
                cfg: alerts::AlertsConfig::from_collector(cfg),
                api_base: format!("http://{api_addr}"),
                traces: traces.clone(),
                metric_source: Some(Arc::new(alerts::StoreSource(metric_store.clone()))),
                metrics: alert_metrics,
                dir: cfg.data_dir.join("alerts"),
                ready: ready.clone(),
                cluster,
            },
            shutdown.clone(),
        );
        #[cfg(unix)]
        if let Some(path) = ctx.opts.config_path.clone() {
            tokio::spawn(reload_on_sighup(path, alerts.clone(), shutdown.clone()));
        }
        Ok(Self {
            traces,
            metric_store,
            alerts,
        })
    }
}

/// Serve the query API on `listener` until shutdown.
fn serve_api(
    ctx: &Stage<'_>,
    stores: &Stores,
    live: &Live,
    ready: Arc<AtomicBool>,
    listener: TcpListener,
    peers: Option<crate::cluster::peers::Peers>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (cfg, security, shutdown) = (ctx.cfg, ctx.security, ctx.shutdown);
    let api_metrics = ApiMetrics::register(ctx.registry)?;
    let state = ApiState {
        ready,
        registry: ctx.registry.clone(),
        guard: api::guard::QueryGuard::new(&cfg.query, api_metrics.refused.clone()),
        metrics: api_metrics,
        logs: stores.logs.clone(),
        spans: stores.spans.clone(),
        traces: stores.traces.clone(),
        shared: live.traces.clone(),
        red_window: cfg.traces.red_window.get(),
        metric_store: live.metric_store.clone(),
        alerts: live.alerts.clone(),
        query: cfg.query.clone(),
        peers,
    };
    let router = with_auth(
        api::router(state),
        security.api_tokens.clone(),
        &["/healthz", "/readyz"],
        net::auth::reject_json,
        &security.api.metrics,
    );
    let conns = net::incoming(listener, security.api.clone(), shutdown.clone());
    Ok(tokio::spawn(net::serve_http(
        conns,
        router,
        cfg.api.connections.clone(),
        shutdown.clone(),
        SHUTDOWN_GRACE,
    )))
}

/// The store threads fed from the WAL, and the dispatch that hands them records.
struct StoreThreads {
    dispatch: Dispatch,
    joins: Vec<(&'static str, JoinHandle<()>)>,
}

impl StoreThreads {
    fn spawn(
        ctx: &Stage<'_>,
        stores: &Stores,
        live: &Live,
        budget: &Arc<Budget>,
        backlog: &Arc<Backlog>,
    ) -> anyhow::Result<Self> {
        let (cfg, registry) = (ctx.cfg, ctx.registry);
        let index_metrics = IndexMetrics::register(registry)?;
        let ctx = IndexerContext {
            budget: budget.clone(),
            quarantine: stores.quarantine.clone(),
            records: RecordReader::new(stores.wal_dir.clone()),
            index_metrics: index_metrics.clone(),
            retention: cfg.retention.get(),
            backlog: backlog.clone(),
        };
        let cps = &stores.checkpoints;
        let log_progress = Progress::single(cps, Signal::Logs, stores.logs.index().checkpoint());
        // Replay of spans starts where both the span index and the trace tracker are done.
        let mut trace_progress = Progress::of_stores(
            cps,
            Signal::Traces,
            &[stores.spans.checkpoint(), stores.traces.checkpoint()],
        )
        .into_iter();
        let (Some(span_progress), Some(tracker_progress)) =
            (trace_progress.next(), trace_progress.next())
        else {
            anyhow::bail!("two stores of spans make two progress handles");
        };
        let (trace_tx, trace_thread) = tracker::spawn(tracker::TrackerSetup {
            store: stores.traces.clone(),
            shared: live.traces.clone(),
            progress: tracker_progress,
            metrics: TraceMetrics::register(registry)?,
            index_metrics,
            cfg: cfg.traces.clone(),
            blocks: cfg.spans.clone(),
            retention: cfg.retention.get(),
        })?;
        let (log_tx, log_thread) = spawn_indexer(
            IndexerSetup {
                signal: Signal::Logs,
                index: stores.logs.index().clone(),
                labels: IndexLabels {
                    signal: "logs",
                    index: "logs",
                },
                mapper: stores.logs.mapper().telling(live.traces.services.clone()),
                progress: log_progress,
                policy: CommitPolicy::of_index(&cfg.index),
            },
            ctx.clone(),
        )?;
        let (span_tx, span_thread) = spawn_indexer(
            IndexerSetup {
                signal: Signal::Traces,
                index: stores.spans.partitions().clone(),
                labels: IndexLabels {
                    signal: "traces",
                    index: "spans",
                },
                mapper: stores
                    .spans
                    .mapper(Some(trace_tx), cfg.spans.max_trace_bytes.get()),
                progress: span_progress,
                policy: CommitPolicy::of_spans(&cfg.spans),
            },
            ctx.clone(),
        )?;
        let (metric_tx, metric_thread) = spawn_metrics_window(WindowSetup {
            window: METRICS_WINDOW.max(cfg.metrics.stale_after.get()),
            store: live.metric_store.clone(),
            metrics: crate::prom::StoreMetrics::register(registry)?,
            checkpoints: stores.checkpoints.clone(),
            quarantine: stores.quarantine.clone(),
            services: live.traces.services.clone(),
        })?;
        let backlog = backlog.clone();
        let dispatch = Box::new(move |rec: Record| {
            backlog.sent(rec.signal);
            let tx = match rec.signal {
                Signal::Logs => &log_tx,
                Signal::Traces => &span_tx,
                Signal::Metrics => &metric_tx,
            };
            if tx.send(rec).is_err() {
                tracing::error!("a store thread is gone; the record stays in the WAL only");
            }
        });
        Ok(Self {
            dispatch,
            joins: vec![
                ("log indexer", log_thread),
                ("span indexer", span_thread),
                ("trace tracker", trace_thread),
                ("metrics", metric_thread),
            ],
        })
    }
}

/// The open WAL and its writer thread.
struct OpenWal {
    wal: Wal,
    thread: JoinHandle<()>,
}

/// Replay the WAL into `dispatch` past `checkpoints`, then start its writer thread.
async fn open_wal(ctx: &Stage<'_>, stores: &Stores, dispatch: Dispatch) -> anyhow::Result<OpenWal> {
    let cfg = ctx.cfg;
    let opts = WalOptions {
        segment_size: cfg.wal.segment_size.get(),
        fsync: cfg.wal.fsync,
        reserve: cfg.wal.reserve().get(),
    };
    let (dir, quarantine, checkpoints, metrics) = (
        stores.wal_dir.clone(),
        stores.quarantine.clone(),
        stores.checkpoints.clone(),
        stores.wal_metrics.clone(),
    );
    let (wal, thread) = tokio::task::spawn_blocking(move || {
        Wal::open_with_quarantine(&dir, &quarantine, opts, checkpoints, metrics, dispatch)
    })
    .await?
    .context("cannot open the write-ahead log")?;
    Ok(OpenWal { wal, thread })
}

/// This node's member entry: its name (default: host name and API port) and the API
/// URL other members ask (default: the API's listen address).
fn member(c: &lookout_config::ClusterConfig, api_addr: SocketAddr) -> crate::cluster::Member {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace('.', "-"))
        .unwrap_or_else(|_| "lookout".into());
    let node = c
        .node
        .clone()
        .unwrap_or_else(|| format!("{host}-{}", api_addr.port()));
    let api = c.advertise_api.clone().unwrap_or_else(|| {
        if api_addr.ip().is_unspecified() {
            format!("http://{host}:{}", api_addr.port())
        } else {
            format!("http://{api_addr}")
        }
    });
    crate::cluster::Member {
        node,
        api,
        consume: c.consume,
    }
}

/// Cluster mode: the connection to the stream (made in the background), the receivers'
/// publishing sink over it, and this node's membership, leases and consumers.
struct ClusterMode {
    link: lookout_cluster::gateway::Link,
    partitions: u32,
    publish: lookout_cluster::gateway::PublishMetrics,
    connect: tokio::task::JoinHandle<()>,
    node: tokio::task::JoinHandle<()>,
    status: Arc<crate::cluster::ClusterStatus>,
}

impl ClusterMode {
    fn start(
        ctx: &Stage<'_>,
        c: &lookout_config::ClusterConfig,
        status: Arc<crate::cluster::ClusterStatus>,
        wal: Wal,
        budget: Arc<Budget>,
    ) -> anyhow::Result<Self> {
        let me = status.me.clone();
        let node = me.node.clone();
        let nats = c.nats();
        let mut opts = lookout_cluster::jetstream::JetStreamOptions::from(&nats);
        opts.name = format!("lookout-collector {node}");
        let publish = lookout_cluster::gateway::PublishMetrics::register(ctx.registry, "lookout")?;
        let metrics = crate::cluster::ClusterMetrics::register(ctx.registry)?;
        let link = lookout_cluster::gateway::Link::default();
        let connect = {
            let (link, gauge, stop) = (
                link.clone(),
                publish.connected.clone(),
                ctx.shutdown.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = link.connect(opts, gauge, stop).await {
                    tracing::error!(error = %e, "cannot use the cluster's stream");
                }
            })
        };
        tracing::info!(node = %node, api = %me.api, consume = c.consume, stream = %nats.stream, partitions = nats.partitions, "cluster mode");
        let node = crate::cluster::spawn(
            crate::cluster::NodeSetup {
                me,
                stream: nats.stream.clone(),
                prefix: nats.subject_prefix.clone(),
                partitions: nats.partitions,
                replicas: nats.replicas as usize,
                lease_ttl: c.lease_ttl.get(),
            },
            status.clone(),
            link.clone(),
            wal,
            budget,
            metrics,
            ctx.shutdown.clone(),
        );
        Ok(Self {
            link,
            partitions: nats.partitions,
            publish,
            connect,
            node,
            status,
        })
    }

    /// The receivers' sink: publish, answer once acknowledged.
    fn sink(&self, retry_after: std::time::Duration) -> lookout_cluster::gateway::PublishSink {
        lookout_cluster::gateway::PublishSink::new(
            self.link.clone(),
            self.partitions,
            retry_after,
            self.publish.clone(),
        )
    }

    /// After shutdown: wait until the consumers wrote and acknowledged what they took and
    /// the leases are given back.
    async fn stop(self) {
        let _ = self.connect.await;
        let _ = self.node.await;
        drop(self.status);
    }
}

/// The OTLP receivers (and `--demo` traffic), writing into the WAL.
struct Receivers {
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    http: tokio::task::JoinHandle<()>,
    demo: Option<tokio::task::JoinHandle<()>>,
}

impl Receivers {
    fn serve(
        ctx: &Stage<'_>,
        sink: Arc<dyn ingest::IngestSink>,
        budget: Arc<Budget>,
        receiver: ReceiverMetrics,
        grpc: TcpListener,
        http: TcpListener,
    ) -> Self {
        let (cfg, security, shutdown) = (ctx.cfg, ctx.security, ctx.shutdown);
        let mut ingest_opts = IngestOptions::new(&cfg.limits, cfg.ingest.retry_after.get());
        ingest_opts.admission_wait = cfg.ingest.admission_wait.get();
        let ingest = Arc::new(Ingest::new(ingest_opts, sink, budget, receiver));
        let grpc_conns = net::incoming(grpc, security.otlp_grpc.clone(), shutdown.clone());
        let grpc = tokio::spawn(ingest::grpc::serve(
            grpc_conns,
            ingest.clone(),
            ingest::grpc::GrpcOptions {
                max_message_size: cfg.limits.max_request_size.as_usize(),
                tokens: security.otlp_tokens.clone(),
                unauthenticated: security.otlp_grpc.metrics.unauthenticated.clone(),
                max_concurrent_streams: cfg.otlp.connections.max_concurrent_streams,
                request_timeout: cfg.otlp.connections.request_timeout.get(),
            },
            shutdown.clone().cancelled_owned(),
        ));
        let http_router = with_auth(
            ingest::http::router(
                ingest.clone(),
                cfg.limits.max_request_size.as_usize(),
                cfg.limits.max_decompressed_size.as_usize(),
                cfg.otlp.connections.request_timeout.get(),
            ),
            security.otlp_tokens.clone(),
            &[],
            ingest::http::reject_unauthenticated,
            &security.otlp_http.metrics,
        );
        let http_conns = net::incoming(http, security.otlp_http.clone(), shutdown.clone());
        let http = tokio::spawn(net::serve_http(
            http_conns,
            http_router,
            cfg.otlp.connections.clone(),
            shutdown.clone(),
            SHUTDOWN_GRACE,
        ));
        let demo = ctx
            .opts
            .demo
            .then(|| tokio::spawn(crate::demo::run(ingest, shutdown.clone())));
        Self { grpc, http, demo }
    }

    /// Wait for the receivers to finish their in-flight requests after shutdown.
    async fn stop(self) -> anyhow::Result<()> {
        if let Some(t) = self.demo {
            let _ = t.await;
        }
        self.grpc.await?.context("OTLP/gRPC server failed")?;
        self.http.await?;
        Ok(())
    }
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
        registry: &Registry,
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
        let families = net::ListenerMetricsVec::register(registry, "lookout")
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
