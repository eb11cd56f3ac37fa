//! Splitting bytes into lines and lines into records, within a fixed memory bound.

use std::time::{Duration, Instant};

/// A complete line, or a record of joined lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// Content without the line terminator (`\n` or `\r\n`), at most the maximum length.
    pub bytes: Vec<u8>,
    /// File offset just past the last byte (terminator included) of the line or record.
    pub end: u64,
    /// Content was cut to the maximum length.
    pub truncated: bool,
}

/// Cuts a byte stream into lines. Keeps at most `max` bytes of the current line; the rest
/// of a longer line is dropped as it streams past.
#[derive(Debug)]
pub struct Lines {
    max: usize,
    buf: Vec<u8>,
    truncated: bool,
}

impl Lines {
    /// A splitter keeping at most `max` bytes per line.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
            truncated: false,
        }
    }

    /// Feed `data`, read at file offset `start`; complete lines go to `out`.
    pub fn feed(&mut self, data: &[u8], start: u64, out: &mut impl FnMut(Raw)) {
        let mut pos = 0;
        while pos < data.len() {
            let rest = &data[pos..];
            let (segment, newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            self.push(segment);
            pos += segment.len();
            if newline {
                pos += 1;
                out(self.finish(start + pos as u64));
            }
        }
    }

    fn push(&mut self, segment: &[u8]) {
        let room = self.max.saturating_sub(self.buf.len());
        if segment.len() > room {
            // A `\r` right past the limit is the CRLF terminator, not content.
            let cut = &segment[room..];
            if cut != b"\r" {
                self.truncated = true;
            }
        }
        self.buf
            .extend_from_slice(&segment[..segment.len().min(room)]);
    }

    fn finish(&mut self, end: u64) -> Raw {
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Raw {
            bytes,
            end,
            truncated: std::mem::take(&mut self.truncated),
        }
    }

    /// Whether part of a line (no terminator yet) is held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.truncated
    }

    /// The unterminated rest as a line ending at `end` (used when a file is released).
    pub fn take_partial(&mut self, end: u64) -> Option<Raw> {
        self.has_partial().then(|| self.finish(end))
    }

    /// Forget the partial line (the file was truncated).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.truncated = false;
    }
}

/// Joins lines into records: every line is a record, or with a start pattern a matching
/// line starts a record and other lines are appended to it.
#[derive(Debug)]
pub struct Joiner {
    start: Option<regex::bytes::Regex>,
    max: usize,
    pending: Option<Raw>,
    last: Instant,
}

impl Joiner {
    /// A joiner; records are cut to `max` bytes.
    pub fn new(start: Option<regex::bytes::Regex>, max: usize) -> Self {
        Self {
            start,
            max,
            pending: None,
            last: Instant::now(),
        }
    }

    /// Take a line; finished records go to `out`. Empty lines outside a record are
    /// dropped.
    pub fn push(&mut self, line: Raw, now: Instant, out: &mut impl FnMut(Raw)) {
        let Some(start) = &self.start else {
            if !line.bytes.is_empty() {
                out(line);
            }
            return;
        };
        self.last = now;
        if start.is_match(&line.bytes) {
            if let Some(done) = self.pending.take() {
                out(done);
            }
            self.pending = Some(line);
            return;
        }
        match &mut self.pending {
            Some(rec) => {
                let room = self.max.saturating_sub(rec.bytes.len());
                if room < line.bytes.len() + 1 {
                    rec.truncated = true;
                }
                if room > 0 {
                    rec.bytes.push(b'\n');
                    let take = line.bytes.len().min(room - 1);
                    rec.bytes.extend_from_slice(&line.bytes[..take]);
                }
                rec.truncated |= line.truncated;
                rec.end = line.end;
            }
            None if line.bytes.is_empty() => {}
            None => self.pending = Some(line),
        }
    }

    /// Whether a record is pending and has waited at least `timeout` for more lines.
    pub fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.pending.is_some() && now.saturating_duration_since(self.last) >= timeout
    }

    /// The pending record, if any.
    pub fn flush(&mut self) -> Option<Raw> {
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Raw>, Lines) {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        let mut off = 0;
        for c in chunks {
            l.feed(c, off, &mut |r| out.push(r));
            off += c.len() as u64;
        }
        (out, l)
    }

    #[test]
    fn lines_across_chunks_with_crlf() {
        let (out, l) = split(64, &[b"ab", b"c\r\nde\n", b"f"]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].bytes, b"abc");
        assert_eq!(out[0].end, 5);
        assert_eq!(out[1].bytes, b"de");
        assert_eq!(out[1].end, 8);
        assert!(l.has_partial());
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let (out, _) = split(4, &[b"abcdefgh", b"ij\nxy\nabcd\r\n"]);
        assert_eq!(out[0].bytes, b"abcd");
        assert!(out[0].truncated);
        assert_eq!(out[0].end, 11);
        assert_eq!(out[1].bytes, b"xy");
        assert!(!out[1].truncated);
        assert_eq!(out[2].bytes, b"abcd");
        assert!(!out[2].truncated, "CRLF past the limit is not content");
    }

    #[test]
    fn joiner_groups_by_start_pattern() {
        let re = regex::bytes::Regex::new(r"^\d").unwrap();
        let mut j = Joiner::new(Some(re), 12);
        let mut out = Vec::new();
        let now = Instant::now();
        for (i, l) in ["1 a", "  b", "2 c", "  dddddddddd", "  e"]
            .iter()
            .enumerate()
        {
            let raw = Raw {
                bytes: l.as_bytes().to_vec(),
                end: (i as u64 + 1) * 10,
                truncated: false,
            };
            j.push(raw, now, &mut |r| out.push(r));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, b"1 a\n  b");
        assert_eq!(out[0].end, 20);
        let last = j.flush().unwrap();
        assert_eq!(last.bytes, b"2 c\n  dddddd");
        assert!(last.truncated);
        assert_eq!(last.end, 50);
    }
}
