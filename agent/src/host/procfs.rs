//! Parsers of the `/proc` files host metrics are read from. Each takes the file's text and
//! returns what it understood; malformed lines are skipped, never a panic.

/// Jiffies per CPU mode, aggregated over CPUs (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user mode (including guest time).
    pub user: u64,
    /// Niced user mode.
    pub nice: u64,
    /// Kernel mode.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl CpuTimes {
    /// `(cpu.mode, jiffies)` in a fixed order.
    pub fn modes(&self) -> [(&'static str, u64); 8] {
        [
            ("user", self.user),
            ("system", self.system),
            ("idle", self.idle),
            ("iowait", self.iowait),
            ("nice", self.nice),
            ("irq", self.irq),
            ("softirq", self.softirq),
            ("steal", self.steal),
        ]
    }

    /// Sum over modes.
    pub fn total(&self) -> u64 {
        self.modes().iter().map(|m| m.1).sum()
    }
}

/// What host metrics use of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub cpu: CpuTimes,
    /// `cpuN` lines: logical CPUs online.
    pub logical_cpus: u32,
    /// Boot time, seconds since the epoch (`btime`).
    pub boot_time_s: u64,
}

fn num(s: Option<&str>) -> Option<u64> {
    s.and_then(|v| v.parse().ok())
}

/// Parse `/proc/stat`; `None` without a `cpu` line.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let mut out = Stat::default();
    let mut found = false;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.map_while(|x| x.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                out.cpu = CpuTimes {
                    user: at(0),
                    nice: at(1),
                    system: at(2),
                    idle: at(3),
                    iowait: at(4),
                    irq: at(5),
                    softirq: at(6),
                    steal: at(7),
                };
                found = true;
            }
            Some(k) if k.starts_with("cpu") && k[3..].bytes().all(|b| b.is_ascii_digit()) => {
                out.logical_cpus += 1;
            }
            Some("btime") => out.boot_time_s = num(f.next()).unwrap_or(0),
            _ => {}
        }
    }
    found.then_some(out)
}

/// Memory figures of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemFree`.
    pub free: u64,
    /// `Buffers`.
    pub buffers: u64,
    /// `Cached` plus `SReclaimable` (what `free` shows as cache).
    pub cached: u64,
}

impl MemInfo {
    /// Used: total minus free, buffers and cache.
    pub fn used(&self) -> u64 {
        self.total
            .saturating_sub(self.free)
            .saturating_sub(self.buffers)
            .saturating_sub(self.cached)
    }
}

/// Parse `/proc/meminfo`; `None` without `MemTotal`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut m = MemInfo::default();
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else {
            continue;
        };
        let mut f = rest.split_ascii_whitespace();
        let Some(v) = num(f.next()) else { continue };
        let v = if f.next() == Some("kB") { v * 1024 } else { v };
        match k {
            "MemTotal" => m.total = v,
            "MemFree" => m.free = v,
            "Buffers" => m.buffers = v,
            "Cached" | "SReclaimable" => m.cached += v,
            _ => {}
        }
    }
    (m.total > 0).then_some(m)
}

/// One device of `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk<'a> {
    /// Device name (`sda`, `nvme0n1`).
    pub name: &'a str,
    /// Reads completed.
    pub reads: u64,
    /// Bytes read (sectors of 512 bytes).
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// Parse `/proc/diskstats`, keeping devices `keep` accepts by name and skipping loop and
/// ram devices and devices that never did any I/O.
pub fn parse_diskstats<'a>(text: &'a str, keep: impl Fn(&str) -> bool) -> Vec<Disk<'a>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace().skip(2);
        let Some(name) = f.next() else { continue };
        if name.starts_with("loop") || name.starts_with("ram") || !keep(name) {
            continue;
        }
        let v: Vec<u64> = f.take(7).map_while(|x| x.parse().ok()).collect();
        let [reads, _, rsect, _, writes, _, wsect] = v[..] else {
            continue;
        };
        if reads == 0 && writes == 0 {
            continue;
        }
        out.push(Disk {
            name,
            reads,
            read_bytes: rsect * 512,
            writes,
            write_bytes: wsect * 512,
        });
    }
    out
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDev<'a> {
    /// Interface name.
    pub name: &'a str,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Transmitted packets dropped.
    pub tx_dropped: u64,
}

/// Parse `/proc/net/dev`, without the loopback interface.
pub fn parse_net_dev(text: &str) -> Vec<NetDev<'_>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.contains('|') {
            continue;
        }
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map_while(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.push(NetDev {
            name,
            rx_bytes: v[0],
            rx_packets: v[1],
            rx_errors: v[2],
            rx_dropped: v[3],
            tx_bytes: v[8],
            tx_packets: v[9],
            tx_errors: v[10],
            tx_dropped: v[11],
        });
    }
    out
}

/// One mount of `/proc/mounts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mount<'a> {
    /// Source device.
    pub device: &'a str,
    /// Mount point (octal escapes such as `\040` left as they are).
    pub mountpoint: &'a str,
    /// Filesystem type.
    pub fstype: &'a str,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Filesystem types whose usage is reported: local disk filesystems (network filesystems
/// are left out, as `statvfs` on an unreachable server can hang).
const DISK_FILESYSTEMS: [&str; 13] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "vfat", "exfat", "ntfs", "ntfs3", "f2fs", "jfs",
    "overlay",
];

/// Parse `/proc/mounts`, keeping local disk filesystems, one mount per device (the shortest
/// mount point, so bind mounts do not repeat a filesystem).
pub fn parse_mounts(text: &str) -> Vec<Mount<'_>> {
    let mut out: Vec<Mount<'_>> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if !DISK_FILESYSTEMS.contains(&fstype) {
            continue;
        }
        let m = Mount {
            device,
            mountpoint,
            fstype,
            read_only: opts.split(',').any(|o| o == "ro"),
        };
        match out.iter_mut().find(|o| o.device == device) {
            Some(o) if o.mountpoint.len() > mountpoint.len() => *o = m,
            Some(_) => {}
            None => out.push(m),
        }
    }
    out
}

/// What process metrics use of `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// `comm`: the executable name, at most 15 bytes.
    pub comm: String,
    /// User mode jiffies.
    pub utime: u64,
    /// Kernel mode jiffies.
    pub stime: u64,
    /// Threads.
    pub threads: u64,
    /// Start time, jiffies after boot.
    pub start_ticks: u64,
    /// Virtual memory size, bytes.
    pub vsize: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

/// Parse `/proc/PID/stat`; the name may hold spaces and parentheses.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields from 3 (state) on.
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let at = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        utime: at(14)?,
        stime: at(15)?,
        threads: at(20)?,
        start_ticks: at(22)?,
        vsize: at(23)?,
        rss_pages: at(24)?,
    })
}

/// Parse `/proc/loadavg`: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  1034216 10 144697 5435204 10184 3 5702 492 0 0
cpu0 566179 0 73040 2673253 3453 0 2227 244 0 0
cpu1 468036 0 71656 2761950 6730 0 3474 247 0 0
intr 187011364 0 9 0 0
ctxt 373473404
btime 1717000000
processes 1268453
procs_running 2
";

    #[test]
    fn stat() {
        let s = parse_stat(STAT).expect("stat");
        assert_eq!(s.logical_cpus, 2);
        assert_eq!(s.boot_time_s, 1_717_000_000);
        assert_eq!(s.cpu.user, 1_034_216);
        assert_eq!(s.cpu.nice, 10);
        assert_eq!(s.cpu.idle, 5_435_204);
        assert_eq!(s.cpu.irq, 3);
        assert_eq!(s.cpu.steal, 492);
        assert_eq!(
            s.cpu.total(),
            1034216 + 10 + 144697 + 5435204 + 10184 + 3 + 5702 + 492
        );
        assert_eq!(parse_stat("intr 1 2\n"), None);
        assert_eq!(parse_stat("cpu x y\n"), None);
    }

    #[test]
    fn meminfo() {
        let m = parse_meminfo(
            "MemTotal:       24684092 kB
MemFree:        21666280 kB
MemAvailable:   24186360 kB
Buffers:          123456 kB
Cached:          2500000 kB
SwapCached:            0 kB
SReclaimable:     100000 kB
HugePages_Total:       0
",
        )
        .expect("meminfo");
        assert_eq!(m.total, 24_684_092 * 1024);
        assert_eq!(m.free, 21_666_280 * 1024);
        assert_eq!(m.buffers, 123_456 * 1024);
        assert_eq!(m.cached, 2_600_000 * 1024);
        assert_eq!(
            m.used(),
            (24_684_092 - 21_666_280 - 123_456 - 2_600_000) * 1024
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn diskstats() {
        let text = "   7       0 loop0 12 0 100 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 253       0 vda 53812 1203 3794514 21080 1236921 702119 29409136 1263172 0 1190536 1322928 0 0 0 0 79453 38675
 253       1 vda1 50000 1203 3700000 21000 1236000 702000 29400000 1263000 0 1190000 1322000 0 0 0 0 0 0
  11       0 sr0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 252       0 zram0 4 0 32 0 2 0 16 0 0 0 0 0 0 0 0 0 0
 bad line
";
        let d = parse_diskstats(text, |n| n != "vda1");
        assert_eq!(
            d,
            vec![
                Disk {
                    name: "vda",
                    reads: 53812,
                    read_bytes: 3_794_514 * 512,
                    writes: 1_236_921,
                    write_bytes: 29_409_136 * 512,
                },
                Disk {
                    name: "zram0",
                    reads: 4,
                    read_bytes: 32 * 512,
                    writes: 2,
                    write_bytes: 16 * 512,
                }
            ]
        );
    }

    #[test]
    fn net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 307416710485 13116531    0    0    0     0          0         0 307416710485 13116531    0    0    0     0       0          0
  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0
";
        assert_eq!(
            parse_net_dev(text),
            vec![NetDev {
                name: "eth0",
                rx_bytes: 1000,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }

    #[test]
    fn mounts() {
        let text = "proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime,discard 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vda /etc/hosts ext4 rw,relatime 0 0
/dev/sdb1 /data xfs ro,noatime 0 0
server:/x /mnt/nfs nfs4 rw 0 0
";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].device, m[0].mountpoint, m[0].read_only),
            ("/dev/vda", "/", false)
        );
        assert_eq!((m[1].fstype, m[1].read_only), ("xfs", true));
    }

    #[test]
    fn proc_stat() {
        let text = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 1932 0 0 0 150 42 0 0 20 0 7 0 123456 1056768000 2560 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        let p = parse_proc_stat(text).expect("stat");
        assert_eq!(
            p,
            ProcStat {
                comm: "my (odd) srv".into(),
                utime: 150,
                stime: 42,
                threads: 7,
                start_ticks: 123_456,
                vsize: 1_056_768_000,
                rss_pages: 2560,
            }
        );
        assert_eq!(parse_proc_stat("4242 (x) S 1 2"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 1/389 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52\n"), None);
    }
}
