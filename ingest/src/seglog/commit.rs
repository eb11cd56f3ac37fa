//! Group commit: a writer thread takes every append queued behind the first one, up to a
//! byte limit, and writes (and syncs) them at once.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// What [`next_group`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `group` holds the next appends to commit.
    Group,
    /// Nothing arrived within the tick: time for periodic work.
    Idle,
    /// Every sender is gone: the writer stops.
    Closed,
}

/// Wait up to `tick` for an append, then add it and whatever else is already queued to
/// `group` (which the caller emptied), while the group holds fewer than `max_bytes`
/// (`size` tells each append's bytes).
pub fn next_group<T>(
    rx: &Receiver<T>,
    tick: Duration,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
    group: &mut Vec<T>,
) -> Wait {
    let first = match rx.recv_timeout(tick) {
        Ok(a) => a,
        Err(RecvTimeoutError::Timeout) => return Wait::Idle,
        Err(RecvTimeoutError::Disconnected) => return Wait::Closed,
    };
    let mut bytes = size(&first);
    group.push(first);
    while bytes < max_bytes {
        match rx.try_recv() {
            Ok(a) => {
                bytes += size(&a);
                group.push(a);
            }
            Err(_) => break,
        }
    }
    Wait::Group
}
