//! Reading the buffer in order, as the shipper does.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lookout_ingest::seglog::{classify, resync_budget, Flaw, Next, SegmentReader, SeqCursor};

use super::format::{self, Record, FRAMING};
use super::pos::Pos;
use super::state::Inner;

/// Reads records in order from a position, never past what was written.
pub struct Reader {
    pub(super) inner: Arc<Inner>,
    pub(super) pos: Pos,
    pub(super) file: Option<(u64, SegmentReader)>,
    /// Sequence number of the last record read (0: none yet).
    pub(super) last_seq: u64,
}

/// What [`Reader::next`] found.
#[derive(Debug)]
pub enum Read {
    /// A record, and the position just past it.
    Record(Record, Pos),
    /// Nothing new within the timeout.
    Idle,
    /// The buffer is closed and everything was read.
    Closed,
}

impl Reader {
    /// Where the next record is read from (the end of the last one read).
    pub fn position(&self) -> Pos {
        self.pos
    }

    /// The next record, waiting up to `timeout` for one.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Read> {
        let deadline = Instant::now() + timeout;
        loop {
            let (path, seg, limit, sealed) = {
                let mut st = self.inner.state.lock();
                // Segments dropped under us (drop_oldest): move to the oldest left.
                if let Some(front) = st.segments.front() {
                    if self.pos.seg < front.seq {
                        self.pos = Pos {
                            seg: front.seq,
                            offset: 0,
                        };
                        self.file = None;
                    }
                }
                let Some(s) = st.segments.iter().find(|s| s.seq >= self.pos.seg) else {
                    return Ok(Read::Closed);
                };
                if s.seq > self.pos.seg {
                    self.pos = Pos {
                        seg: s.seq,
                        offset: 0,
                    };
                    self.file = None;
                }
                let (path, seq, len, sealed) = (s.path.clone(), s.seq, s.len, s.sealed);
                if self.pos.offset >= len {
                    if sealed {
                        self.pos = Pos {
                            seg: seq + 1,
                            offset: 0,
                        };
                        self.file = None;
                        continue;
                    }
                    if st.closed {
                        return Ok(Read::Closed);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Read::Idle);
                    }
                    self.inner.data.wait_for(&mut st, deadline - now);
                    continue;
                }
                (path, seq, len, sealed)
            };
            let reader = match &mut self.file {
                Some((s, r)) if *s == seg && r.offset() == self.pos.offset => r,
                _ => {
                    let r = match SegmentReader::open(&FRAMING, &path, self.pos.offset) {
                        Ok(r) => r,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            // Deleted under us by drop_oldest; the next turn moves on.
                            self.pos = Pos {
                                seg: seg + 1,
                                offset: 0,
                            };
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    &mut self.file.insert((seg, r)).1
                }
            };
            let flaw = match reader.next(limit)? {
                Next::Record { body, end } => {
                    let record = format::decode(body).map_err(io::Error::other)?;
                    self.pos.offset = end;
                    self.last_seq = record.seq;
                    return Ok(Read::Record(record, self.pos));
                }
                Next::End => continue,
                Next::Corrupt(flaw) => flaw,
            };
            self.step_over(&path, seg, limit, sealed, flaw)?;
        }
    }

    /// Step over the damage at the current position of segment `seg` (at `path`,
    /// readable up to `limit`): quietly when start-up reported it, else resynchronise,
    /// count and log it once.
    fn step_over(
        &mut self,
        path: &Path,
        seg: u64,
        limit: u64,
        sealed: bool,
        flaw: Flaw,
    ) -> io::Result<()> {
        let Some((_, reader)) = self.file.as_mut() else {
            return Ok(());
        };
        let offset = self.pos.offset;
        // Damage found at start-up was reported then: step over it quietly.
        if let Some(end) = self.inner.known_damage(seg, offset) {
            reader.seek(end)?;
            self.pos.offset = end;
            return Ok(());
        }
        let reason = FRAMING.reason(flaw);
        let window = SeqCursor {
            last: self.last_seq,
            first_window: FRAMING.first_window,
        }
        .window();
        let mut budget = resync_budget(limit.saturating_sub(offset));
        match reader.resync(limit, window, &mut budget)? {
            Some(at) => {
                let kind = classify(reader, offset, at, flaw, false)?;
                self.inner.metrics.damage.count(kind);
                self.inner.remember_damage(seg, offset, at);
                tracing::error!(segment = %path.display(), offset, bytes = at - offset, kind = kind.as_str(), reason, "damaged stretch in the buffer; skipping it");
                self.pos.offset = at;
            }
            None => {
                let kind = classify(reader, offset, limit, flaw, true)?;
                self.inner.metrics.damage.count(kind);
                tracing::error!(segment = %path.display(), offset, bytes = limit - offset, kind = kind.as_str(), reason, "damaged end of a buffer segment; skipping the rest of it");
                if sealed {
                    self.pos = Pos {
                        seg: seg + 1,
                        offset: 0,
                    };
                } else {
                    self.pos.offset = limit;
                }
                self.file = None;
            }
        }
        Ok(())
    }
}
