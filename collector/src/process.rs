//! Process-wide settings made first thing in `main`, before any thread starts.

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

#[cfg(test)]
mod tests {
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
}
