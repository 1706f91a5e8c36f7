//! What a sender and a recipient say on a messenger stream: the sender sends one message, the
//! recipient answers once with whether it stored it, and both close.
//!
//! ```text
//! message  version 1 | id 16 | text length 4 (big endian, 1 to MAX_TEXT) | text
//! answer   version 1 | code 1 | detail 4 (big endian: a limit, or a wait in milliseconds)
//! ```
//!
//! The recipient reads the fixed header first and decides on the length before it takes the
//! text, so a refused message costs it no more than the header.

use std::fmt;

use crate::api::messenger::MessageId;

/// This protocol's version; a peer speaking another is answered [`Answer::Malformed`].
pub const VERSION: u8 = 1;
/// The message header's length.
pub const HEADER_LEN: usize = 1 + 16 + 4;
/// The answer's length.
pub const ANSWER_LEN: usize = 6;
/// The longest text the protocol carries, in bytes; a recipient may take less.
pub const MAX_TEXT: usize = 65_536;

/// Why the bytes are not a message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Another version of the protocol.
    #[error("messenger protocol version {0}, not {VERSION}")]
    BadVersion(u8),
    /// A length of 0, or beyond [`MAX_TEXT`].
    #[error("a text length of {0} bytes (1 to {MAX_TEXT} are allowed)")]
    BadLength(u32),
}

/// A message's header: its id and how long its text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message's id.
    pub id: MessageId,
    /// The text's length in bytes, 1 to [`MAX_TEXT`].
    pub text_len: usize,
}

/// A message as sent: the header, then the text.
pub fn emit_message(id: MessageId, text: &str) -> Vec<u8> {
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(HEADER_LEN + text.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&id.0);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Reads a message header from what has arrived: `Ok(None)` while fewer than [`HEADER_LEN`]
/// bytes are there (a wrong version is known from the first byte).
pub fn parse_header(bytes: &[u8]) -> Result<Option<Header>, WireError> {
    let Some(&version) = bytes.first() else {
        return Ok(None);
    };
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&header[1..17]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[17..HEADER_LEN]);
    let len = u32::from_be_bytes(len);
    match usize::try_from(len) {
        Ok(text_len @ 1..=MAX_TEXT) => Ok(Some(Header {
            id: MessageId(id),
            text_len,
        })),
        _ => Err(WireError::BadLength(len)),
    }
}

/// The recipient's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Stored durably.
    Stored,
    /// A message with this id from this sender was stored before: a retry.
    AlreadyStored,
    /// The recipient's `messenger.allow` does not list the sender.
    NotAllowed,
    /// The text is longer than the recipient takes.
    TooLong {
        /// The most it takes, in bytes.
        max: u32,
    },
    /// The text is not UTF-8.
    NotUtf8,
    /// The sender sent more than the recipient takes from one sender per minute.
    RateLimited {
        /// How long until it takes another, in milliseconds.
        retry_after_ms: u32,
    },
    /// The recipient's inbox holds as many messages as it may.
    InboxFull {
        /// How many.
        max: u32,
    },
    /// The recipient has as many messenger streams open as it allows.
    Busy,
    /// The message was not one: another version, a bad length, or cut short.
    Malformed,
    /// The recipient could not write it to its disk.
    StoreFailed,
    /// A code this version does not know.
    Unknown(u8),
}

impl Answer {
    /// Whether the message is stored (now, or before).
    pub fn is_stored(self) -> bool {
        matches!(self, Answer::Stored | Answer::AlreadyStored)
    }

    fn code_and_detail(self) -> (u8, u32) {
        match self {
            Answer::Stored => (0, 0),
            Answer::AlreadyStored => (1, 0),
            Answer::NotAllowed => (2, 0),
            Answer::TooLong { max } => (3, max),
            Answer::NotUtf8 => (4, 0),
            Answer::RateLimited { retry_after_ms } => (5, retry_after_ms),
            Answer::InboxFull { max } => (6, max),
            Answer::Busy => (7, 0),
            Answer::Malformed => (8, 0),
            Answer::StoreFailed => (9, 0),
            Answer::Unknown(code) => (code, 0),
        }
    }

    fn from_code(code: u8, detail: u32) -> Answer {
        match code {
            0 => Answer::Stored,
            1 => Answer::AlreadyStored,
            2 => Answer::NotAllowed,
            3 => Answer::TooLong { max: detail },
            4 => Answer::NotUtf8,
            5 => Answer::RateLimited {
                retry_after_ms: detail,
            },
            6 => Answer::InboxFull { max: detail },
            7 => Answer::Busy,
            8 => Answer::Malformed,
            9 => Answer::StoreFailed,
            other => Answer::Unknown(other),
        }
    }
}

/// What a refusal tells the sender's user.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Stored => f.write_str("stored"),
            Answer::AlreadyStored => f.write_str("stored before (a retry)"),
            Answer::NotAllowed => f.write_str("this node is not in its messenger.allow list"),
            Answer::TooLong { max } => {
                write!(f, "the text is too long: it takes at most {max} bytes")
            }
            Answer::NotUtf8 => f.write_str("the text is not UTF-8"),
            Answer::RateLimited { retry_after_ms } => write!(
                f,
                "too many messages from this node: it takes another in {:.1} s",
                f64::from(*retry_after_ms) / 1000.0
            ),
            Answer::InboxFull { max } => write!(f, "its inbox is full ({max} messages)"),
            Answer::Busy => f.write_str(
                "it has as many messenger streams open as it allows: try again in a moment",
            ),
            Answer::Malformed => {
                f.write_str("it could not read the message (another protocol version?)")
            }
            Answer::StoreFailed => f.write_str("it could not write the message to its disk"),
            Answer::Unknown(code) => write!(f, "answer code {code}, unknown to this version"),
        }
    }
}

/// The answer as sent.
pub fn emit_answer(answer: Answer) -> [u8; ANSWER_LEN] {
    let (code, detail) = answer.code_and_detail();
    let detail = detail.to_be_bytes();
    [VERSION, code, detail[0], detail[1], detail[2], detail[3]]
}

/// Reads the answer from what has arrived: `Ok(None)` while it is incomplete.
pub fn parse_answer(bytes: &[u8]) -> Result<Option<Answer>, WireError> {
    match bytes {
        [] => Ok(None),
        [VERSION, code, a, b, c, d, ..] => Ok(Some(Answer::from_code(
            *code,
            u32::from_be_bytes([*a, *b, *c, *d]),
        ))),
        [VERSION, ..] => Ok(None),
        [version, ..] => Err(WireError::BadVersion(*version)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_from_its_header() {
        let id = MessageId([7; 16]);
        let bytes = emit_message(id, "héllo");
        for len in 0..HEADER_LEN {
            assert_eq!(parse_header(&bytes[..len]), Ok(None), "{len} bytes");
        }
        let header = parse_header(&bytes).unwrap().unwrap();
        assert_eq!(header.id, id);
        assert_eq!(header.text_len, "héllo".len());
        assert_eq!(&bytes[HEADER_LEN..], "héllo".as_bytes());
    }

    #[test]
    fn bad_headers_are_refused_before_the_text() {
        assert_eq!(parse_header(&[2]), Err(WireError::BadVersion(2)));
        let mut empty = emit_message(MessageId([0; 16]), "");
        assert_eq!(parse_header(&empty), Err(WireError::BadLength(0)));
        empty[17..21].copy_from_slice(&(MAX_TEXT as u32 + 1).to_be_bytes());
        assert_eq!(
            parse_header(&empty),
            Err(WireError::BadLength(MAX_TEXT as u32 + 1))
        );
        empty[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_header(&empty), Err(WireError::BadLength(u32::MAX)));
    }

    #[test]
    fn every_answer_round_trips() {
        for answer in [
            Answer::Stored,
            Answer::AlreadyStored,
            Answer::NotAllowed,
            Answer::TooLong { max: 4096 },
            Answer::NotUtf8,
            Answer::RateLimited {
                retry_after_ms: 1500,
            },
            Answer::InboxFull { max: 10 },
            Answer::Busy,
            Answer::Malformed,
            Answer::StoreFailed,
            Answer::Unknown(200),
        ] {
            let bytes = emit_answer(answer);
            for len in 0..ANSWER_LEN {
                assert_eq!(parse_answer(&bytes[..len]), Ok(None));
            }
            assert_eq!(parse_answer(&bytes), Ok(Some(answer)));
        }
        assert_eq!(parse_answer(&[9, 0]), Err(WireError::BadVersion(9)));
        assert!(Answer::AlreadyStored.is_stored() && !Answer::Busy.is_stored());
    }
}
