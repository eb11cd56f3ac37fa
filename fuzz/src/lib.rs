//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! - [`runtime`]: one tokio current-thread runtime per fuzzing process.
//! - [`CheckingSink`]: an in-memory [`IngestSink`] that accepts everything and checks
//!   that what the ingest path hands to storage is consistent.
//! - [`ingest`]: the collector's shared ingest path ([`Ingest`]) over that sink.
//! - [`Input`]: a tiny reader that splits fuzz input into header bytes and a rest.
//! - [`wait_for_threads_named`]: lets detached worker threads finish between inputs.
//! - `__lsan_default_suppressions`: LeakSanitizer suppressions compiled into every target.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lookout_ingest::batch::Batch;
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
