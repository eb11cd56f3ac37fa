//! `lookout-tui`: the terminal dashboard of a Lookout collector.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lookout_config::TuiConfig;
use lookout_tui::app::App;
use lookout_tui::client::{Client, Security};

/// Lookout terminal dashboard: services with RED figures, log search with live tail, trace
/// search and waterfall, alerts and the service graph, from a collector's query API.
///
/// Keys: Tab switches views, / edits the query, Enter opens, Esc goes back, ? lists every
/// key, q quits.
#[derive(Debug, Parser)]
#[command(name = "lookout-tui", version)]
struct Args {
    /// TOML config file (see config/examples/tui.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Collector query API base URL [default: http://127.0.0.1:7070].
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// How often the open view refreshes, e.g. `2s` [default: from the config, 2s].
    #[arg(long, value_name = "DURATION")]
    refresh: Option<String>,
    /// File holding the bearer token of the collector's query API.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA bundle to trust for an https:// collector (default: the system roots).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Write the dashboard's own log here (level from RUST_LOG, default info); without
    /// it nothing is logged, since the terminal belongs to the dashboard.
    #[arg(long, value_name = "FILE", env = "LOOKOUT_TUI_LOG")]
    log_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => lookout_config::report_error(&*e),
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: TuiConfig = lookout_config::load(args.config.as_deref())?;
    if let Some(c) = args.collector {
        cfg.collector = c;
    }
    if let Some(t) = args.token_file {
        cfg.token_file = Some(t);
    }
    if let Some(ca) = args.ca_file {
        cfg.tls.ca_file = Some(ca);
    }
    let security = security(&cfg)?;
    let refresh = match &args.refresh {
        Some(r) => {
            lookout_config::parse_duration(r).map_err(|e| anyhow::anyhow!("--refresh: {e}"))?
        }
        None => cfg.refresh.get(),
    };
    if refresh < Duration::from_millis(100) {
        anyhow::bail!("--refresh: must be at least 100ms, got {refresh:?}");
    }
    if !cfg.collector.starts_with("http://") && !cfg.collector.starts_with("https://") {
        anyhow::bail!(
            "--collector: expected an http:// or https:// URL, got {:?}",
            cfg.collector
        );
    }
    if let Some(path) = &args.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init();
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("lookout-tui needs a terminal on stdin and stdout");
    }
    let client = Client::with_security(
        &cfg.collector,
        Duration::from_secs(10).max(refresh * 5),
        &security,
    )
    .map_err(|e| anyhow::anyhow!("--collector {}: {e}", cfg.collector))?;
    tracing::info!(collector = %cfg.collector, ?refresh, "lookout-tui starting");
    let app = App::new(&cfg.collector, refresh);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    // Restores the terminal on panics too (ratatui's hook), and here on every return.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = rt.block_on(lookout_tui::run::run(&mut terminal, app, client));
    ratatui::restore();
    tracing::info!("lookout-tui stopped");
    result.context("terminal input failed")
}

/// Token and certificates named by the config, read once at start-up.
fn security(cfg: &TuiConfig) -> anyhow::Result<Security> {
    let read = |p: &std::path::Path, what: &str| {
        std::fs::read(p).with_context(|| format!("{what}: cannot read {}", p.display()))
    };
    let token = match &cfg.token_file {
        Some(p) => {
            let text = String::from_utf8(read(p, "--token-file")?)
                .map_err(|_| anyhow::anyhow!("--token-file: {} is not UTF-8", p.display()))?;
            let token = text.trim().to_string();
            lookout_config::validate_token(&token)
                .map_err(|r| anyhow::anyhow!("--token-file: {}: {r}", p.display()))?;
            Some(token)
        }
        None => None,
    };
    let ca_pem = match &cfg.tls.ca_file {
        Some(p) => Some(read(p, "--ca-file")?),
        None => None,
    };
    let identity_pem = match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = read(c, "tls.cert_file")?;
            pem.extend(read(k, "tls.key_file")?);
            Some(pem)
        }
        _ => None,
    };
    Ok(Security {
        token,
        ca_pem,
        identity_pem,
    })
}
