//! Control messages from outside: parsing never panics, and every message it accepts re-emits
//! to exactly the bytes it came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skywire_dataplane::wire::ControlMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ControlMessage::parse(data) else {
        return;
    };
    assert_eq!(message.buffer_len(), data.len());
    let mut again = vec![0u8; message.buffer_len()];
    assert_eq!(message.emit(&mut again), Ok(data.len()));
    assert_eq!(again, data);
});
