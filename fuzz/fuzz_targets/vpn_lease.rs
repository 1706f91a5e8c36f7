//! VPN lease messages from outside: parsing never panics, and every message it accepts
//! re-emits to exactly the bytes it took.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skywire_dataplane::vpn::lease::Message;

fuzz_target!(|data: &[u8]| {
    let Ok((message, used)) = Message::parse(data) else {
        return;
    };
    assert_eq!(message.to_bytes(), data[..used]);
});
