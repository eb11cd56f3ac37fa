//! `lookout-agent`: the per-service sidecar. Receives OTLP from the local service, tails
//! log files, collects host metrics, buffers everything on disk and ships it to the
//! collector, or publishes it to a cluster's NATS JetStream stream.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use lookout_agent::buffer::scan::{self, SegmentScan};
use lookout_agent::buffer::Pos;
use lookout_agent::server;
use lookout_config::AgentConfig;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lookout agent (sidecar): receives OTLP from the local service, tails log files and
/// collects host metrics, buffers everything on disk, and ships it to the collector (or,
/// with --nats or [cluster], publishes it to the cluster's NATS JetStream stream).
#[derive(Debug, Parser)]
#[command(
    name = "lookout-agent",
    version,
    after_help = "Examples:\n  lookout-agent --collector http://collector.internal:4317\n  lookout-agent --nats nats://nats-1:4222,nats://nats-2:4222\n  lookout-agent --config agent.toml --buffer-dir /var/lib/lookout-agent\n  lookout-agent buffer inspect --buffer-dir /var/lib/lookout-agent\n  lookout-agent buffer verify --repair\n\nLogging: RUST_LOG=debug (default info). Every flag overrides the config file.\nSIGTERM or Ctrl-C stops cleanly; anything acknowledged stays in the buffer and is shipped after the next start."
)]
struct Args {
    /// TOML config file (see config/examples/agent.toml).
    #[arg(long, value_name = "FILE", global = true)]
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
    /// Collector OTLP endpoint [default: http://127.0.0.1:4317].
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// Cluster mode: publish to the Lookout cluster's NATS JetStream stream through this
    /// NATS server (nats://host:4222) instead of shipping OTLP to the collector. Repeat
    /// it or separate URLs with commas; sets cluster.urls, the other [cluster] keys keep
    /// the file's values or their defaults.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    nats: Vec<String>,
    /// Disk buffer directory [default: ./lookout-agent-buffer].
    #[arg(long, value_name = "DIR", global = true)]
    buffer_dir: Option<PathBuf>,
    /// Validate the configuration, print it as TOML (secrets masked) and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the disk buffer (the agent must not be running).
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
    },
}

#[derive(Debug, Subcommand)]
enum BufferAction {
    /// Report segments, records, items by signal, what is not yet shipped, and damage.
    Inspect {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum; exit 1 when damage is found.
    Verify {
        /// Rewrite damaged segments with only their valid records.
        #[arg(long)]
        repair: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
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
    if !args.nats.is_empty() {
        cfg.cluster.get_or_insert_with(Default::default).urls = args
            .nats
            .into_iter()
            .map(lookout_config::CredentialUrl)
            .collect();
    }
    lookout_config::Validate::validate(&cfg).map_err(|v| anyhow::anyhow!("<flags>: {v}"))?;
    if args.check_config {
        print!(
            "{}",
            lookout_config::to_toml_masked(&cfg, args.config.as_deref())?
        );
        return Ok(());
    }
    if let Some(Command::Buffer { action }) = args.command {
        let code = buffer_command(&cfg.buffer_dir.join(lookout_agent::buffer::SUBDIR), action)?;
        std::process::exit(code);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("lookout-agent")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listeners = server::bind_listeners(&cfg).await?;
        let shutdown = CancellationToken::new();
        lookout_ingest::process::cancel_on_signals(shutdown.clone());
        server::run(cfg, listeners, shutdown).await
    })
}

#[derive(serde::Serialize)]
struct Report {
    dir: String,
    ack: Option<Pos>,
    segments: Vec<SegmentScan>,
    records: u64,
    unacked_records: u64,
    items: [u64; 3],
    unacked_items: [u64; 3],
    damaged: usize,
    repaired: bool,
}

fn buffer_command(dir: &Path, action: BufferAction) -> anyhow::Result<i32> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{}: no disk buffer here (is --buffer-dir right?)",
            dir.display()
        );
    }
    let ack = lookout_agent::buffer::read_ack_file(dir);
    let (json, repair) = match action {
        BufferAction::Inspect { json } => (json, false),
        BufferAction::Verify { repair, json } => (json, repair),
    };
    // Repairing rewrites segments: never under a running agent.
    let _lock = match dir.parent() {
        Some(buffer_dir) if repair => Some(lookout_ingest::fsutil::DirLock::acquire(buffer_dir)?),
        _ => None,
    };
    let mut report = Report {
        dir: dir.display().to_string(),
        ack,
        segments: Vec::new(),
        records: 0,
        unacked_records: 0,
        items: [0; 3],
        unacked_items: [0; 3],
        damaged: 0,
        repaired: false,
    };
    for (seq, path) in scan::list_segments(dir).with_context(|| dir.display().to_string())? {
        let mut s = scan::scan_segment(seq, &path, ack.unwrap_or_default())
            .with_context(|| path.display().to_string())?;
        if repair && !s.damage.is_empty() {
            let found = s.damage.clone();
            s = scan::repair_segment(seq, &path).with_context(|| path.display().to_string())?;
            s.damage = found;
            report.repaired = true;
        }
        report.records += s.records;
        report.unacked_records += s.unacked_records;
        for i in 0..3 {
            report.items[i] += s.items[i];
            report.unacked_items[i] += s.unacked_items[i];
        }
        report.damaged += s.damage.len();
        report.segments.push(s);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.damaged > 0 && !report.repaired {
        1
    } else {
        0
    })
}

fn print_report(r: &Report) {
    println!("buffer {}", r.dir);
    match r.ack {
        Some(a) => println!("shipped up to segment {} offset {}", a.seg, a.offset),
        None => println!("nothing acknowledged yet (no ack.pos)"),
    }
    println!(
        "{:<26} {:>12} {:>9} {:>10} {:>10} {:>10}  damage",
        "segment", "bytes", "records", "spans", "logs", "points"
    );
    for s in &r.segments {
        let damage = if s.damage.is_empty() {
            "-".to_string()
        } else {
            s.damage
                .iter()
                .map(|d| {
                    format!(
                        "{} bytes at {} ({}{})",
                        d.len,
                        d.offset,
                        d.reason,
                        if d.tail { ", torn tail" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "{:<26} {:>12} {:>9} {:>10} {:>10} {:>10}  {}",
            s.file, s.bytes, s.records, s.items[0], s.items[1], s.items[2], damage
        );
    }
    println!(
        "total: {} records ({} spans, {} log records, {} data points); not yet shipped: {} records ({} spans, {} log records, {} data points)",
        r.records,
        r.items[0],
        r.items[1],
        r.items[2],
        r.unacked_records,
        r.unacked_items[0],
        r.unacked_items[1],
        r.unacked_items[2]
    );
    match (r.damaged, r.repaired) {
        (0, _) => println!("no damage found"),
        (n, true) => println!("{n} damaged stretches found and removed"),
        (n, false) => println!(
            "{n} damaged stretches found; `lookout-agent buffer verify --repair` removes them"
        ),
    }
}
