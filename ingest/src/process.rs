//! Process-wide settings made first thing in `main`, before any thread starts, and the
//! logging set-up both server binaries share.

/// The start-up settings of a server binary (collector, agent), to run first thing in
/// `main` while the process is still single-threaded: the [`RESTRICTIVE_UMASK`] so that
/// files libraries create (tantivy's index files) get 0640 and directories 0750 at most,
/// like ours; transparent huge pages off, since they would keep whole 2 MiB regions of a
/// sparse heap resident; and with mimalloc, freed memory returned promptly.
///
/// [`RESTRICTIVE_UMASK`]: crate::fsutil::RESTRICTIVE_UMASK
pub fn prepare_server_process() {
    crate::fsutil::set_umask(crate::fsutil::RESTRICTIVE_UMASK);
    disable_transparent_huge_pages();
    #[cfg(feature = "mimalloc")]
    purge_freed_memory_promptly();
}

/// Logs to stderr, at the level `RUST_LOG` gives (default `info`), coloured only when
/// stderr is a terminal. The HTTP/2 libraries' warnings about one peer (a GOAWAY for
/// too many resets, say) are let through once per [`LIBRARY_WARNING_INTERVAL`]: a
/// client resetting streams on purpose must not also flood the log.
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Asked at every event of those call sites (`sometimes`), not once per call site.
    let throttle = tracing_subscriber::filter::DynFilterFn::new(|meta, _| {
        !is_library_warning(meta.target(), *meta.level()) || LIBRARY_WARNINGS.allow(now_secs())
    })
    .with_callsite_filter(|meta| {
        if is_library_warning(meta.target(), *meta.level()) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter)
        .with_filter(throttle);
    tracing_subscriber::registry().with(fmt).init();
}

/// At most one warning of the HTTP/2 libraries is logged per this many seconds.
pub const LIBRARY_WARNING_INTERVAL: u64 = 10;

/// A warning or error of `h2` or `hyper`: about one connection's peer, not about us.
fn is_library_warning(target: &str, level: tracing::Level) -> bool {
    level <= tracing::Level::WARN
        && (target == "h2" || target.starts_with("h2::") || target.starts_with("hyper"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

static LIBRARY_WARNINGS: Throttle = Throttle::new(LIBRARY_WARNING_INTERVAL);

/// Lets one event through per `interval` seconds.
struct Throttle {
    interval: u64,
    /// The second after which the next event may pass.
    next: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new(interval: u64) -> Self {
        Self {
            interval,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn allow(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering;
        let next = self.next.load(Ordering::Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now + self.interval,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// Turn off transparent huge pages for this process (Linux), unless `MIMALLOC_ALLOW_THP`
/// is set in the environment, which then decides as mimalloc documents it.
///
/// mimalloc advises huge pages on its arenas (`MADV_HUGEPAGE`), so with the common THP
/// setting `madvise` every partly used 2 MiB region of the heap is resident in full: the
/// agent held 50–65 MiB of anonymous memory for a 3.5 MiB heap, and drifted with load
/// (docs/BENCHMARKS.md, soak). Returns whether THP is now off for the process.
pub fn disable_transparent_huge_pages() -> bool {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) only sets a flag on this process's
        // memory map; it takes no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_t`; the sys crate does not name it.
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Make mimalloc return freed memory to the OS at once (`purge_delay` 0) instead of after
/// its default 10 ms (and 10× that for arenas), unless `MIMALLOC_PURGE_DELAY` is set in the
/// environment, which then wins.
///
/// The collector frees large buffers in bursts (decoded requests, tantivy writer arenas
/// after a commit); with the default delay the next burst often reuses pages that were
/// about to be purged, so the resident set creeps up under steady load. Side by side over
/// 25 minutes at 5,000 items/s, purging at once held about 30 % less anonymous memory and
/// cost no measurable throughput (docs/BENCHMARKS.md, allocator settings).
#[cfg(feature = "mimalloc")]
pub fn purge_freed_memory_promptly() {
    // SAFETY: sets one option word before other threads exist (the caller runs it first
    // thing in `main`); `set_default` leaves a value taken from the environment alone.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0) };
}

/// Cancel `token` on SIGTERM or Ctrl-C. The SIGTERM handler is installed before this
/// returns, so a SIGTERM right after start-up still means a clean stop. Call it inside
/// the runtime.
pub fn cancel_on_signals(token: tokio_util::sync::CancellationToken) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminated = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminated => {}
        }
        token.cancel();
    });
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn library_warnings_pass_once_per_interval() {
        use super::{is_library_warning, Throttle};
        use tracing::Level;
        assert!(is_library_warning(
            "h2::proto::streams::streams",
            Level::WARN
        ));
        assert!(is_library_warning("hyper::proto::h2::server", Level::ERROR));
        assert!(!is_library_warning("h2::codec", Level::INFO));
        assert!(!is_library_warning(
            "lookout_collector::server",
            Level::WARN
        ));
        let t = Throttle::new(10);
        assert!(t.allow(100));
        assert!(!t.allow(100));
        assert!(!t.allow(109));
        assert!(t.allow(110));
        assert!(!t.allow(111));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn thp_is_off_after_the_call() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        assert!(super::disable_transparent_huge_pages());
        // SAFETY: PR_GET_THP_DISABLE takes no pointers and returns the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }

    #[test]
    #[cfg(feature = "mimalloc")]
    fn purge_delay_is_zero_unless_the_environment_sets_it() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        super::purge_freed_memory_promptly();
        // SAFETY: reads one option word.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 0);
    }
}
