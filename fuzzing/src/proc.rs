//! What the control plane reads in `/proc`: a process's `stat` (CPU time, parent), its
//! `status` (memory, threads), and the TCP socket tables that tell who holds a signal client's
//! connection. A launched app names its own command, which appears in `stat`.

use std::net::{Ipv6Addr, SocketAddr};

use skywire_control::signal::owner::{find_inode, parse_parent};
use skywire_control::supervisor::usage::{parse_cpu_ticks, status_field};

use crate::Seed;

const STAT: u8 = 0;
const STATUS: u8 = 1;
const TCP_TABLE: u8 = 2;
/// A TCP table's input starts with the connection to look up: two IPv6 socket addresses
/// (address, then port big-endian), IPv4 ones mapped.
const CONNECTION_LEN: usize = 2 * 18;

/// The input's first byte says which file the rest is (modulo 3: `stat`, `status`, a TCP
/// table). Accepted when the parser found what it looks for.
pub fn proc_files(data: &[u8]) -> bool {
    let Some((&kind, rest)) = data.split_first() else {
        return false;
    };
    match kind % 3 {
        STAT => {
            let Ok(stat) = std::str::from_utf8(rest) else {
                return false;
            };
            let ticks = parse_cpu_ticks(stat);
            parse_parent(stat).is_some() && ticks.is_some()
        }
        STATUS => {
            let Ok(status) = std::str::from_utf8(rest) else {
                return false;
            };
            let memory = status_field(status, "VmRSS:");
            status_field(status, "Threads:").is_some() && memory.is_some()
        }
        _ => {
            let Some((connection, table)) = rest.split_at_checked(CONNECTION_LEN) else {
                return false;
            };
            let Ok(table) = std::str::from_utf8(table) else {
                return false;
            };
            let (local, remote) = connection.split_at(CONNECTION_LEN / 2);
            find_inode(table, socket_address(local), socket_address(remote)).is_some()
        }
    }
}

fn socket_address(bytes: &[u8]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[..16]);
    let port = u16::from_be_bytes([bytes[16], bytes[17]]);
    SocketAddr::new(Ipv6Addr::from(octets).into(), port)
}

fn connection_bytes(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CONNECTION_LEN);
    for address in [local, remote] {
        let ip = match address.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        bytes.extend_from_slice(&ip.octets());
        bytes.extend_from_slice(&address.port().to_be_bytes());
    }
    bytes
}

/// This process's own `stat` and `status`, and its TCP tables while it holds a loopback
/// connection over IPv4 and one over IPv6 (no encoder exists: the kernel writes these).
pub fn proc_files_seeds() -> Vec<Seed> {
    let read = |path: &str| std::fs::read(path).expect("this process's /proc");
    let with_kind = |kind: u8, bytes: Vec<u8>| [vec![kind], bytes].concat();
    let mut seeds = vec![
        Seed::new("stat.txt", with_kind(STAT, read("/proc/self/stat"))),
        Seed::new("status.txt", with_kind(STATUS, read("/proc/self/status"))),
    ];
    for (name, listen, table) in [
        ("tcp.txt", "127.0.0.1:0", "/proc/self/net/tcp"),
        ("tcp6.txt", "[::1]:0", "/proc/self/net/tcp6"),
    ] {
        let listener = std::net::TcpListener::bind(listen).expect("a loopback listener");
        let server = listener.local_addr().expect("its address");
        let client = std::net::TcpStream::connect(server).expect("a loopback connection");
        let (_accepted, peer) = listener.accept().expect("the connection");
        let mut bytes = with_kind(TCP_TABLE, connection_bytes(peer, server));
        // The header and the three sockets of this connection, of however many there are.
        let port = format!(":{:04X} ", server.port());
        let text = String::from_utf8(read(table)).expect("a TCP table is text");
        for (index, line) in text.lines().enumerate() {
            if index == 0 || line.contains(&port) {
                bytes.extend_from_slice(line.as_bytes());
                bytes.push(b'\n');
            }
        }
        seeds.push(Seed::new(name, bytes));
        drop(client);
    }
    seeds
}
