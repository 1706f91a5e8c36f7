//! The messenger from outside: what a sender writes on a mesh stream to its port and what the
//! recipient answers (`messenger/wire.rs`), the records of its logs (`messenger/records.rs`),
//! and a log file as a start reads it back (`driver/store.rs`).

use skywire_dataplane::api::messenger::{MessageId, MessageRow};
use skywire_dataplane::messenger::records::{self, MAX_RECORD_LEN};
use skywire_dataplane::messenger::wire::{self, Answer, WireError, ANSWER_LEN, HEADER_LEN};

use crate::{key, Seed, NEXT_SECRET, PEER_SECRET};

/// A mesh stream to the messenger's port, read as the recipient reads it: the header from
/// whatever part of it has arrived (a shorter part waits, a wrong version is known from the
/// first byte, a length out of range from the whole header), then the text the header
/// announces; a whole message in UTF-8 is exactly what a sender writes for its id and text.
/// The same bytes read as an answer, as the sender reads them: what reads as one is exactly
/// what a recipient writes for it, apart from the detail of an answer that has none. Accepted
/// when a header or an answer parsed.
pub fn messenger_stream(data: &[u8]) -> bool {
    let header = wire::parse_header(data);
    match header {
        Ok(Some(_)) => {
            for len in 1..HEADER_LEN {
                assert_eq!(wire::parse_header(&data[..len]), Ok(None), "{len} bytes");
            }
        }
        Ok(None) => assert!(data.len() < HEADER_LEN),
        Err(WireError::BadVersion(version)) => {
            assert_eq!(data.first(), Some(&version));
            assert_ne!(version, wire::VERSION);
        }
        Err(WireError::BadLength(len)) => {
            assert!(data.len() >= HEADER_LEN);
            assert!(len == 0 || len as usize > wire::MAX_TEXT);
        }
    }
    if let Ok(Some(header)) = header {
        assert!((1..=wire::MAX_TEXT).contains(&header.text_len));
        let text = data[HEADER_LEN..].get(..header.text_len);
        if let Some(Ok(text)) = text.map(std::str::from_utf8) {
            let message = wire::emit_message(header.id, text);
            assert_eq!(message, data[..HEADER_LEN + header.text_len]);
        }
    }

    let answer = wire::parse_answer(data);
    if let Ok(Some(answer)) = answer {
        let again = wire::emit_answer(answer);
        assert_eq!(again[..2], data[..2]);
        assert_eq!(wire::parse_answer(&again), Ok(Some(answer)));
        let _ = answer.to_string();
    } else if answer == Ok(None) {
        assert!(data.len() < ANSWER_LEN);
    }
    matches!(header, Ok(Some(_))) || matches!(answer, Ok(Some(_)))
}

/// A log's records, with each record's CRC made right before they are read, so that changes
/// to a record's fields get past its check: every record up to the first that does not read
/// encodes to exactly its bytes, and the log cut after them reads the same. Accepted when a
/// record was read.
pub fn messenger_records(data: &[u8]) -> bool {
    let mut data = data.to_vec();
    reseal(&mut data);
    let parsed = records::parse(&data);
    assert!(parsed.valid_len <= data.len());
    let encoded: Vec<u8> = parsed.records.iter().flat_map(records::encode).collect();
    assert_eq!(encoded, data[..parsed.valid_len]);
    assert_eq!(records::parse(&data[..parsed.valid_len]), parsed);
    !parsed.records.is_empty()
}

/// A log file as a start reads it back: its records are read until one does not, and what
/// follows them is cut off when it is at most one record's worth (a torn write), else the log
/// is damaged and not used. After the cut, the file reads back the same records with nothing
/// to cut. Accepted when a record was read from a log that is not damaged.
pub fn messenger_store_file(data: &[u8]) -> bool {
    let whole = records::parse(data);
    match records::read_log(data) {
        Ok(parsed) => {
            assert_eq!(parsed, whole);
            assert!(data.len() - parsed.valid_len <= MAX_RECORD_LEN);
            let cut = &data[..parsed.valid_len];
            let encoded: Vec<u8> = parsed.records.iter().flat_map(records::encode).collect();
            assert_eq!(encoded, cut);
            let again = records::read_log(cut).expect("a log cut after its records");
            assert_eq!(again.records, parsed.records);
            assert_eq!(again.valid_len, cut.len());
            !parsed.records.is_empty()
        }
        Err(damaged) => {
            assert_eq!(damaged.from, whole.valid_len);
            assert_eq!(damaged.from + damaged.len, data.len());
            assert!(damaged.len > MAX_RECORD_LEN);
            false
        }
    }
}

/// Writes the CRC of each record's body over the one it carries, for as long as the records'
/// lengths lead from one whole record to the next.
fn reseal(data: &mut [u8]) {
    let mut offset = 0;
    while let Some(prefix) = data.get(offset..offset + 8) {
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let body_start = offset + 8;
        let Some(body) = data.get(body_start..body_start.saturating_add(len)) else {
            return;
        };
        let crc = records::crc32(body).to_be_bytes();
        data[offset + 4..offset + 8].copy_from_slice(&crc);
        offset = body_start + len;
    }
}

/// Messages as logs hold them.
fn sample_rows() -> Vec<MessageRow> {
    vec![
        MessageRow {
            id: MessageId([1; 16]),
            peer: key(PEER_SECRET),
            at_ms: 1_700_000_000_000,
            text: "hello".to_owned(),
        },
        MessageRow {
            id: MessageId([2; 16]),
            peer: key(NEXT_SECRET),
            at_ms: 1_700_000_000_500,
            text: "grüße, with\nlines".to_owned(),
        },
        MessageRow {
            id: MessageId([3; 16]),
            peer: key(PEER_SECRET),
            at_ms: u64::MAX,
            text: "x".repeat(300),
        },
    ]
}

/// Messages as senders write them, and each kind of answer as recipients write it.
pub fn messenger_stream_seeds() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = sample_rows()
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let bytes = wire::emit_message(row.id, &row.text);
            Seed::new(format!("message_{index}.bin"), bytes)
        })
        .collect();
    let answers = [
        ("stored", Answer::Stored),
        ("too_long", Answer::TooLong { max: 4096 }),
        (
            "rate_limited",
            Answer::RateLimited {
                retry_after_ms: 1500,
            },
        ),
        ("inbox_full", Answer::InboxFull { max: 10_000 }),
        ("busy", Answer::Busy),
    ];
    for (name, answer) in answers {
        let bytes = wire::emit_answer(answer);
        seeds.push(Seed::new(format!("answer_{name}.bin"), bytes));
    }
    seeds
}

/// One record, and a log of several.
pub fn messenger_records_seeds() -> Vec<Seed> {
    let rows = sample_rows();
    vec![
        Seed::new("one.log", records::encode(&rows[0])),
        Seed::new(
            "several.log",
            rows.iter().flat_map(records::encode).collect::<Vec<_>>(),
        ),
    ]
}

/// A log of several records, and one whose last record a crash cut short.
pub fn messenger_store_file_seeds() -> Vec<Seed> {
    let rows = sample_rows();
    let whole: Vec<u8> = rows.iter().flat_map(records::encode).collect();
    let mut torn: Vec<u8> = rows[..2].iter().flat_map(records::encode).collect();
    let last = records::encode(&rows[2]);
    torn.extend_from_slice(&last[..last.len() / 2]);
    vec![
        Seed::new("whole.log", whole),
        Seed::new("torn_tail.log", torn),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resealing_lets_a_changed_record_be_read() {
        let mut log = records::encode(&sample_rows()[0]);
        let last = log.len() - 1;
        log[last] = b'!';
        assert!(
            records::parse(&log).records.is_empty(),
            "its CRC no longer holds"
        );
        assert!(messenger_records(&log));
    }

    #[test]
    fn a_damaged_store_file_is_refused() {
        let mut log = records::encode(&sample_rows()[0]);
        log.resize(log.len() + MAX_RECORD_LEN + 1, 0xff);
        assert!(!messenger_store_file(&log));
    }
}
