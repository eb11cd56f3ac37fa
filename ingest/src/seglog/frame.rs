//! One frame: `len: u32 | crc32: u32 | body`, and what tells one log's frames apart
//! ([`Framing`]).

use super::damage::DamageKind;

/// Bytes of `len` and `crc32`.
pub const FRAME_LEN: usize = 8;

/// Widest jump of sequence numbers accepted past a known one when resynchronising: far
/// more records than any disk holds, yet a random 8-byte field falls in it only once in
/// 2^24 tries.
pub const MAX_SEQ_JUMP: u64 = 1 << 40;

/// The little-endian `u32` at `at` (the caller checked that four bytes are there).
pub fn u32_at(data: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The little-endian `u64` at `at` (the caller checked that eight bytes are there).
pub fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// Fewer bytes left than a header.
    TornHeader,
    /// The length field is out of the framing's range.
    BadLength,
    /// The length runs past the readable end.
    PastEnd,
    /// The body does not match its checksum.
    Checksum,
    /// A valid checksum over a body that makes no sense (the framing's check says why).
    BadHeader(&'static str),
}

/// What a log calls each [`Flaw`] in its messages and reports.
#[derive(Debug, Clone, Copy)]
pub struct Reasons {
    /// [`Flaw::TornHeader`].
    pub torn_header: &'static str,
    /// [`Flaw::BadLength`].
    pub bad_length: &'static str,
    /// [`Flaw::PastEnd`].
    pub past_end: &'static str,
    /// [`Flaw::Checksum`].
    pub checksum: &'static str,
}

/// How one log frames its records: everything the reader, the resynchronisation and the
/// damage classification need to know about it.
#[derive(Debug)]
pub struct Framing {
    /// File name extension of its segments (without the dot).
    pub extension: &'static str,
    /// Leading body bytes that `len` does not count (the body is `uncounted + len` bytes).
    pub uncounted: usize,
    /// Smallest valid `len`.
    pub min_len: u32,
    /// Largest valid `len`: a larger one is corruption, not data.
    pub max_len: u32,
    /// Leading body bytes [`Framing::plausible`] looks at.
    pub head_len: usize,
    /// Whether a body starting with `head` (`head_len` bytes) and `body_len` bytes long
    /// could be a record: resynchronisation checksums only candidates passing this (and
    /// the sequence-number window).
    pub plausible: fn(head: &[u8], body_len: usize) -> bool,
    /// Checks a body whose checksum is valid; an error is damage of kind
    /// [`DamageKind::BadHeader`].
    pub check: fn(body: &[u8]) -> Result<(), &'static str>,
    /// Texts of the flaws.
    pub reasons: Reasons,
    /// The damage kinds this log can report (the values of its `kind` label).
    pub kinds: &'static [DamageKind],
    /// Sequence numbers resynchronisation accepts while it knows none before (a log that
    /// knows better passes its own window).
    pub first_window: SeqWindow,
}

impl Framing {
    /// Bytes read before the length can be judged: the frame and the uncounted body bytes.
    pub fn header_len(&self) -> usize {
        FRAME_LEN + self.uncounted
    }

    /// Body bytes of a frame whose length field is `len`.
    pub fn body_len(&self, len: u32) -> u64 {
        self.uncounted as u64 + u64::from(len)
    }

    /// Bytes of a whole frame whose length field is `len`.
    pub fn frame_len(&self, len: u32) -> u64 {
        FRAME_LEN as u64 + self.body_len(len)
    }

    /// The text of `flaw`.
    pub fn reason(&self, flaw: Flaw) -> &'static str {
        match flaw {
            Flaw::TornHeader => self.reasons.torn_header,
            Flaw::BadLength => self.reasons.bad_length,
            Flaw::PastEnd => self.reasons.past_end,
            Flaw::Checksum => self.reasons.checksum,
            Flaw::BadHeader(why) => why,
        }
    }

    /// Start a frame at the end of `out`: returns where it starts; append the body, then
    /// call [`Framing::finish`].
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_LEN]);
        start
    }

    /// Fill in `len` and `crc32` of the frame started at `start`, whose body is the rest
    /// of `out`. A body too long for the length field gets `u32::MAX` (which no reader
    /// accepts).
    pub fn finish(&self, out: &mut [u8], start: usize) {
        let body = &out[start + FRAME_LEN..];
        let len = u32::try_from(body.len().saturating_sub(self.uncounted)).unwrap_or(u32::MAX);
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Judge a header given `available` bytes from its start: the frame's `len` and
    /// `crc32`, or why no record starts here.
    pub fn check_header(&self, header: &[u8], available: u64) -> Result<(u32, u32), Flaw> {
        if available < self.header_len() as u64 || header.len() < FRAME_LEN {
            return Err(Flaw::TornHeader);
        }
        let len = u32_at(header, 0);
        if len < self.min_len || len > self.max_len {
            return Err(Flaw::BadLength);
        }
        if available < self.frame_len(len) {
            return Err(Flaw::PastEnd);
        }
        Ok((len, u32_at(header, 4)))
    }

    /// Judge a body against the frame's checksum and the framing's check.
    pub fn check_body(&self, body: &[u8], crc: u32) -> Result<(), Flaw> {
        if crc32fast::hash(body) != crc {
            return Err(Flaw::Checksum);
        }
        (self.check)(body).map_err(Flaw::BadHeader)
    }

    /// Parse the frame at the start of `data`: its body and the bytes it takes.
    pub fn parse<'a>(&self, data: &'a [u8]) -> Result<(&'a [u8], usize), Flaw> {
        let (len, crc) = self.check_header(data, data.len() as u64)?;
        // check_header made sure the whole frame is in `data`.
        let end = usize::try_from(self.frame_len(len)).map_err(|_| Flaw::PastEnd)?;
        let body = &data[FRAME_LEN..end];
        self.check_body(body, crc)?;
        Ok((body, end))
    }

    /// Whether the `FRAME_LEN + head_len` bytes in `head` could start a record at
    /// `offset`, `limit` being the readable end and `window` the sequence numbers
    /// acceptable: used to pass over impossible candidates without checksumming them.
    pub fn candidate(&self, head: &[u8], offset: u64, limit: u64, window: SeqWindow) -> bool {
        let len = u32_at(head, 0);
        let seq = u64_at(head, FRAME_LEN);
        len >= self.min_len
            && len <= self.max_len
            && offset.saturating_add(self.frame_len(len)) <= limit
            && window.holds(seq)
            && (self.plausible)(&head[FRAME_LEN..], self.uncounted + len as usize)
    }
}

/// Sequence numbers a record found by resynchronisation may have: `(after, most]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWindow {
    /// Exclusive lower bound.
    pub after: u64,
    /// Inclusive upper bound.
    pub most: u64,
}

impl SeqWindow {
    /// Past `last`, by at most [`MAX_SEQ_JUMP`].
    pub fn after(last: u64) -> Self {
        Self {
            after: last,
            most: last.saturating_add(MAX_SEQ_JUMP),
        }
    }

    /// Within [`MAX_SEQ_JUMP`] of `around`, either side.
    pub fn around(around: u64) -> Self {
        Self {
            after: around.saturating_sub(MAX_SEQ_JUMP),
            most: around.saturating_add(MAX_SEQ_JUMP),
        }
    }

    /// Whether `seq` is in the window.
    pub fn holds(self, seq: u64) -> bool {
        seq > self.after && seq <= self.most
    }
}
