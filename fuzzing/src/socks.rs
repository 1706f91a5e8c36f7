//! SOCKS5 from outside: what a local client sends the entry's port (the method greeting, then
//! the CONNECT request of RFC 1928), and what the entry and the exit say at the start of a mesh
//! stream (the target one way, a status the other).

use skywire_dataplane::socks::mesh;
use skywire_dataplane::socks::wire::{self, Target};

use crate::Seed;

/// The entry's local port: a greeting, then a request in the bytes after it, as the entry
/// parses them from whatever has arrived. What parses re-emits to the same bytes, and no
/// shorter prefix of it is refused or taken for something else. Accepted when a request parsed.
pub fn socks_local(data: &[u8]) -> bool {
    let Some((_, used)) = parsed_and_prefixes_wait(data, wire::parse_greeting) else {
        return false;
    };
    assert!(used <= wire::MAX_GREETING_LEN);
    let request = &data[used..];
    let Some((target, used)) = parsed_and_prefixes_wait(request, wire::parse_request) else {
        return false;
    };
    assert!(used <= wire::MAX_REQUEST_LEN);
    let mut again = vec![wire::VERSION, 1, 0];
    target.emit(&mut again);
    assert_eq!(again, request[..used]);
    true
}

/// The start of a mesh stream: the exit parses the entry's request, the entry the exit's
/// status, with the same checks as [`socks_local`]. Accepted when a request parsed.
pub fn socks_mesh(data: &[u8]) -> bool {
    let _ = mesh::parse_status(data);
    let Some((target, used)) = parsed_and_prefixes_wait(data, mesh::parse_request) else {
        return false;
    };
    assert!(used <= mesh::MAX_MESH_REQUEST_LEN);
    assert_eq!(mesh::emit_request(&target), data[..used]);
    true
}

/// What `parse` makes of `data` when it is a whole message; every shorter prefix of that
/// message must then ask for more bytes.
fn parsed_and_prefixes_wait<T, E: std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> Option<(T, usize)> {
    let (parsed, used) = parse(data).ok()??;
    for len in 0..used {
        assert!(
            matches!(parse(&data[..len]), Ok(None)),
            "a prefix of {len} bytes of a valid message did not wait for more: {:?}",
            parse(&data[..len]).err()
        );
    }
    Some((parsed, used))
}

fn targets() -> Vec<(&'static str, Target)> {
    vec![
        (
            "ipv4",
            Target::Ip("192.0.2.1:80".parse().expect("an address")),
        ),
        (
            "ipv6",
            Target::Ip("[2001:db8::1]:443".parse().expect("an address")),
        ),
        ("domain", Target::Domain("example.com".into(), 8080)),
    ]
}

/// A greeting offering "no authentication" (no encoder exists: clients write it) followed by
/// a CONNECT to each kind of target.
pub fn socks_local_seeds() -> Vec<Seed> {
    targets()
        .into_iter()
        .map(|(name, target)| {
            let mut bytes = vec![wire::VERSION, 1, wire::METHOD_NO_AUTH];
            bytes.extend_from_slice(&[wire::VERSION, 1, 0]);
            target.emit(&mut bytes);
            Seed::new(format!("{name}.bin"), bytes)
        })
        .collect()
}

/// The entry's request for each kind of target.
pub fn socks_mesh_seeds() -> Vec<Seed> {
    targets()
        .into_iter()
        .map(|(name, target)| Seed::new(format!("{name}.bin"), mesh::emit_request(&target)))
        .collect()
}
