//! A SOCKS5 client's side of RFC 1928, for the tests: the greeting, a request and its reply,
//! each answer checked. Tests of every crate include this file, so it uses only std.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The CONNECT command.
pub const CONNECT: u8 = 1;

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

/// A target named by a domain name, resolved at the exit.
pub fn target_name(name: &str, port: u16) -> Vec<u8> {
    let mut bytes = vec![3, u8::try_from(name.len()).unwrap()];
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&port.to_be_bytes());
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

/// Sends a request with `command` for `target` (RFC 1928's ATYP, address, port) and returns
/// the reply code, checking the reply is complete.
pub fn request(stream: &mut TcpStream, command: u8, target: &[u8]) -> u8 {
    let mut bytes = vec![5, command, 0];
    bytes.extend_from_slice(target);
    stream.write_all(&bytes).unwrap();
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!((reply[0], reply[2], reply[3]), (5, 0, 1), "{reply:?}");
    reply[1]
}

/// Sends a CONNECT to `target` and returns the reply code.
pub fn connect_request(stream: &mut TcpStream, target: &[u8]) -> u8 {
    request(stream, CONNECT, target)
}

/// A connection through `proxy` to `target`, which must succeed.
pub fn socks_connect(proxy: SocketAddr, target: &[u8]) -> TcpStream {
    let mut stream = greet(proxy);
    assert_eq!(connect_request(&mut stream, target), 0, "CONNECT failed");
    stream
}

/// Whether the proxy closed the connection (end of stream or reset) within `limit`.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() == io::ErrorKind::ConnectionReset,
    }
}
