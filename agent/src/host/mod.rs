//! Host and process metrics (`[host_metrics]`): CPU, memory, disks, filesystems, network
//! and load of the machine, and CPU, memory, threads and file descriptors of one watched
//! process, every `interval`, as OTLP metrics with OpenTelemetry semantic-convention names.
//!
//! Linux only: everything is read from `/proc` (and `statvfs` for filesystems). A group
//! whose source cannot be read (another OS, a restricted container) is skipped with one
//! warning until it can be read again. Counters are cumulative sums starting at boot
//! (system) or at the process start (process); utilizations are computed between two
//! collections, so the first collection has none.

pub mod procfs;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lookout_config::HostMetricsConfig;
use lookout_proto::attr;
use lookout_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use lookout_proto::otlp::common::v1::{InstrumentationScope, KeyValue};
use lookout_proto::otlp::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use lookout_proto::otlp::resource::v1::Resource;
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::sink::{Entry, Signal, Sink};
use procfs::{CpuTimes, ProcStat};

/// Instrumentation scope name of everything collected here.
pub const SCOPE_NAME: &str = "lookout-agent/hostmetrics";

/// Sources that are skipped, each with one warning, while they cannot be read.
#[derive(Debug, Clone, Copy)]
enum Group {
    Cpu = 0,
    Memory,
    Disks,
    Filesystems,
    Network,
    Load,
    PidFile,
    Process,
    ProcessFds,
}

/// The watched process as last seen.
#[derive(Debug, Default)]
struct Watched {
    /// Pid and start time (jiffies after boot), to notice pid reuse.
    current: Option<(u32, u64)>,
    /// CPU jiffies (user, system) at the previous collection.
    prev_cpu: Option<(Instant, u64, u64)>,
    /// A warning that it is gone was logged.
    missing_warned: bool,
}

/// Host-metrics collector state: configuration, reused buffers and the previous CPU
/// times for utilizations.
#[derive(Debug)]
pub struct HostMetrics {
    cfg: HostMetricsConfig,
    resource: Vec<KeyValue>,
    clk_tck: f64,
    page_size: u64,
    own_pid: u32,
    buf: String,
    block_devices: Vec<String>,
    prev_cpu: Option<CpuTimes>,
    logical_cpus: u32,
    boot_ns: u64,
    watched: Watched,
    warned: u32,
    errors: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `metrics` under a resource with `attributes`, in the host metrics scope.
fn under_resource(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn read_into(path: impl AsRef<Path>, buf: &mut String) -> std::io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_string(buf).map(|_| ())
}

pub(crate) fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(fallback)
}

/// Undo the octal escapes (`\040` for a space) of `/proc/mounts`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes used, free (for unprivileged users) and reserved (for root) of a filesystem.
#[cfg(target_os = "linux")]
// The field types are u32 or u64 depending on the target.
#[allow(clippy::useless_conversion)]
fn statvfs(path: &str) -> Option<(u64, u64, u64)> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = u64::from(s.f_frsize);
    let (blocks, bfree, bavail) = (
        u64::from(s.f_blocks),
        u64::from(s.f_bfree),
        u64::from(s.f_bavail),
    );
    Some((
        blocks.saturating_sub(bfree) * frsize,
        bavail * frsize,
        bfree.saturating_sub(bavail) * frsize,
    ))
}

#[cfg(not(target_os = "linux"))]
fn statvfs(_path: &str) -> Option<(u64, u64, u64)> {
    None
}

/// Data points of one export request, as `Entry::items` counts them.
pub fn data_points(req: &ExportMetricsServiceRequest) -> u32 {
    let n: usize = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(metric::Data::Summary(s)) => s.data_points.len(),
            None => 0,
        })
        .sum();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Metrics of one resource, built up point by point.
struct Metrics {
    now: u64,
    out: Vec<Metric>,
}

/// A value of a data point.
#[derive(Clone, Copy)]
enum V {
    I(u64),
    F(f64),
}

impl Metrics {
    fn new(now: u64) -> Self {
        Self {
            now,
            out: Vec::with_capacity(24),
        }
    }

    fn points(&self, start: u64, points: Vec<(Vec<KeyValue>, V)>) -> Vec<NumberDataPoint> {
        points
            .into_iter()
            .map(|(attributes, v)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: self.now,
                value: Some(match v {
                    V::I(i) => {
                        number_data_point::Value::AsInt(i64::try_from(i).unwrap_or(i64::MAX))
                    }
                    V::F(f) => number_data_point::Value::AsDouble(f),
                }),
                ..Default::default()
            })
            .collect()
    }

    /// A cumulative sum starting at `start`.
    fn sum(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        monotonic: bool,
        start: u64,
        points: Vec<(Vec<KeyValue>, V)>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(start, points);
        self.out.push(Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: monotonic,
            })),
            ..Default::default()
        });
    }

    fn gauge(
        &mut self,
        name: &str,
        unit: &str,
        description: &str,
        points: Vec<(Vec<KeyValue>, V)>,
    ) {
        if points.is_empty() {
            return;
        }
        let data_points = self.points(0, points);
        self.out.push(Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Default::default()
        });
    }
}

/// `[(attributes of direction a), (of direction b)]` for a pair of values.
fn pair(
    key: &str,
    (a, b): (&str, &str),
    common: &[KeyValue],
    (va, vb): (u64, u64),
) -> [(Vec<KeyValue>, V); 2] {
    let with = |d: &str| {
        let mut v = common.to_vec();
        v.push(attr::string(key, d));
        v
    };
    [(with(a), V::I(va)), (with(b), V::I(vb))]
}

impl HostMetrics {
    /// A collector for `cfg`; `base_resource` becomes the resource of host metrics and,
    /// with `process.pid` and `process.executable.name`, of the watched process.
    pub fn new(cfg: &HostMetricsConfig, base_resource: Vec<KeyValue>) -> Self {
        Self {
            cfg: cfg.clone(),
            resource: base_resource,
            clk_tck: sysconf(libc::_SC_CLK_TCK, 100) as f64,
            page_size: sysconf(libc::_SC_PAGESIZE, 4096),
            own_pid: std::process::id(),
            buf: String::with_capacity(8192),
            block_devices: Vec::new(),
            prev_cpu: None,
            logical_cpus: 0,
            boot_ns: 0,
            watched: Watched::default(),
            warned: 0,
            errors: 0,
        }
    }

    /// Source reads that failed so far (every collection counts each failing group).
    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn failed(&mut self, g: Group, what: &str, err: &dyn std::fmt::Display) {
        self.errors += 1;
        let bit = 1 << g as u32;
        if self.warned & bit == 0 {
            self.warned |= bit;
            tracing::warn!(source = what, error = %err, "host metrics: cannot read {what}; skipping {g:?} metrics until it can be read");
        }
    }

    fn ok(&mut self, g: Group) {
        self.warned &= !(1 << g as u32);
    }

    /// Read `path` into the reused buffer, taking it out of `self`; `None` on failure,
    /// counted and warned about once.
    fn read(&mut self, g: Group, path: &str) -> Option<String> {
        let mut buf = std::mem::take(&mut self.buf);
        match read_into(path, &mut buf) {
            Ok(()) => {
                self.ok(g);
                Some(buf)
            }
            Err(e) => {
                self.buf = buf;
                self.failed(g, path, &e);
                None
            }
        }
    }

    /// Read `path` and parse it with `parse`, giving the buffer back; `None` when either
    /// fails, counted and warned about once (`unparsed` says what is wrong with the text).
    fn read_parsed<T>(
        &mut self,
        g: Group,
        path: &str,
        unparsed: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let buf = self.read(g, path)?;
        let parsed = parse(&buf);
        self.buf = buf;
        if parsed.is_none() {
            self.failed(g, path, &unparsed);
        }
        parsed
    }

    /// Collect every enabled group once. Never fails: unreadable groups are left out.
    pub fn collect(&mut self) -> ExportMetricsServiceRequest {
        let now = now_ns();
        let mut sys = Metrics::new(now);
        self.collect_cpu(&mut sys);
        self.collect_memory(&mut sys);
        self.collect_load(&mut sys);
        if self.cfg.disks {
            self.collect_disks(&mut sys);
        }
        if self.cfg.filesystems {
            self.collect_filesystems(&mut sys);
        }
        if self.cfg.network {
            self.collect_network(&mut sys);
        }
        let mut resource_metrics = Vec::with_capacity(2);
        if !sys.out.is_empty() {
            resource_metrics.push(under_resource(self.resource.clone(), sys.out));
        }
        if let Some((stat, pid)) = self.watched_process() {
            let mut proc = Metrics::new(now);
            self.collect_process(&mut proc, pid, &stat);
            let mut attributes = self.resource.clone();
            attributes.retain(|a| a.key != "process.pid" && a.key != "process.executable.name");
            attributes.push(attr::int("process.pid", i64::from(pid)));
            attributes.push(attr::string("process.executable.name", &stat.comm));
            resource_metrics.push(under_resource(attributes, proc.out));
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    fn collect_cpu(&mut self, m: &mut Metrics) {
        let Some(stat) =
            self.read_parsed(Group::Cpu, "/proc/stat", "no cpu line", procfs::parse_stat)
        else {
            return;
        };
        self.boot_ns = stat.boot_time_s.saturating_mul(1_000_000_000);
        self.logical_cpus = stat.logical_cpus;
        let mode = |name: &str| vec![attr::string("cpu.mode", name)];
        let times = stat
            .cpu
            .modes()
            .iter()
            .map(|(name, j)| (mode(name), V::F(*j as f64 / self.clk_tck)))
            .collect();
        m.sum(
            "system.cpu.time",
            "s",
            "Seconds each logical CPU spent on each mode, summed over CPUs.",
            true,
            self.boot_ns,
            times,
        );
        if let Some(prev) = self.prev_cpu {
            let total = stat.cpu.total().saturating_sub(prev.total());
            if total > 0 {
                let util = stat
                    .cpu
                    .modes()
                    .iter()
                    .zip(prev.modes())
                    .map(|((name, now), (_, before))| {
                        let d = now.saturating_sub(before) as f64 / total as f64;
                        (mode(name), V::F(d.clamp(0.0, 1.0)))
                    })
                    .collect();
                m.gauge(
                    "system.cpu.utilization",
                    "1",
                    "Fraction of CPU time in each mode since the previous collection, over all CPUs.",
                    util,
                );
            }
        }
        self.prev_cpu = Some(stat.cpu);
        m.sum(
            "system.cpu.logical.count",
            "{cpu}",
            "Logical CPUs online.",
            false,
            self.boot_ns,
            vec![(Vec::new(), V::I(u64::from(stat.logical_cpus)))],
        );
    }

    fn collect_memory(&mut self, m: &mut Metrics) {
        let Some(info) = self.read_parsed(
            Group::Memory,
            "/proc/meminfo",
            "no MemTotal",
            procfs::parse_meminfo,
        ) else {
            return;
        };
        let states = [
            ("used", info.used()),
            ("free", info.free),
            ("cached", info.cached),
            ("buffered", info.buffers),
        ];
        let state = |s: &str| vec![attr::string("system.memory.state", s)];
        m.sum(
            "system.memory.usage",
            "By",
            "Bytes of memory in each state.",
            false,
            self.boot_ns,
            states.iter().map(|(s, v)| (state(s), V::I(*v))).collect(),
        );
        let total = info.total as f64;
        m.gauge(
            "system.memory.utilization",
            "1",
            "Fraction of memory in each state.",
            states
                .iter()
                .map(|(s, v)| (state(s), V::F(*v as f64 / total)))
                .collect(),
        );
        m.sum(
            "system.memory.limit",
            "By",
            "Total memory.",
            false,
            self.boot_ns,
            vec![(Vec::new(), V::I(info.total))],
        );
    }

    fn collect_load(&mut self, m: &mut Metrics) {
        let Some(load) = self.read_parsed(
            Group::Load,
            "/proc/loadavg",
            "unexpected format",
            procfs::parse_loadavg,
        ) else {
            return;
        };
        for (name, v) in [
            ("system.cpu.load_average.1m", load[0]),
            ("system.cpu.load_average.5m", load[1]),
            ("system.cpu.load_average.15m", load[2]),
        ] {
            m.gauge(
                name,
                "{thread}",
                "Load average.",
                vec![(Vec::new(), V::F(v))],
            );
        }
    }

    /// Whole disks, from `/sys/block` (partitions are not listed there); empty when it
    /// cannot be read, and then every device is kept.
    fn refresh_block_devices(&mut self) {
        self.block_devices.clear();
        if let Ok(dir) = std::fs::read_dir("/sys/block") {
            for e in dir.flatten() {
                if let Ok(name) = e.file_name().into_string() {
                    self.block_devices.push(name);
                }
            }
        }
    }

    fn collect_disks(&mut self, m: &mut Metrics) {
        let Some(buf) = self.read(Group::Disks, "/proc/diskstats") else {
            return;
        };
        self.refresh_block_devices();
        let whole = &self.block_devices;
        let disks =
            procfs::parse_diskstats(&buf, |n| whole.is_empty() || whole.iter().any(|d| d == n));
        let mut io = Vec::with_capacity(disks.len() * 2);
        let mut ops = Vec::with_capacity(disks.len() * 2);
        for d in &disks {
            let dev = [attr::string("system.device", d.name)];
            io.extend(pair(
                "disk.io.direction",
                ("read", "write"),
                &dev,
                (d.read_bytes, d.write_bytes),
            ));
            ops.extend(pair(
                "disk.io.direction",
                ("read", "write"),
                &dev,
                (d.reads, d.writes),
            ));
        }
        drop(disks);
        self.buf = buf;
        m.sum(
            "system.disk.io",
            "By",
            "Bytes read from and written to each disk.",
            true,
            self.boot_ns,
            io,
        );
        m.sum(
            "system.disk.operations",
            "{operation}",
            "Reads and writes completed by each disk.",
            true,
            self.boot_ns,
            ops,
        );
    }

    fn collect_filesystems(&mut self, m: &mut Metrics) {
        let Some(buf) = self.read(Group::Filesystems, "/proc/mounts") else {
            return;
        };
        let mut usage = Vec::new();
        let mut util = Vec::new();
        for mount in procfs::parse_mounts(&buf) {
            let mountpoint = unescape_mount(mount.mountpoint);
            let Some((used, free, reserved)) = statvfs(&mountpoint) else {
                continue;
            };
            let common = [
                attr::string("system.device", mount.device),
                attr::string("system.filesystem.mountpoint", &mountpoint),
                attr::string("system.filesystem.type", mount.fstype),
                attr::string(
                    "system.filesystem.mode",
                    if mount.read_only { "ro" } else { "rw" },
                ),
            ];
            for (state, v) in [("used", used), ("free", free), ("reserved", reserved)] {
                let mut a = common.to_vec();
                a.push(attr::string("system.filesystem.state", state));
                usage.push((a, V::I(v)));
            }
            let total = used + free + reserved;
            if total > 0 {
                util.push((common.to_vec(), V::F(used as f64 / total as f64)));
            }
        }
        self.buf = buf;
        m.sum(
            "system.filesystem.usage",
            "By",
            "Bytes of each local disk filesystem in each state.",
            false,
            self.boot_ns,
            usage,
        );
        m.gauge(
            "system.filesystem.utilization",
            "1",
            "Fraction of each local disk filesystem used.",
            util,
        );
    }

    fn collect_network(&mut self, m: &mut Metrics) {
        let Some(buf) = self.read(Group::Network, "/proc/net/dev") else {
            return;
        };
        let devs = procfs::parse_net_dev(&buf);
        let mut io = Vec::with_capacity(devs.len() * 2);
        let mut packets = Vec::with_capacity(devs.len() * 2);
        let mut errors = Vec::with_capacity(devs.len() * 2);
        let mut dropped = Vec::with_capacity(devs.len() * 2);
        const DIR: (&str, &str) = ("receive", "transmit");
        for d in &devs {
            let dev = [attr::string("network.interface.name", d.name)];
            let key = "network.io.direction";
            io.extend(pair(key, DIR, &dev, (d.rx_bytes, d.tx_bytes)));
            packets.extend(pair(key, DIR, &dev, (d.rx_packets, d.tx_packets)));
            errors.extend(pair(key, DIR, &dev, (d.rx_errors, d.tx_errors)));
            dropped.extend(pair(key, DIR, &dev, (d.rx_dropped, d.tx_dropped)));
        }
        drop(devs);
        self.buf = buf;
        for (name, unit, desc, points) in [
            (
                "system.network.io",
                "By",
                "Bytes received and transmitted.",
                io,
            ),
            (
                "system.network.packets",
                "{packet}",
                "Packets received and transmitted.",
                packets,
            ),
            (
                "system.network.errors",
                "{error}",
                "Receive and transmit errors.",
                errors,
            ),
            (
                "system.network.dropped",
                "{packet}",
                "Packets dropped on receive and transmit.",
                dropped,
            ),
        ] {
            m.sum(name, unit, desc, true, self.boot_ns, points);
        }
    }

    /// The pid to watch according to the configuration, if any.
    fn target_pid(&mut self) -> Option<u32> {
        if self.cfg.pid != 0 {
            return Some(self.cfg.pid);
        }
        if !self.cfg.pid_file.as_os_str().is_empty() {
            let path = self.cfg.pid_file.clone();
            let mut buf = std::mem::take(&mut self.buf);
            let pid = match read_into(&path, &mut buf) {
                Ok(()) => match buf.trim().parse::<u32>() {
                    Ok(p) if p > 0 => {
                        self.ok(Group::PidFile);
                        Some(p)
                    }
                    _ => {
                        let e = format!("expected a process id, got {:?}", buf.trim());
                        self.failed(Group::PidFile, &path.display().to_string(), &e);
                        None
                    }
                },
                Err(e) => {
                    self.failed(Group::PidFile, &path.display().to_string(), &e);
                    None
                }
            };
            self.buf = buf;
            return pid;
        }
        if !self.cfg.process_name.is_empty() {
            if let Some((pid, _)) = self.watched.current {
                if self.comm_matches(pid) {
                    return Some(pid);
                }
            }
            return self.find_by_name();
        }
        None
    }

    fn comm_matches(&mut self, pid: u32) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let ok = read_into(format!("/proc/{pid}/comm"), &mut buf).is_ok()
            && buf.trim_end_matches('\n').as_bytes() == self.cfg.process_comm();
        self.buf = buf;
        ok
    }

    /// Lowest pid whose `comm` is `process_name`, other than the agent itself.
    fn find_by_name(&mut self) -> Option<u32> {
        let dir = std::fs::read_dir("/proc").ok()?;
        let mut best: Option<u32> = None;
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == self.own_pid || best.is_some_and(|b| b < pid) {
                continue;
            }
            if self.comm_matches(pid) {
                best = Some(pid);
            }
        }
        best
    }

    /// The watched process's stat, or `None` (warned about once) when it is gone.
    fn watched_process(&mut self) -> Option<(ProcStat, u32)> {
        let pid = self.target_pid();
        let stat = pid.and_then(|pid| {
            let mut buf = std::mem::take(&mut self.buf);
            let s = read_into(format!("/proc/{pid}/stat"), &mut buf)
                .ok()
                .and_then(|()| procfs::parse_proc_stat(&buf));
            self.buf = buf;
            s.map(|s| (s, pid))
        });
        let configured = self.cfg.pid != 0
            || !self.cfg.pid_file.as_os_str().is_empty()
            || !self.cfg.process_name.is_empty();
        match stat {
            Some((s, pid)) => {
                if self.watched.current != Some((pid, s.start_ticks)) {
                    if self.watched.missing_warned || self.watched.current.is_some() {
                        tracing::info!(pid, name = %s.comm, "host metrics: watching process");
                    }
                    self.watched.current = Some((pid, s.start_ticks));
                    self.watched.prev_cpu = None;
                }
                self.watched.missing_warned = false;
                Some((s, pid))
            }
            None => {
                if configured && !self.watched.missing_warned {
                    self.watched.missing_warned = true;
                    let what = match pid {
                        Some(p) => format!("process {p}"),
                        None => "no process".into(),
                    };
                    tracing::warn!(
                        pid = self.cfg.pid,
                        pid_file = %self.cfg.pid_file.display(),
                        process_name = %self.cfg.process_name,
                        "host metrics: watched process not found ({what}); looking again every interval"
                    );
                }
                self.watched.current = None;
                self.watched.prev_cpu = None;
                None
            }
        }
    }

    fn collect_process(&mut self, m: &mut Metrics, pid: u32, s: &ProcStat) {
        let start = self
            .boot_ns
            .saturating_add((s.start_ticks as f64 / self.clk_tck * 1e9) as u64);
        let mode = |name: &str| vec![attr::string("cpu.mode", name)];
        m.sum(
            "process.cpu.time",
            "s",
            "CPU seconds of the process in user and system mode.",
            true,
            start,
            vec![
                (mode("user"), V::F(s.utime as f64 / self.clk_tck)),
                (mode("system"), V::F(s.stime as f64 / self.clk_tck)),
            ],
        );
        let t = Instant::now();
        if let Some((at, u, st)) = self.watched.prev_cpu {
            let wall = t.duration_since(at).as_secs_f64() * f64::from(self.logical_cpus.max(1));
            if wall > 0.0 {
                let f = |now: u64, before: u64| {
                    V::F((now.saturating_sub(before) as f64 / self.clk_tck / wall).clamp(0.0, 1.0))
                };
                m.gauge(
                    "process.cpu.utilization",
                    "1",
                    "CPU time of the process since the previous collection over the elapsed time and the logical CPUs.",
                    vec![(mode("user"), f(s.utime, u)), (mode("system"), f(s.stime, st))],
                );
            }
        }
        self.watched.prev_cpu = Some((t, s.utime, s.stime));
        m.sum(
            "process.memory.usage",
            "By",
            "Resident set size of the process.",
            false,
            start,
            vec![(Vec::new(), V::I(s.rss_pages * self.page_size))],
        );
        m.sum(
            "process.memory.virtual",
            "By",
            "Virtual memory size of the process.",
            false,
            start,
            vec![(Vec::new(), V::I(s.vsize))],
        );
        m.sum(
            "process.thread.count",
            "{thread}",
            "Threads of the process.",
            false,
            start,
            vec![(Vec::new(), V::I(s.threads))],
        );
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(dir) => {
                self.ok(Group::ProcessFds);
                m.sum(
                    "process.open_file_descriptor.count",
                    "{file_descriptor}",
                    "Open file descriptors of the process.",
                    false,
                    start,
                    vec![(Vec::new(), V::I(dir.count() as u64))],
                );
            }
            Err(e) => self.failed(Group::ProcessFds, &format!("/proc/{pid}/fd"), &e),
        }
        self.ok(Group::Process);
    }
}

/// What [`spawn`] needs.
pub struct HostMetricsSetup {
    /// The `[host_metrics]` section.
    pub cfg: HostMetricsConfig,
    /// Resource attributes of everything collected (`host.name`, `service.name`, ...).
    pub base_resource: Vec<KeyValue>,
    /// Where each collection goes.
    pub sink: Arc<dyn Sink>,
    /// Registry of the agent's own metrics (`lookout_agent_host_*`).
    pub registry: Registry,
}

/// Self-metrics of the collection loop.
struct SelfMetrics {
    collections: IntCounter,
    errors: IntCounter,
    dropped: IntCounter,
    duration: Histogram,
}

impl SelfMetrics {
    fn register(registry: &Registry) -> anyhow::Result<Self> {
        let m = Self {
            collections: IntCounter::new(
                "lookout_agent_host_collections_total",
                "Host-metrics collections done.",
            )?,
            errors: IntCounter::new(
                "lookout_agent_host_errors_total",
                "Host-metrics sources (files under /proc, the pid file) that could not be read, per collection.",
            )?,
            dropped: IntCounter::new(
                "lookout_agent_host_dropped_rounds_total",
                "Host-metrics collections dropped because the buffer refused them.",
            )?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "lookout_agent_host_collection_duration_seconds",
                    "Time to collect host metrics once.",
                )
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25]),
            )?,
        };
        registry.register(Box::new(m.collections.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }
}

/// Start collecting every `interval` into the sink until `shutdown`; `None` when
/// `[host_metrics] enabled = false`. Fails when the self-metrics cannot be registered.
/// Must be called within a tokio runtime.
pub fn spawn(
    setup: HostMetricsSetup,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !setup.cfg.enabled {
        return Ok(None);
    }
    let m = SelfMetrics::register(&setup.registry)?;
    let mut host = HostMetrics::new(&setup.cfg, setup.base_resource);
    let interval = setup.cfg.interval.get();
    let sink = setup.sink;
    Ok(Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warn: Option<Instant> = None;
        let mut dropped_since_warn = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let errors_before = host.errors();
            let started = Instant::now();
            // statvfs and /proc reads are blocking calls, though short ones.
            let joined = tokio::task::spawn_blocking(move || {
                let req = host.collect();
                (host, req, started.elapsed())
            })
            .await;
            let (h, req, took) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "host metrics: collection failed; host metrics stop");
                    return;
                }
            };
            host = h;
            m.collections.inc();
            m.errors.inc_by(host.errors().saturating_sub(errors_before));
            m.duration.observe(took.as_secs_f64());
            let items = data_points(&req);
            if items == 0 {
                continue;
            }
            let entry = Entry {
                signal: Signal::Metrics,
                payload: Bytes::from(req.encode_to_vec()),
                items,
                positions: Vec::new(),
            };
            let res = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = sink.append(entry) => r,
            };
            if let Err(e) = res {
                m.dropped.inc();
                dropped_since_warn += 1;
                if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %e, dropped = dropped_since_warn, "host metrics: buffer refused a collection; dropped it (the next follows)");
                    last_warn = Some(Instant::now());
                    dropped_since_warn = 0;
                } else {
                    tracing::debug!(error = %e, "host metrics: buffer refused a collection; dropped it");
                }
            }
        }
    })))
}

#[cfg(test)]
mod tests;
