//! The signal protocol's framing (skycoin/net's TCP framing): DATA `[0x01][seq u32][len u32][body]`,
//! ACK `[0x80][seq u32]`, PING `[0x81][unix ms u64]`, PONG `[0x82][the ping's 8 bytes]`, all
//! big-endian. An incremental decoder over a bounded buffer; no input can make it panic.

use std::io::{self, Read};

/// The largest DATA body accepted (a Go client's resource report is about 10 KB).
pub const MAX_BODY: usize = 64 * 1024;

/// Bytes before a DATA frame's body: type, sequence number, length.
pub const DATA_HEADER_LEN: usize = 9;

/// The largest frame: a DATA frame with the largest body.
pub const MAX_FRAME: usize = DATA_HEADER_LEN + MAX_BODY;

/// Type byte of a DATA frame.
pub const TYPE_DATA: u8 = 0x01;
/// Type byte of an ACK frame.
pub const TYPE_ACK: u8 = 0x80;
/// Type byte of a PING frame.
pub const TYPE_PING: u8 = 0x81;
/// Type byte of a PONG frame.
pub const TYPE_PONG: u8 = 0x82;

/// How much the decoder's buffer grows per read: idle connections stay small.
const READ_CHUNK: usize = 16 * 1024;

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message, acknowledged by the receiver with an ACK of the same `seq`.
    Data {
        /// The sender's sequence number.
        seq: u32,
        /// The message: `[op u8][JSON]`.
        body: Vec<u8>,
    },
    /// Acknowledges the DATA frame `seq`.
    Ack {
        /// The acknowledged sequence number.
        seq: u32,
    },
    /// A keepalive from a client, carrying its clock.
    Ping {
        /// Unix time in milliseconds, as the sender saw it.
        ms: u64,
    },
    /// The answer to a PING, with the same 8 bytes.
    Pong {
        /// The PING's value.
        ms: u64,
    },
}

/// Why bytes are not a frame. Either way the stream cannot be resynchronised: close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte is none of DATA, ACK, PING, PONG.
    #[error("unknown frame type {0:#04x}: the peer does not speak the signal protocol")]
    UnknownType(u8),
    /// A DATA frame announces a body over [`MAX_BODY`].
    #[error("frame body of {0} bytes is over the limit of 65536 bytes")]
    BodyTooLong(u32),
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

impl Frame {
    /// Decodes the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else
    /// the frame and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some((&kind, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let decoded = match kind {
            TYPE_DATA => {
                let Some(seq) = be_u32(rest) else {
                    return Ok(None);
                };
                let Some(len) = rest.get(4..).and_then(be_u32) else {
                    return Ok(None);
                };
                let body_len = usize::try_from(len).unwrap_or(usize::MAX);
                if body_len > MAX_BODY {
                    return Err(FrameError::BodyTooLong(len));
                }
                rest.get(8..8 + body_len).map(|body| {
                    let frame = Frame::Data {
                        seq,
                        body: body.to_vec(),
                    };
                    (frame, DATA_HEADER_LEN + body_len)
                })
            }
            TYPE_ACK => be_u32(rest).map(|seq| (Frame::Ack { seq }, 5)),
            TYPE_PING => be_u64(rest).map(|ms| (Frame::Ping { ms }, 9)),
            TYPE_PONG => be_u64(rest).map(|ms| (Frame::Pong { ms }, 9)),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(decoded)
    }

    /// Appends the frame's bytes to `out`. A DATA body over [`MAX_BODY`] is refused.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Frame::Data { seq, body } => encode_data(*seq, &[body.as_slice()], out)?,
            Frame::Ack { seq } => {
                out.push(TYPE_ACK);
                out.extend_from_slice(&seq.to_be_bytes());
            }
            Frame::Ping { ms } => {
                out.push(TYPE_PING);
                out.extend_from_slice(&ms.to_be_bytes());
            }
            Frame::Pong { ms } => {
                out.push(TYPE_PONG);
                out.extend_from_slice(&ms.to_be_bytes());
            }
        }
        Ok(())
    }
}

/// Appends a DATA frame whose body is `parts` one after the other (an op byte and its JSON,
/// without gluing them first).
pub fn encode_data(seq: u32, parts: &[&[u8]], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > MAX_BODY {
        return Err(FrameError::BodyTooLong(
            u32::try_from(len).unwrap_or(u32::MAX),
        ));
    }
    out.reserve(DATA_HEADER_LEN + len);
    out.push(TYPE_DATA);
    out.extend_from_slice(&seq.to_be_bytes());
    // `len` ≤ MAX_BODY, so it fits.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Reassembles frames from a byte stream, holding at most one frame's worth ([`MAX_FRAME`])
/// of unread bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    failed: Option<FrameError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// How many more bytes the decoder takes before frames must be taken out.
    pub fn space(&self) -> usize {
        MAX_FRAME - self.buffered()
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Copies as much of `bytes` as fits and returns how many it took.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        self.compact();
        let taken = bytes.len().min(self.space());
        self.buf.extend_from_slice(&bytes[..taken]);
        taken
    }

    /// Reads once from `reader` into the free space: the reader's `Ok(0)` means end of stream,
    /// unless the decoder is full ([`Decoder::space`] is 0: take frames out first).
    pub fn read_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<usize> {
        self.compact();
        let want = self.space().min(READ_CHUNK);
        if want == 0 {
            return Ok(0);
        }
        let filled = self.buf.len();
        self.buf.resize(filled + want, 0);
        let outcome = reader.read(&mut self.buf[filled..]);
        let got = *outcome.as_ref().unwrap_or(&0);
        self.buf.truncate(filled + got);
        outcome
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After an error the
    /// stream is beyond repair and every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        match Frame::decode(&self.buf[self.start..]) {
            Ok(Some((frame, used))) => {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = Some(err);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Data {
                seq: 7,
                body: b"\x00{\"Id\":3}".to_vec(),
            },
            Frame::Data {
                seq: u32::MAX,
                body: Vec::new(),
            },
            Frame::Data {
                seq: 1,
                body: vec![0xAB; MAX_BODY],
            },
            Frame::Ack { seq: 0x0102_0304 },
            Frame::Ping {
                ms: 1_700_000_000_123,
            },
            Frame::Pong { ms: u64::MAX },
        ]
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn wire_layout() {
        assert_eq!(
            encoded(&Frame::Data {
                seq: 0x0A0B_0C0D,
                body: b"\x01null".to_vec()
            }),
            b"\x01\x0A\x0B\x0C\x0D\x00\x00\x00\x05\x01null"
        );
        assert_eq!(encoded(&Frame::Ack { seq: 5 }), b"\x80\x00\x00\x00\x05");
        assert_eq!(
            encoded(&Frame::Ping { ms: 0x0102 }),
            b"\x81\x00\x00\x00\x00\x00\x00\x01\x02"
        );
        assert_eq!(
            encoded(&Frame::Pong { ms: 0x0102 }),
            b"\x82\x00\x00\x00\x00\x00\x00\x01\x02"
        );
    }

    #[test]
    fn round_trip() {
        for frame in samples() {
            let bytes = encoded(&frame);
            assert_eq!(
                Frame::decode(&bytes).unwrap(),
                Some((frame.clone(), bytes.len()))
            );
        }
    }

    #[test]
    fn every_truncation_needs_more() {
        for frame in samples() {
            let bytes = encoded(&frame);
            for cut in 0..bytes.len() {
                assert_eq!(Frame::decode(&bytes[..cut]).unwrap(), None, "{cut}");
            }
        }
    }

    #[test]
    fn oversized_and_unknown_are_errors() {
        let mut too_long = vec![TYPE_DATA, 0, 0, 0, 1];
        too_long.extend_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        assert_eq!(
            Frame::decode(&too_long),
            Err(FrameError::BodyTooLong(MAX_BODY as u32 + 1))
        );
        let mut max = vec![TYPE_DATA, 0, 0, 0, 1];
        max.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Frame::decode(&max), Err(FrameError::BodyTooLong(u32::MAX)));
        assert_eq!(Frame::decode(b"\x02"), Err(FrameError::UnknownType(2)));
        let body = Frame::Data {
            seq: 1,
            body: vec![0; MAX_BODY + 1],
        };
        assert!(body.encode(&mut Vec::new()).is_err());
    }

    #[test]
    fn decoder_reassembles_byte_by_byte() {
        let stream: Vec<u8> = samples().iter().flat_map(encoded).collect();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for byte in &stream {
            assert_eq!(decoder.push(std::slice::from_ref(byte)), 1);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, samples());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn decoder_reads_in_chunks_and_stays_bounded() {
        let stream: Vec<u8> = samples().iter().flat_map(encoded).collect();
        let mut reader = io::Cursor::new(stream);
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        loop {
            let got = decoder.read_from(&mut reader).unwrap();
            assert!(decoder.buffered() <= MAX_FRAME);
            while let Some(frame) = decoder.next_frame().unwrap() {
                out.push(frame);
            }
            if got == 0 {
                break;
            }
        }
        assert_eq!(out, samples());
    }

    #[test]
    fn decoder_error_sticks() {
        let mut decoder = Decoder::new();
        decoder.push(b"\x80\x00\x00\x00\x01\x7f");
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Ack { seq: 1 }));
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x7f)));
        assert_eq!(decoder.next_frame(), Err(FrameError::UnknownType(0x7f)));
    }

    /// A small deterministic generator: the same bytes on every run.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x5EED_1234_ABCD_0001;
        for round in 0..2000 {
            let len = (xorshift(&mut state) % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            // Bias towards valid type bytes so the deeper paths are reached too.
            if let Some(first) = bytes.first_mut() {
                *first = [TYPE_DATA, TYPE_ACK, TYPE_PING, TYPE_PONG, *first][round % 5];
            }
            let mut decoder = Decoder::new();
            decoder.push(&bytes);
            for _ in 0..len + 1 {
                match decoder.next_frame() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            assert!(decoder.buffered() <= len);
        }
    }
}
