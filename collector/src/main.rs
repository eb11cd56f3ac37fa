//! `lookout-collector`: receives OTLP, stores and indexes it, answers queries.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lookout_collector::server;
use lookout_config::{CollectorConfig, DurationError, HumanDuration};
use tokio_util::sync::CancellationToken;

// glibc malloc spent a quarter of the ingest CPU in profiles; mimalloc is much cheaper for
// the many short-lived allocations of decoding and indexing.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lookout collector: OTLP ingest of traces, logs and metrics, durable storage, log and
/// trace search, and the query API.
#[derive(Debug, Parser)]
#[command(
    name = "lookout-collector",
    version,
    after_help = "Examples:\n  lookout-collector --demo\n  lookout-collector --config collector.toml --data-dir /var/lib/lookout\n  lookout-collector --otlp-grpc 0.0.0.0:4317 --otlp-http 0.0.0.0:4318\n\nLogging: RUST_LOG=debug (default info). Every flag overrides the config file.\nSIGHUP re-reads the config file's alert rules and receivers; an invalid file is refused and the running rules stay."
)]
struct Args {
    /// TOML config file (see config/examples/collector.toml); defaults apply without it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, value_name = "ADDR")]
    otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long, value_name = "ADDR")]
    otlp_http: Option<SocketAddr>,
    /// Query API, /metrics, /healthz, /readyz listen address [default: 127.0.0.1:7070].
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// Data directory [default: ./lookout-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How long data is kept, e.g. 7d [default: 7d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention: Option<HumanDuration>,
    /// Also generate the traffic of a small demo shop (frontend, checkout, payment,
    /// inventory) so there is something to look at.
    #[arg(long)]
    demo: bool,
    /// Validate the configuration, print it as TOML (secrets masked) and exit.
    #[arg(long)]
    check_config: bool,
}

fn parse_duration(s: &str) -> Result<HumanDuration, DurationError> {
    lookout_config::parse_duration(s).map(HumanDuration)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => lookout_config::report_error(&*e),
    }
}

fn run() -> anyhow::Result<()> {
    lookout_ingest::process::prepare_server_process();
    let args = Args::parse();
    lookout_ingest::process::init_logging();
    let mut cfg: CollectorConfig = lookout_config::load(args.config.as_deref())?;
    if let Some(a) = args.otlp_grpc {
        cfg.otlp.grpc = a;
    }
    if let Some(a) = args.otlp_http {
        cfg.otlp.http = a;
    }
    if let Some(a) = args.api {
        cfg.api.listen = a;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(r) = args.retention {
        cfg.retention = r;
    }
    lookout_config::Validate::validate(&cfg).map_err(|v| anyhow::anyhow!("<flags>: {v}"))?;
    if args.check_config {
        print!(
            "{}",
            lookout_config::to_toml_masked(&cfg, args.config.as_deref())?
        );
        for w in lookout_collector::alerts::guard::preflight(cfg.receivers.iter()) {
            eprintln!("warning: {w}");
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lookout-worker")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listeners = server::bind_listeners(&cfg).await?;
        let shutdown = CancellationToken::new();
        lookout_ingest::process::cancel_on_signals(shutdown.clone());
        let opts = server::RunOptions {
            demo: args.demo,
            config_path: args.config.clone(),
        };
        server::run(cfg, listeners, opts, shutdown).await
    })
}
