//! `lookout-agent`: the per-service sidecar. Its forwarding pipeline is not built yet; the
//! binary already takes the agreed flags and validates its configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use lookout_config::AgentConfig;

/// Lookout agent (sidecar): receives OTLP from the local service and ships it to the
/// collector.
#[derive(Debug, Parser)]
#[command(name = "lookout-agent", version)]
struct Args {
    /// TOML config file (see config/examples/agent.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317].
    #[arg(long, value_name = "ADDR")]
    otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318].
    #[arg(long, value_name = "ADDR")]
    otlp_http: Option<SocketAddr>,
    /// /metrics and /healthz listen address [default: 127.0.0.1:7071].
    #[arg(long, value_name = "ADDR")]
    api: Option<SocketAddr>,
    /// Collector OTLP/gRPC endpoint [default: http://127.0.0.1:4317].
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// Disk buffer directory [default: ./lookout-agent-buffer].
    #[arg(long, value_name = "DIR")]
    buffer_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: AgentConfig = lookout_config::load(args.config.as_deref())?;
    if let Some(a) = args.otlp_grpc {
        cfg.otlp_grpc = a;
    }
    if let Some(a) = args.otlp_http {
        cfg.otlp_http = a;
    }
    if let Some(a) = args.api {
        cfg.api = a;
    }
    if let Some(c) = args.collector {
        cfg.collector = c;
    }
    if let Some(d) = args.buffer_dir {
        cfg.buffer_dir = d;
    }
    eprintln!("lookout-agent: configuration is valid ({cfg:?}), but the forwarding pipeline is not built yet; send OTLP straight to lookout-collector for now");
    std::process::exit(2);
}
