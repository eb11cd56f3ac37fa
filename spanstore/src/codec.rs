//! Byte-level encoding shared by every part of a block: LEB128 varints, zigzag for signed
//! values, and a bounds-checked [`Cursor`] that turns any truncation or overflow into a
//! [`Malformed`] error instead of a panic (blocks are read back from disk, where anything
//! can happen to them).

/// What was wrong with bytes that should have held a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct Malformed {
    /// What the decoder expected.
    pub what: &'static str,
    /// Offset into the decoded buffer.
    pub at: usize,
}

/// Append `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag-encode a signed value so small magnitudes stay small.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Append a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads values back from a buffer, checking every bound.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn err(&self, what: &'static str) -> Malformed {
        Malformed { what, at: self.pos }
    }

    /// One unsigned LEB128 varint of at most ten bytes.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.err("truncated varint"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than ten bytes"))
    }

    /// A varint that must fit `u32`.
    pub fn varint_u32(&mut self) -> Result<u32, Malformed> {
        let at = self.pos;
        u32::try_from(self.varint()?).map_err(|_| Malformed {
            what: "value over u32",
            at,
        })
    }

    /// A varint used as a count or index into something of `limit` entries (exclusive).
    pub fn index(&mut self, limit: usize) -> Result<usize, Malformed> {
        let at = self.pos;
        match usize::try_from(self.varint()?) {
            Ok(i) if i < limit => Ok(i),
            _ => Err(Malformed {
                what: "index out of range",
                at,
            }),
        }
    }

    /// A count of items each taking at least `min_item_bytes` of what remains, so that a
    /// damaged count cannot make the reader allocate more than the buffer could hold.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, Malformed> {
        let at = self.pos;
        let n = self.varint()?;
        let most = self.remaining() / min_item_bytes.max(1);
        match usize::try_from(n) {
            Ok(n) if n <= most => Ok(n),
            _ => Err(Malformed {
                what: "count larger than the bytes that follow",
                at,
            }),
        }
    }

    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(self.err("truncated bytes"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u32`.
    pub fn u32_le(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian `u64`.
    pub fn u64_le(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.count(1)?;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str, Malformed> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed {
            what: "string not UTF-8",
            at,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip() {
        let values = [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut buf = Vec::new();
        for v in values {
            put_varint(&mut buf, v);
        }
        let mut c = Cursor::new(&buf);
        for v in values {
            assert_eq!(c.varint().unwrap(), v);
        }
        assert!(c.is_empty());
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        assert!(Cursor::new(&[0x80]).varint().is_err());
        assert!(Cursor::new(&[0xff; 11]).varint().is_err());
        // A count of 1000 items with three bytes behind it.
        let mut buf = Vec::new();
        put_varint(&mut buf, 1000);
        buf.extend_from_slice(&[1, 2, 3]);
        assert!(Cursor::new(&buf).count(1).is_err());
        assert!(Cursor::new(&[5, 1]).bytes().is_err());
        assert!(Cursor::new(&[3]).index(3).is_err());
        assert_eq!(Cursor::new(&[2]).index(3).unwrap(), 2);
    }
}
