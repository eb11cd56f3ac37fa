//! Creating the files and directories of the data directory with restrictive modes, and
//! checking names before they become path components.
//!
//! Every directory the collector and the agent create is `0750` and every file `0640`
//! ([`DIR_MODE`], [`FILE_MODE`]): the modes are given at creation (`mkdir(2)`, `open(2)`),
//! never by a later `chmod`, so no file is ever readable by others, even for a moment. The
//! process umask still applies on top (a stricter umask gives stricter modes). Files that
//! libraries create on their own (tantivy's index files) only get the umask, so both
//! binaries set [`RESTRICTIVE_UMASK`] at start-up with [`set_umask`].
//!
//! Existing files and directories keep their mode: nothing here changes the mode of data
//! written by an older version.

use std::ffi::OsStr;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Mode of every directory we create: owner rwx, group r-x, others nothing.
pub const DIR_MODE: u32 = 0o750;
/// Mode of every file we create: owner rw, group r, others nothing.
pub const FILE_MODE: u32 = 0o640;
/// Umask both binaries set at start-up, so that files created by libraries (tantivy) get
/// at most [`DIR_MODE`] / [`FILE_MODE`] as well.
pub const RESTRICTIVE_UMASK: u32 = 0o027;
/// Longest name accepted by [`check_component`] (the usual `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Create `path` and its missing parents with [`DIR_MODE`] (like `mkdir -p -m 0750`).
/// Directories that already exist keep their mode.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Open options that create files with [`FILE_MODE`]; add the access flags as usual.
pub fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Create (or truncate) `path` for writing, with [`FILE_MODE`] when created.
pub fn create_file(path: &Path) -> io::Result<File> {
    open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Replace `path` atomically with `bytes`: write `<path>.tmp` with [`FILE_MODE`], fsync it,
/// rename it over `path`, and fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = create_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Fsync the directory holding `path`, so that a new or renamed entry is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Set the process umask to `mask` (e.g. [`RESTRICTIVE_UMASK`]) and return the previous
/// one. The umask is process-wide: call this first thing in `main`, before any thread
/// starts.
pub fn set_umask(mask: u32) -> u32 {
    let mask = libc::mode_t::try_from(mask & 0o777).unwrap_or(0o027);
    // SAFETY: umask(2) cannot fail and has no preconditions; it only swaps the process's
    // file mode creation mask.
    let previous = unsafe { libc::umask(mask) };
    // mode_t is u16 on the BSDs and macOS.
    #[allow(clippy::useless_conversion)]
    u32::from(previous)
}

/// Space of a file system, from `statvfs(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes free for unprivileged writers (`f_bavail × f_frsize`): what is left before
    /// writes fail with `ENOSPC` (root may also use the blocks reserved for it).
    pub available: u64,
    /// Size of the file system (`f_blocks × f_frsize`).
    pub total: u64,
}

/// Space of the file system holding `path`.
// The field types are u32 or u64 depending on the target.
#[allow(clippy::useless_conversion)]
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `s` a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = u64::from(s.f_frsize);
    Ok(FsSpace {
        available: u64::from(s.f_bavail).saturating_mul(frsize),
        total: u64::from(s.f_blocks).saturating_mul(frsize),
    })
}

/// An exclusive lock on a data or buffer directory: `flock(2)` on `<dir>/LOCK`, which
/// holds the owner's PID. Held until dropped; the kernel releases it when the process
/// exits, `kill -9` included, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{} is in use by another process (pid {pid}); stop that process or choose another directory",
        dir.display()
    )]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The PID written by the holder (`unknown` if unreadable).
        pid: String,
    },
    /// The directory or its lock file cannot be created or locked.
    #[error("cannot lock {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

impl DirLock {
    /// Name of the lock file inside the directory.
    pub const FILE: &'static str = "LOCK";

    /// Create `dir` if needed and lock it, or say which process holds it. Take it before
    /// anything in the directory is read.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        create_dir_all(dir).map_err(io)?;
        let mut file = open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(Self::FILE))
            .map_err(io)?;
        // SAFETY: flock(2) on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                });
            }
            return Err(io(e));
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

/// Why a name cannot be a path component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The name is empty.
    #[error("empty name")]
    Empty,
    /// The name is `.` or `..`.
    #[error("`{0}` is not allowed as a name")]
    Dots(String),
    /// The name holds a `/`, a `\` or a NUL byte, so it is not one component.
    #[error("name {0:?} contains a path separator or a NUL byte")]
    Separator(String),
    /// The name is longer than [`MAX_COMPONENT_LEN`] bytes.
    #[error("name is {0} bytes long; at most {MAX_COMPONENT_LEN} are allowed")]
    TooLong(usize),
}

/// Accept `name` as one path component that stays inside the directory it is joined to:
/// not empty, not `.` or `..`, no `/`, `\` or NUL, at most [`MAX_COMPONENT_LEN`] bytes.
/// Refuses rather than rewrites, so two different names never map to the same file.
pub fn check_component(name: &str) -> Result<&str, PathError> {
    if name.is_empty() {
        return Err(PathError::Empty);
    }
    if name == "." || name == ".." {
        return Err(PathError::Dots(name.to_owned()));
    }
    if name.contains(['/', '\\', '\0']) {
        return Err(PathError::Separator(name.to_owned()));
    }
    if name.len() > MAX_COMPONENT_LEN {
        return Err(PathError::TooLong(name.len()));
    }
    // Belt and braces: the standard library must see exactly one normal component.
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(c)), None) if c == OsStr::new(name) => Ok(name),
        _ => Err(PathError::Separator(name.to_owned())),
    }
}

/// `base/name` after [`check_component`] accepted `name`.
pub fn join_component(base: &Path, name: &str) -> Result<PathBuf, PathError> {
    Ok(base.join(check_component(name)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_directory_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DirLock::acquire(&data).unwrap();
        let e = DirLock::acquire(&data).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "in use by another process (pid {})",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.contains(&data.display().to_string()), "{msg}");
        drop(first);
        let again = DirLock::acquire(&data).unwrap();
        drop(again);
    }

    #[test]
    fn fs_space_reads_the_file_system_of_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let space = fs_space(dir.path()).unwrap();
        assert!(
            space.total > 0 && space.available <= space.total,
            "{space:?}"
        );
        let e = fs_space(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_with_restrictive_modes() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        // Under any umask at most as wide as 027 (the test runner's is usually 022).
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)) & !DIR_MODE, 0, "{d}");
        }
        let f = deep.join("f");
        create_file(&f).unwrap();
        assert_eq!(mode(&f) & !FILE_MODE, 0);
        let g = deep.join("g.json");
        write_atomic(&g, b"{}").unwrap();
        assert_eq!(std::fs::read(&g).unwrap(), b"{}");
        assert_eq!(mode(&g) & !FILE_MODE, 0);
        assert!(!deep.join("g.json.tmp").exists());
    }

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        let long = "x".repeat(MAX_COMPONENT_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "nul\0byte",
            long.as_str(),
        ] {
            assert!(check_component(bad).is_err(), "{bad:?} accepted");
            assert!(join_component(Path::new("/data"), bad).is_err());
        }
        for good in ["checkout", "payment-svc.v2", "..hidden", "a..b", "ünïcode"] {
            let p = join_component(Path::new("/data"), good).unwrap();
            assert_eq!(p.parent(), Some(Path::new("/data")), "{good}");
        }
        assert!(check_component(&"y".repeat(MAX_COMPONENT_LEN)).is_ok());
    }
}
