//! A SOCKS5 client's side of RFC 1928, for the tests: greeting and CONNECT, each answer checked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A target in RFC 1928's encoding: ATYP, address, port.
pub fn target_ip(address: SocketAddr) -> Vec<u8> {
    let mut bytes = Vec::new();
    match address {
        SocketAddr::V4(v4) => {
            bytes.push(1);
            bytes.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            bytes.push(4);
            bytes.extend_from_slice(&v6.ip().octets());
        }
    }
    bytes.extend_from_slice(&address.port().to_be_bytes());
    bytes
}

/// Connects to the proxy and completes the greeting.
pub fn greet(proxy: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0]);
    stream
}

/// Sends a CONNECT to `target` (RFC 1928's ATYP, address, port) and returns the reply code,
/// checking the reply is complete.
pub fn connect_request(stream: &mut TcpStream, target: &[u8]) -> u8 {
    let mut bytes = vec![5, 1, 0];
    bytes.extend_from_slice(target);
    stream.write_all(&bytes).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!((reply[0], reply[2], reply[3]), (5, 0, 1), "{reply:?}");
    reply[1]
}
