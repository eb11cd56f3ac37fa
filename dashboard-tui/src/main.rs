//! `lookout-tui`: the terminal dashboard. Its views are not built yet; the binary already
//! takes the agreed flags and validates its configuration.

use std::path::PathBuf;

use clap::Parser;
use lookout_config::TuiConfig;

/// Lookout terminal dashboard: services, logs, traces and alerts from a collector.
#[derive(Debug, Parser)]
#[command(name = "lookout-tui", version)]
struct Args {
    /// TOML config file (see config/examples/tui.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Collector query API base URL [default: http://127.0.0.1:7070].
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: TuiConfig = lookout_config::load(args.config.as_deref())?;
    if let Some(c) = args.collector {
        cfg.collector = c;
    }
    eprintln!("lookout-tui: configuration is valid ({cfg:?}), but the dashboard views are not built yet; use the query API at {}/api/v1 for now", cfg.collector);
    std::process::exit(2);
}
