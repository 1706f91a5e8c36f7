//! App socket requests and advert service entries from outside: reading them never panics; a
//! request takes at most the bytes up to its new line; a service entry that reads as one
//! encodes to exactly the bytes it came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skywire_dataplane::app_socket::protocol::{parse_request, MAX_LINE};
use skywire_dataplane::wire::ServiceEntry;

fuzz_target!(|data: &[u8]| {
    if let Some((request, used)) = parse_request(data) {
        assert!(used <= data.len());
        assert!(used == data.len() || data[used - 1] == b'\n');
        if let Err(refusal) = request {
            let line = refusal.line();
            assert_eq!(line.iter().filter(|byte| **byte == b'\n').count(), 1);
        }
    } else {
        assert!(data.len() < MAX_LINE && !data.contains(&b'\n'));
    }
    if let Some(entry) = ServiceEntry::parse(data) {
        assert_eq!(entry.to_bytes(), data);
    }
});
