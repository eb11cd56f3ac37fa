//! Where an HTTP/2 peer is in its frames, from the bytes it sends: enough to hold every
//! frame and every header block to a deadline once begun, as HTTP/1.1's header timeout
//! holds a request's headers. hyper's HTTP/2 server has no such timer, so a client
//! trickling a HEADERS frame a byte at a time would otherwise hold its connection for as
//! long as it likes.

/// The client connection preface (RFC 9113, 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame header length.
const HEADER: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_PUSH_PROMISE: u8 = 0x5;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `n` bytes of the preface matched so far.
    Preface(usize),
    /// `have` bytes of a frame header read.
    Header { buf: [u8; HEADER], have: usize },
    /// Payload bytes of the current frame still to come.
    Payload { left: u32 },
    /// Not HTTP/2 (HTTP/1.1 has its own header timeout): nothing is followed.
    Off,
}

/// What one read did to the peer's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// A unit was completed: the preface, a frame outside a header block, or a header
    /// block's last frame. The deadline of what is begun now starts afresh.
    pub completed: bool,
    /// The peer is in the middle of something (the preface, a frame, a header block) that
    /// must be finished in time.
    pub busy: bool,
}

/// Follows the frames of an HTTP/2 connection's incoming bytes.
#[derive(Debug, Clone)]
pub(crate) struct FrameWatch {
    state: State,
    /// A HEADERS or PUSH_PROMISE without END_HEADERS was read: CONTINUATION frames follow.
    in_header_block: bool,
}

impl Default for FrameWatch {
    fn default() -> Self {
        Self {
            state: State::Preface(0),
            in_header_block: false,
        }
    }
}

impl FrameWatch {
    /// Account for `bytes`, the next ones read from the peer.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Step {
        let mut completed = false;
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => break,
                State::Preface(n) => {
                    let want = &PREFACE[*n..];
                    let take = want.len().min(bytes.len());
                    if bytes[..take] != want[..take] {
                        self.state = State::Off;
                        break;
                    }
                    *n += take;
                    bytes = &bytes[take..];
                    if *n == PREFACE.len() {
                        completed = true;
                        self.state = State::Header {
                            buf: [0; HEADER],
                            have: 0,
                        };
                    }
                }
                State::Header { buf, have } => {
                    let take = (HEADER - *have).min(bytes.len());
                    buf[*have..*have + take].copy_from_slice(&bytes[..take]);
                    *have += take;
                    bytes = &bytes[take..];
                    if *have == HEADER {
                        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
                        let (kind, flags) = (buf[3], buf[4]);
                        let ends_block = flags & FLAG_END_HEADERS != 0;
                        match kind {
                            TYPE_HEADERS | TYPE_PUSH_PROMISE => self.in_header_block = !ends_block,
                            TYPE_CONTINUATION if ends_block => self.in_header_block = false,
                            _ => {}
                        }
                        self.state = State::Payload { left: len };
                    }
                }
                State::Payload { left } => {
                    let take = (*left as usize).min(bytes.len());
                    *left -= take as u32;
                    bytes = &bytes[take..];
                }
            }
            if self.state == (State::Payload { left: 0 }) {
                completed |= !self.in_header_block;
                self.state = State::Header {
                    buf: [0; HEADER],
                    have: 0,
                };
            }
        }
        Step {
            completed,
            busy: self.busy(),
        }
    }

    fn busy(&self) -> bool {
        match self.state {
            State::Off | State::Preface(0) => false,
            State::Preface(_) | State::Payload { .. } => true,
            State::Header { have, .. } => have > 0 || self.in_header_block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn http1_is_not_followed() {
        let mut w = FrameWatch::default();
        let s = w.feed(b"POST /v1/traces HTTP/1.1\r\n");
        assert!(!s.busy && !s.completed);
        assert!(!w.feed(b"Host: x\r\n").busy);
    }

    #[test]
    fn the_preface_and_frames_byte_by_byte() {
        let mut w = FrameWatch::default();
        for (i, b) in PREFACE.iter().enumerate() {
            let s = w.feed(&[*b]);
            assert!(s.busy != (i == PREFACE.len() - 1), "byte {i}");
            assert_eq!(s.completed, i == PREFACE.len() - 1);
        }
        let settings = frame(0x4, 0, &[0; 6]);
        for (i, b) in settings.iter().enumerate() {
            let s = w.feed(&[*b]);
            let last = i == settings.len() - 1;
            assert_eq!((s.busy, s.completed), (!last, last), "byte {i}");
        }
    }

    #[test]
    fn a_header_block_is_busy_until_end_headers() {
        let mut w = FrameWatch::default();
        w.feed(PREFACE);
        let s = w.feed(&frame(TYPE_HEADERS, 0, b"abc"));
        assert!(s.busy && !s.completed, "HEADERS without END_HEADERS");
        let s = w.feed(&frame(TYPE_CONTINUATION, 0, b"d"));
        assert!(s.busy && !s.completed);
        let s = w.feed(&frame(TYPE_CONTINUATION, FLAG_END_HEADERS, b"e"));
        assert!(!s.busy && s.completed);
        // Whole frames in one read, the next one begun.
        let mut bytes = frame(TYPE_HEADERS, FLAG_END_HEADERS, b"abc");
        bytes.extend(frame(0x0, 0, b"data"));
        bytes.extend(&frame(0x0, 0, b"more")[..5]);
        let s = w.feed(&bytes);
        assert!(s.busy && s.completed);
    }

    #[test]
    fn an_empty_frame_completes_at_its_header() {
        let mut w = FrameWatch::default();
        w.feed(PREFACE);
        let s = w.feed(&frame(0x4, 0x1, b""));
        assert!(!s.busy && s.completed);
    }
}
