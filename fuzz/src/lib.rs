//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`runtime`]: one tokio current-thread runtime per fuzzing process.
//! - [`CheckingSink`]: an in-memory [`IngestSink`] that accepts everything and checks
//!   that what the ingest path hands to storage is consistent.
//! - [`ingest`]: the collector's shared ingest path ([`Ingest`]) over that sink.
//! - [`Input`]: a tiny reader that splits fuzz input into header bytes and a rest.
//! - [`segments`], [`write_logs`]: segment files of a log from fuzz input, for the
//!   `wal_reader` and `buffer_reader` targets.
//! - [`wait_for_threads_named`]: lets detached worker threads finish between inputs.
//! - `__lsan_default_suppressions`: LeakSanitizer suppressions compiled into every target.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lookout_ingest::batch::Batch;
use lookout_ingest::seglog::Framing;
use lookout_ingest::validate::Limits;
use lookout_ingest::{
    Budget, Ingest, IngestError, IngestOptions, IngestSink, ReceiverMetrics, SinkRequest,
};
use lookout_proto::attr;

/// The process-wide tokio runtime (current thread; the blocking pool serves
/// `spawn_blocking`).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Storage that accepts every request at once, after checking it: the payload that would
/// be written to the WAL must decode to the batch handed to the stores, and the item
/// count must match the batch.
pub struct CheckingSink;

impl IngestSink for CheckingSink {
    fn submit(
        &self,
        req: SinkRequest,
    ) -> Result<BoxFuture<'static, Result<(), IngestError>>, IngestError> {
        assert_eq!(req.signal, req.batch.signal(), "signal of the stored batch");
        assert_eq!(
            req.items,
            req.batch.item_count(),
            "items of the stored batch"
        );
        assert!(req.items > 0, "an empty batch is never stored");
        let stored = Batch::decode_protobuf(req.signal, &req.payload)
            .expect("the WAL payload decodes as protobuf");
        // Compare encodings, not values: NaN doubles are not equal to themselves.
        assert_eq!(
            stored.encode_protobuf(),
            req.batch.encode_protobuf(),
            "the WAL payload and the decoded batch handed to the stores differ"
        );
        Ok(Box::pin(async { Ok(()) }))
    }
}

/// Settings of one ingest path variant.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// Add agent-style resource attributes (`host.name`, ...) where missing, which
    /// exercises the raw-protobuf append in `ingest::enrich`.
    pub enrich: bool,
    /// Tiny attribute limits (2 attributes, 8 bytes), so truncation runs often.
    pub tight_limits: bool,
}

impl Variant {
    /// One of the four variants, from two bits of `b`.
    pub fn from_bits(b: u8) -> Self {
        Self {
            enrich: b & 1 != 0,
            tight_limits: b & 2 != 0,
        }
    }

    fn index(self) -> usize {
        usize::from(self.enrich) | usize::from(self.tight_limits) << 1
    }
}

/// The collector's ingest path over a [`CheckingSink`], built once per variant, with
/// the collector's default settings and a budget that never runs out.
pub fn ingest(v: Variant) -> Arc<Ingest> {
    static INGESTS: OnceLock<Vec<Arc<Ingest>>> = OnceLock::new();
    let all = INGESTS.get_or_init(|| {
        let registry = prometheus::Registry::new();
        let cfg = lookout_config::CollectorConfig::default();
        (0..4u8)
            .map(|bits| {
                let v = Variant::from_bits(bits);
                let metrics =
                    ReceiverMetrics::register(&registry, &format!("fuzz{bits}")).expect("metrics");
                let mut opts = IngestOptions::new(&cfg.limits, Duration::from_secs(1));
                if v.tight_limits {
                    opts.limits = Limits {
                        max_attributes: 2,
                        max_attribute_length: 8,
                        max_time_unix_nano: 0,
                        max_span_duration_nanos: 1_000,
                    };
                }
                if v.enrich {
                    opts.resource_defaults = vec![
                        attr::string("host.name", "fuzz-host"),
                        attr::string("service.instance.id", "fuzz-1"),
                        attr::string("service.name", "unknown_service"),
                    ];
                }
                let budget = Arc::new(Budget::new(1 << 40));
                Arc::new(Ingest::new(opts, Arc::new(CheckingSink), budget, metrics))
            })
            .collect()
    });
    all[v.index()].clone()
}

/// Splits fuzz input: a few header bytes read one at a time (zero once exhausted), then
/// the rest.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wrap `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, or 0 at the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// The next little-endian u16 (zero-padded at the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next little-endian u64 (zero-padded at the end).
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        u64::from_le_bytes(b)
    }

    /// Everything left.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Damage the block targets do to a block they built, read from the input after the
/// selector byte: when selector bit 1 is set, a u16 byte position, a byte XORed in there
/// and, with bit 2, a u16 position the file is cut at.
pub struct BlockDamage(Option<(u16, u8, u16)>, bool);

impl BlockDamage {
    /// Read the damage `sel` asks for from `input`.
    pub fn read(input: &mut Input<'_>, sel: u8) -> Self {
        let d = (sel & 2 != 0).then(|| (input.u16(), input.byte(), input.u16()));
        Self(d, sel & 4 != 0)
    }

    /// Apply it to `bytes` (not empty), then `read` them: a damaged block must be refused
    /// with an error naming it (`fuzz.blk`), giving `None`; an undamaged one must read.
    pub fn apply_and_read<T, E: std::fmt::Display>(
        &self,
        bytes: &mut Vec<u8>,
        read: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Option<T> {
        let damaged = self.apply(bytes);
        match read(bytes) {
            Ok(_) if damaged => panic!("a damaged block was read"),
            Ok(v) => Some(v),
            Err(e) if damaged => {
                assert!(e.to_string().starts_with("block fuzz.blk: "), "{e}");
                None
            }
            Err(e) => panic!("an undamaged block does not read: {e}"),
        }
    }

    /// Apply it to `bytes` (not empty); whether anything changed.
    fn apply(&self, bytes: &mut Vec<u8>) -> bool {
        let Some((at, xor, cut)) = self.0 else {
            return false;
        };
        let mut damaged = false;
        let at = usize::from(at) % bytes.len();
        if xor != 0 {
            bytes[at] ^= xor;
            damaged = true;
        }
        if self.1 {
            bytes.truncate(usize::from(cut) % bytes.len());
            damaged = true;
        }
        damaged
    }
}

/// Where the temporary directories of on-disk targets go: tmpfs when there is one.
fn temp_root() -> &'static std::path::Path {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::path::Path::new("/tmp")
    }
}

/// A fresh temporary directory named `prefix...` holding, in each of its subdirectories
/// `dirs`, the segment files `segs` (numbered from 1, named as `framing` names them).
pub fn write_logs(
    prefix: &str,
    framing: &Framing,
    dirs: &[&str],
    segs: &[Vec<u8>],
) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(temp_root())
        .expect("temp dir");
    for dir in dirs {
        let dir = root.path().join(dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (i, seg) in segs.iter().enumerate() {
            let name = lookout_ingest::seglog::segment_name(framing, i as u64 + 1);
            std::fs::write(dir.join(name), seg).expect("write segment");
        }
    }
    root
}

/// The head of one structured record: what [`segments`] decoded before handing the rest
/// of the record's input to the target.
#[derive(Debug, Clone, Copy)]
pub struct RecordHead {
    /// Control bits: 0-1 the tag (0: an explicit tag byte followed), 2 break the checksum,
    /// 3 start a new segment, 4 an explicit sequence number followed.
    pub ctl: u8,
    /// Sequence number: explicit, or the previous one plus one.
    pub seq: u64,
    /// Signal tag.
    pub tag: u8,
}

/// A record a target encoded from its input.
pub struct Encoded {
    /// The record's bytes, checksum broken when the head says so.
    pub bytes: Vec<u8>,
    /// Whether the input held its whole payload; if not, it is written torn (its last
    /// byte cut off) and ends the log.
    pub whole: bool,
}

/// Segment files of a log from fuzz input, as the selector byte `sel` says:
/// - bit 0 clear, raw: up to `1 + (sel >> 1) % 3` segments, each but the last prefixed by
///   a little-endian u16 length; the bytes are written as they are.
/// - bit 0 set, structured: records built by `encode` with correct checksums (so the
///   fuzzer gets past them), each as `ctl: u8 [seq: u64] [tag: u8]` ([`RecordHead`])
///   followed by what `encode` reads; at most four segments.
pub fn segments(
    mut input: Input<'_>,
    sel: u8,
    mut encode: impl FnMut(RecordHead, &mut Input<'_>) -> Encoded,
) -> Vec<Vec<u8>> {
    if sel & 1 == 0 {
        let n = 1 + usize::from(sel >> 1) % 3;
        let mut segs = Vec::new();
        for _ in 1..n {
            let len = usize::from(input.u16());
            segs.push(input.take(len).to_vec());
        }
        segs.push(input.rest().to_vec());
        return segs;
    }
    let mut segs = vec![Vec::new()];
    let mut seq = 0u64;
    while !input.is_empty() {
        let ctl = input.byte();
        seq = if ctl & 0x10 != 0 {
            input.u64()
        } else {
            seq.wrapping_add(1)
        };
        let tag = match ctl & 3 {
            0 => input.byte(),
            t => t,
        };
        let rec = encode(RecordHead { ctl, seq, tag }, &mut input);
        if ctl & 8 != 0 && segs.len() < 4 {
            segs.push(Vec::new());
        }
        let seg = segs.last_mut().expect("a segment");
        if !rec.whole {
            seg.extend_from_slice(&rec.bytes[..rec.bytes.len() - 1]);
            break;
        }
        seg.extend_from_slice(&rec.bytes);
    }
    segs
}

/// `Bytes` of a slice (a copy).
pub fn bytes_of(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

/// Wait up to a second until no thread of this process is named `name` (Linux; elsewhere
/// it returns at once). Components such as the agent's disk buffer stop their worker
/// thread asynchronously; a thread still exiting when an input ends shows up as a leak
/// (its thread-local destructor list) to LeakSanitizer and makes runs flaky.
pub fn wait_for_threads_named(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let running = tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        });
        if !running || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// LeakSanitizer suppressions compiled into the targets (the sanitizer runtime calls this
/// hook at start-up). `__cxa_thread_atexit_impl`: glibc's list of thread-local destructors,
/// allocated the first time a thread (the fuzzing thread included) initialises a
/// thread-local with a destructor, such as parking_lot's per-thread parking data the
/// first time a lock is contended. It lives as long as the thread and LeakSanitizer does
/// not see glibc's pointer to it, so an input that happens to trigger it was reported as
/// a 32-byte leak.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:__cxa_thread_atexit_impl\n".as_ptr()
}

/// Keeps the hook above in the final binary.
#[used]
static LSAN_SUPPRESSIONS: extern "C" fn() -> *const std::ffi::c_char = __lsan_default_suppressions;
