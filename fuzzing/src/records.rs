//! Several inputs in one: records of a kind byte, a big-endian 16-bit length and that many
//! bytes (the last record takes what is left when it is cut short). Targets that feed a state
//! machine a sequence of messages read their input this way.

/// The records in `data`: each record's kind and bytes.
pub fn split(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&kind, rest) = data.split_first()?;
        let [high, low, rest @ ..] = rest else {
            data = &[];
            return Some((kind, rest));
        };
        let len = usize::from(u16::from_be_bytes([*high, *low]));
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((kind, bytes))
    })
}

/// Appends a record of `kind` holding `bytes` (at most 65535 of them) to `out`.
pub fn push(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("a record holds at most 65535 bytes");
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_record_keeps_what_is_left() {
        let mut data = Vec::new();
        push(&mut data, 1, b"abc");
        push(&mut data, 2, b"");
        push(&mut data, 3, b"defg");
        let records: Vec<_> = split(&data).collect();
        assert_eq!(records, [(1, &b"abc"[..]), (2, b""), (3, b"defg")]);
        let cut: Vec<_> = split(&data[..data.len() - 2]).collect();
        assert_eq!(cut[2], (3, &b"de"[..]));
        assert_eq!(split(&[7, 0]).collect::<Vec<_>>(), [(7, &[0u8][..])]);
        assert_eq!(split(&[]).count(), 0);
    }
}
