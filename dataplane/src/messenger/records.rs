//! The messenger's two logs (inbox and outbox) as bytes: an append-only sequence of records,
//! each with its length and a CRC-32 of its body, so that a record cut short by a crash (the
//! torn tail of a write that never completed, and so was never acknowledged) is found and cut
//! off, and every record before it is read back whole.
//!
//! ```text
//! record  body length 4 (big endian) | CRC-32 of the body 4 (big endian) | body
//! body    version 1 | id 16 | peer 32 | time 8 (ms since the Unix epoch, big endian) | text
//! ```
//!
//! [`parse`] is a pure function of the file's bytes; the driver reads and writes the files.

use crate::api::messenger::{MessageId, MessageRow};
use crate::identity::NodeKey;

/// The records' format version.
const VERSION: u8 = 1;
/// The length and CRC before each body.
const PREFIX_LEN: usize = 8;
/// A body without its text.
const FIXED_BODY_LEN: usize = 1 + 16 + 32 + 8;
/// The longest body: a record announcing more is not one this version wrote.
const MAX_BODY_LEN: usize = FIXED_BODY_LEN + super::wire::MAX_TEXT;
/// The longest record: a torn tail is shorter.
pub const MAX_RECORD_LEN: usize = PREFIX_LEN + MAX_BODY_LEN;

/// One stored message.
pub type Record = MessageRow;

/// What a log's bytes hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The whole records, in order.
    pub records: Vec<Record>,
    /// How many bytes they take: everything after is a torn tail, to be cut off.
    pub valid_len: usize,
}

/// The record of `message`, as appended to a log.
pub fn encode(message: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(FIXED_BODY_LEN + message.text.len());
    body.push(VERSION);
    body.extend_from_slice(&message.id.0);
    body.extend_from_slice(message.peer.as_bytes());
    body.extend_from_slice(&message.at_ms.to_be_bytes());
    body.extend_from_slice(message.text.as_bytes());
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut record = Vec::with_capacity(PREFIX_LEN + body.len());
    record.extend_from_slice(&len.to_be_bytes());
    record.extend_from_slice(&crc32(&body).to_be_bytes());
    record.extend_from_slice(&body);
    record
}

/// Reads a log: every whole record up to the first that is cut short or does not check out.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut records = Vec::new();
    let mut offset = 0;
    while let Some((record, len)) = bytes.get(offset..).and_then(parse_record) {
        records.push(record);
        offset += len;
    }
    Parsed {
        records,
        valid_len: offset,
    }
}

/// A log whose bytes after its whole records are more than a torn write leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {len} bytes from byte {from} on do not read as messages: the file is damaged")]
pub struct Damaged {
    /// Where the bytes that do not read start.
    pub from: usize,
    /// How many there are.
    pub len: usize,
}

/// What a start reads back from a log: its whole records, after which at most one record's
/// worth of bytes (a torn tail, to be cut off) may follow; more is damage, and none of the log
/// is used.
pub fn read_log(bytes: &[u8]) -> Result<Parsed, Damaged> {
    let parsed = parse(bytes);
    let len = bytes.len() - parsed.valid_len;
    if len > MAX_RECORD_LEN {
        return Err(Damaged {
            from: parsed.valid_len,
            len,
        });
    }
    Ok(parsed)
}

/// The record at the start of `bytes` and its length, if a whole and sound one is there.
fn parse_record(bytes: &[u8]) -> Option<(Record, usize)> {
    let len = usize::try_from(u32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?)).ok()?;
    if !(FIXED_BODY_LEN..=MAX_BODY_LEN).contains(&len) {
        return None;
    }
    let crc = u32::from_be_bytes(bytes.get(4..PREFIX_LEN)?.try_into().ok()?);
    let body = bytes.get(PREFIX_LEN..PREFIX_LEN + len)?;
    if crc32(body) != crc || body.first() != Some(&VERSION) {
        return None;
    }
    let id = MessageId(body.get(1..17)?.try_into().ok()?);
    let peer: [u8; 32] = body.get(17..49)?.try_into().ok()?;
    let at_ms = u64::from_be_bytes(body.get(49..FIXED_BODY_LEN)?.try_into().ok()?);
    let text = std::str::from_utf8(body.get(FIXED_BODY_LEN..)?).ok()?;
    let record = Record {
        id,
        peer: NodeKey::from(peer),
        at_ms,
        text: text.to_owned(),
    };
    Some((record, PREFIX_LEN + len))
}

/// CRC-32 (IEEE 802.3, as zlib and Ethernet compute it).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut index = 0;
        while index < 256 {
            let mut value = index as u32;
            let mut bit = 0;
            while bit < 8 {
                value = if value & 1 == 1 {
                    0xEDB8_8320 ^ (value >> 1)
                } else {
                    value >> 1
                };
                bit += 1;
            }
            table[index] = value;
            index += 1;
        }
        table
    };
    let mut crc = !0u32;
    for byte in bytes {
        crc = TABLE[usize::from((crc as u8) ^ byte)] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn record(seed: u8, text: &str) -> Record {
        Record {
            id: MessageId([seed; 16]),
            peer: SecretKey::from([seed; 32]).public(),
            at_ms: 1_700_000_000_000 + u64::from(seed),
            text: text.to_owned(),
        }
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_read_back_in_order() {
        let records = [record(1, "hello"), record(2, "wörld"), record(3, "x")];
        let bytes: Vec<u8> = records.iter().flat_map(encode).collect();
        let parsed = parse(&bytes);
        assert_eq!(parsed.records, records);
        assert_eq!(parsed.valid_len, bytes.len());
        assert_eq!(parse(&[]).records, []);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_records_before_it_stay() {
        let whole: Vec<u8> = [record(1, "first"), record(2, "second")]
            .iter()
            .flat_map(encode)
            .collect();
        let last = encode(&record(3, "the write a crash cut short"));
        // Every prefix of the last record, as a crash during its write could leave it.
        for cut in 0..last.len() {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&last[..cut]);
            let parsed = parse(&bytes);
            assert_eq!(parsed.records.len(), 2, "cut at {cut}");
            assert_eq!(parsed.valid_len, whole.len(), "cut at {cut}");
        }
        // A whole record of garbage (a block the file system never wrote) does not pass either.
        let mut bytes = whole.clone();
        let mut garbage = last.clone();
        let at = garbage.len() - 3;
        garbage[at] ^= 0x20;
        bytes.extend_from_slice(&garbage);
        assert_eq!(parse(&bytes).valid_len, whole.len());
        bytes.truncate(whole.len());
        bytes.extend_from_slice(&[0; 64]);
        assert_eq!(parse(&bytes).valid_len, whole.len());
    }

    #[test]
    fn more_than_a_record_of_unreadable_bytes_is_damage() {
        let whole = encode(&record(1, "kept"));
        let mut bytes = whole.clone();
        bytes.resize(whole.len() + MAX_RECORD_LEN, 0);
        assert_eq!(read_log(&bytes).unwrap().valid_len, whole.len());
        bytes.push(0);
        assert_eq!(
            read_log(&bytes),
            Err(Damaged {
                from: whole.len(),
                len: MAX_RECORD_LEN + 1
            })
        );
    }

    #[test]
    fn lengths_out_of_range_are_not_records() {
        let mut bytes = encode(&record(1, "hi"));
        bytes[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse(&bytes).valid_len, 0);
        bytes[0..4].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(parse(&bytes).valid_len, 0);
    }
}
