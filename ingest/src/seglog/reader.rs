//! A streaming reader of one segment's frames.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::frame::{Flaw, Framing, SeqWindow, FRAME_LEN};

/// Bytes [`SegmentReader::resync`] reads at a time.
const RESYNC_WINDOW: usize = 1 << 20;

/// Bytes a resynchronisation over `bytes` of damage may checksum: twice the stretch and
/// a little more, so crafted data cannot make it quadratic.
pub fn resync_budget(bytes: u64) -> u64 {
    bytes.saturating_mul(2).saturating_add(1 << 20)
}

/// What reading the next frame found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A valid record ending at `end`.
    Record {
        /// Its body (the bytes after `len | crc32`).
        body: &'a [u8],
        /// Offset just past it.
        end: u64,
    },
    /// Clean end of the data available.
    End,
    /// Damage at the current offset.
    Corrupt(Flaw),
}

/// Reads the frames of one segment in order, holding one record in memory at a time.
pub struct SegmentReader {
    framing: &'static Framing,
    file: BufReader<File>,
    offset: u64,
    body: Vec<u8>,
}

impl SegmentReader {
    /// Open `path` at `offset`.
    pub fn open(framing: &'static Framing, path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            framing,
            file: BufReader::with_capacity(256 << 10, file),
            offset,
            body: Vec::new(),
        })
    }

    /// The framing read.
    pub fn framing(&self) -> &'static Framing {
        self.framing
    }

    /// Offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Move to `offset`.
    pub fn seek(&mut self, offset: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// Read the frame at the current offset, reading no further than `limit` (the
    /// readable end of the segment). On `Corrupt` the offset is left at the damage.
    pub fn next(&mut self, limit: u64) -> io::Result<Next<'_>> {
        let available = limit.saturating_sub(self.offset);
        if available == 0 {
            return Ok(Next::End);
        }
        if available < self.framing.header_len() as u64 {
            return Ok(Next::Corrupt(Flaw::TornHeader));
        }
        let mut frame = [0u8; FRAME_LEN];
        self.file.read_exact(&mut frame)?;
        let (len, crc) = match self.framing.check_header(&frame, available) {
            Ok(v) => v,
            Err(flaw) => return self.corrupt(flaw),
        };
        let body_len = usize::try_from(self.framing.body_len(len))
            .map_err(|_| io::Error::other("record length beyond the address space"))?;
        self.body.resize(body_len, 0);
        self.file.read_exact(&mut self.body)?;
        if let Err(flaw) = self.framing.check_body(&self.body, crc) {
            return self.corrupt(flaw);
        }
        self.offset += FRAME_LEN as u64 + body_len as u64;
        Ok(Next::Record {
            body: &self.body,
            end: self.offset,
        })
    }

    fn corrupt(&mut self, flaw: Flaw) -> io::Result<Next<'static>> {
        self.seek(self.offset)?;
        Ok(Next::Corrupt(flaw))
    }

    /// After damage at the current offset, find the next offset below `limit` where a
    /// valid record with a sequence number in `window` starts. Returns it (the reader is
    /// left there) or `None` when the rest is unreadable.
    ///
    /// The damaged stretch is read a window at a time and each offset's header is checked
    /// in memory ([`Framing::candidate`]); only headers passing that are checksummed, each
    /// taking its length off `budget` (see [`resync_budget`]), so a zero-filled or random
    /// stretch costs about one read of it.
    pub fn resync(
        &mut self,
        limit: u64,
        window: SeqWindow,
        budget: &mut u64,
    ) -> io::Result<Option<u64>> {
        let start = self.offset;
        let head = FRAME_LEN + self.framing.head_len;
        let mut bytes = Vec::new();
        let mut base = start + 1;
        while base + head as u64 <= limit {
            let want = usize::try_from((limit - base).min((RESYNC_WINDOW + head - 1) as u64))
                .unwrap_or(RESYNC_WINDOW);
            bytes.resize(want, 0);
            self.file.get_ref().read_exact_at(&mut bytes, base)?;
            for i in 0..(want + 1 - head).min(RESYNC_WINDOW) {
                let candidate = base + i as u64;
                if !self
                    .framing
                    .candidate(&bytes[i..i + head], candidate, limit, window)
                {
                    continue;
                }
                let cost = self.framing.frame_len(super::frame::u32_at(&bytes, i));
                if *budget < cost {
                    self.seek(start)?;
                    return Ok(None);
                }
                *budget -= cost;
                self.seek(candidate)?;
                if let Next::Record { .. } = self.next(limit)? {
                    self.seek(candidate)?;
                    return Ok(Some(candidate));
                }
            }
            base += RESYNC_WINDOW as u64;
        }
        self.seek(start)?;
        Ok(None)
    }

    /// The length field of the frame at `offset`, if the file holds one there.
    pub fn frame_len_at(&self, offset: u64) -> io::Result<Option<u32>> {
        let mut b = [0u8; 4];
        match self.file.get_ref().read_exact_at(&mut b, offset) {
            Ok(()) => Ok(Some(u32::from_le_bytes(b))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the `len` bytes at `offset` are all zero (bytes past the end of the file
    /// count as zero).
    pub fn is_zero(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20)];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let got = self.file.get_ref().read_at(&mut buf[..n], at)?;
            if got == 0 {
                break;
            }
            if buf[..got].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += got as u64;
        }
        Ok(true)
    }
}
