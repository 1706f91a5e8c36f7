//! Who holds the far end of a loopback TCP connection: the client socket's inode from
//! `/proc/self/net/tcp` (or `tcp6`), then whether an app's process or one of its descendants has
//! `socket:[inode]` under `/proc/PID/fd`. Linux only, no privileges needed for our own children.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most processes looked at when collecting an app's descendants.
const MAX_PROCESSES: usize = 4096;

/// Whether the client end of the connection from `client` to `server` (as the server sees its
/// accepted socket: `client` is its peer, `server` its local address) belongs to process `root`
/// or a descendant of it.
pub fn connection_owned_by(root: u32, client: SocketAddr, server: SocketAddr) -> io::Result<bool> {
    let Some(inode) = client_socket_inode(client, server)? else {
        return Ok(false);
    };
    Ok(family(root).into_iter().any(|pid| holds_socket(pid, inode)))
}

/// The inode of the socket whose local address is `client` and remote address `server`.
pub fn client_socket_inode(client: SocketAddr, server: SocketAddr) -> io::Result<Option<u64>> {
    // Through /proc/self: a /proc mounted with subset=pid (the unit's ProcSubset=pid) has no
    // /proc/net, but each process's own net folder is still there.
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        match fs::read_to_string(table) {
            Ok(text) => {
                if let Some(inode) = find_inode(&text, client, server) {
                    return Ok(Some(inode));
                }
            }
            // A kernel without IPv6 has no tcp6 table.
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

/// Finds, in the text of a `/proc/net/tcp{,6}` table, the inode of the socket from `local` to
/// `remote` (IPv4-mapped IPv6 addresses match their IPv4 form).
pub fn find_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (local, remote) = (normalise(local), normalise(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let entry_local = parse_endpoint(fields.get(1)?)?;
        let entry_remote = parse_endpoint(fields.get(2)?)?;
        let inode: u64 = fields.get(9)?.parse().ok()?;
        (entry_local == local && entry_remote == remote && inode != 0).then_some(inode)
    })
}

fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// `0100007F:1F3F`: the address as the kernel's native-endian 32-bit words in hex, the port in hex.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = address.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match address.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(normalise(SocketAddr::new(ip, port)))
}

/// `root` and its descendants, from the parent ids in `/proc/*/stat`.
pub fn family(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten().take(MAX_PROCESSES) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) = parent_of(pid) {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    let mut found = vec![root];
    let mut next = 0;
    while let Some(&pid) = found.get(next) {
        next += 1;
        if let Some(kids) = children.get(&pid) {
            for &kid in kids {
                if !found.contains(&kid) {
                    found.push(kid);
                }
            }
        }
    }
    found
}

/// The parent process id, from `/proc/PID/stat` (the field after the state, after the
/// command name in parentheses, which may itself hold spaces and parentheses).
pub fn parent_of(pid: u32) -> Option<u32> {
    parse_parent(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent process id in the text of a `/proc/PID/stat`.
pub fn parse_parent(stat: &str) -> Option<u32> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Whether process `pid` has the socket `inode` open.
pub fn holds_socket(pid: u32, inode: u64) -> bool {
    let wanted = format!("socket:[{inode}]");
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    entries.flatten().any(|entry| {
        fs::read_link(entry.path())
            .map(|target| target.as_os_str() == wanted.as_str())
            .unwrap_or(false)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F3F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A2B4 0100007F:1F3F 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn finds_the_client_end() {
        if cfg!(target_endian = "big") {
            return;
        }
        let client: SocketAddr = "127.0.0.1:41652".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:7999".parse().unwrap();
        assert_eq!(find_inode(TABLE, client, server), Some(2222));
        assert_eq!(find_inode(TABLE, server, client), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:41652".parse().unwrap();
        assert_eq!(find_inode(TABLE, mapped, server), Some(2222));
        assert_eq!(find_inode("garbage\n1: x y z", client, server), None);
    }

    #[test]
    fn ipv6_endpoints() {
        if cfg!(target_endian = "big") {
            return;
        }
        let parsed = parse_endpoint("00000000000000000000000001000000:0050").unwrap();
        assert_eq!(parsed, "[::1]:80".parse().unwrap());
        let mapped = parse_endpoint("0000000000000000FFFF00000100007F:0050").unwrap();
        assert_eq!(mapped, "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_endpoint("0100007F"), None);
        assert_eq!(parse_endpoint("01007F:0050"), None);
    }

    #[test]
    fn parent_ids_follow_the_command_name() {
        assert_eq!(parse_parent("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parse_parent("42 (x) S"), None);
        assert_eq!(parse_parent("42 x S 7"), None);
    }

    #[test]
    fn this_process_owns_its_own_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let server = accepted.local_addr().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(connection_owned_by(std::process::id(), peer, server).unwrap());
        // The parent of this process does not hold it.
        let parent = parent_of(std::process::id()).unwrap();
        assert!(family(parent).contains(&std::process::id()));
        let inode = client_socket_inode(peer, server).unwrap().unwrap();
        assert!(!holds_socket(parent, inode));
    }
}
