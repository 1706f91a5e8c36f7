//! The files the daemon reads at start-up: the config file (as `skywired --config` and
//! `check-config` take it), the key file, and the VPN server's lease file and the VPN client's
//! undo file in the state folder. Each can be damaged or written by hand; none may panic the
//! daemon.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use skywire::config::parse_key_file;
use skywire::Config;
use skywire_dataplane::fuzzing::{self, SUPPRESS_PRIORITY, TABLE, TUNNEL_PRIORITY};
use skywire_dataplane::vpn::pool::{Lease, Pool, LEASE_FILE};
use skywire_dataplane::vpn::{Prefix, TunName, DEFAULT_CLIENT_TUN, DEFAULT_POOL4, DEFAULT_POOL6};
use skywire_dataplane::{NodeKey, SecretKey};

use crate::Seed;

/// Where the config file is taken to be: relative paths in it resolve beside it.
const CONFIG_FILE: &str = "/etc/skywire/config.yaml";

/// The config file: YAML text in, a checked configuration or an error that names the problem
/// out. Accepted when the configuration is valid.
pub fn config_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    match Config::from_yaml(text, Path::new(CONFIG_FILE)) {
        Ok(config) => {
            let own = SecretKey::from([1; 32]).public();
            if let Err(error) = config.check_against(&own) {
                assert!(!error.to_string().is_empty());
            }
            let _ = config.vpn_options();
            true
        }
        Err(error) => {
            assert!(!error.to_string().is_empty());
            false
        }
    }
}

/// The key file, and any key in WireGuard's base64 (a neighbour's in the config, a node's in a
/// command): what parses writes back as the same key. Accepted when it holds a private key.
pub fn key_file(data: &[u8]) -> bool {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = text.parse::<NodeKey>() {
            assert_eq!(key.to_string().parse::<NodeKey>(), Ok(key));
        }
    }
    let Some(secret) = parse_key_file(data) else {
        return false;
    };
    let written = format!("{}\n", secret.to_base64());
    let again = parse_key_file(written.as_bytes()).expect("a written key reads back");
    assert_eq!(again.public(), secret.public());
    true
}

/// The VPN server's lease file, read with the default pools: every lease it keeps lies in the
/// pools, no address is leased twice nor is the server's, what the server writes back reads
/// back the same, and a new client gets addresses of its own. Accepted when it kept a lease.
pub fn vpn_lease_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let (pool4, pool6) = default_pools();
    let new_pool = || Pool::new(Some(pool4), Some(pool6)).expect("the default pools");
    let file = Path::new(LEASE_FILE);
    let mut pool = new_pool();
    if pool.load(file, text).is_err() {
        return false;
    }
    let leases: Vec<(NodeKey, Lease)> = pool.leases().map(|(key, lease)| (*key, *lease)).collect();
    let server = pool.server();
    let mut addresses = HashSet::new();
    for (_, lease) in &leases {
        let ipv4 = lease.ipv4.expect("both pools lease");
        let ipv6 = lease.ipv6.expect("both pools lease");
        assert!(pool4.contains(IpAddr::V4(ipv4)) && pool6.contains(IpAddr::V6(ipv6)));
        assert!(server.ipv4 != Some(ipv4) && server.ipv6 != Some(ipv6));
        assert!(addresses.insert(IpAddr::V4(ipv4)) && addresses.insert(IpAddr::V6(ipv6)));
    }
    let mut again = new_pool();
    again
        .load(file, &pool.to_text())
        .expect("a lease file the server wrote reads back");
    assert!(again.leases().eq(pool.leases()));
    let newcomer = SecretKey::from([0xee; 32]).public();
    if pool.lease_of(&newcomer).is_none() {
        let (lease, new) = pool.lease(newcomer).expect("the default pools have room");
        assert!(new);
        let fresh = [lease.ipv4.map(IpAddr::V4), lease.ipv6.map(IpAddr::V6)];
        assert!(fresh.into_iter().flatten().all(|a| !addresses.contains(&a)));
    }
    !leases.is_empty()
}

/// The VPN client's undo file, read by a start whose client device is `skyvpn0`: what it
/// removes is the client's own (routes through its device in its table, its two rules), what
/// it keeps of the file reads back as the same, and without a client configured it removes no
/// route. Accepted when it removes something.
pub fn vpn_undo_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let device = TunName::from_str(DEFAULT_CLIENT_TUN).expect("a device name");
    let Ok(reading) = fuzzing::vpn_undo_file(text, Some(&device)) else {
        return false;
    };
    let table = TABLE.to_string();
    for args in &reading.removals {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["-4" | "-6", "route", "del", _, "dev", dev, "table", t] => {
                assert!(*dev == DEFAULT_CLIENT_TUN && *t == table, "{words:?}");
            }
            ["-4" | "-6", "rule", "del", "priority", priority, ..] => {
                let own = [SUPPRESS_PRIORITY.to_string(), TUNNEL_PRIORITY.to_string()];
                assert!(own.contains(&priority.to_string()), "{words:?}");
            }
            _ => panic!("not one of the client's own: {words:?}"),
        }
    }
    let again = fuzzing::vpn_undo_file(&reading.own_text, Some(&device))
        .expect("an undo file the client wrote reads back");
    assert_eq!(again.removals, reading.removals);
    assert!(again.left_alone.is_empty());
    let without_client = fuzzing::vpn_undo_file(text, None).expect("it read once");
    assert!(without_client
        .removals
        .iter()
        .all(|args| args.get(1).map(String::as_str) == Some("rule")));
    !reading.removals.is_empty()
}

fn default_pools() -> (Prefix, Prefix) {
    (
        DEFAULT_POOL4.parse().expect("the default pool"),
        DEFAULT_POOL6.parse().expect("the default pool"),
    )
}

/// The configs in the repository (no encoder exists: people write them), and one with every
/// section.
pub fn config_file_seeds() -> Vec<Seed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut seeds: Vec<Seed> = [
        ("config.yaml", "config.yaml"),
        ("systemd.yaml", "systemd/config.yaml"),
        ("second-node.yaml", "examples/second-node.yaml"),
    ]
    .into_iter()
    .map(|(name, path)| {
        let bytes = std::fs::read(root.join(path)).expect("a config in the repository");
        Seed::new(name, bytes)
    })
    .collect();
    let key = |byte: u8| SecretKey::from([byte; 32]).public();
    let every_section = format!(
        "node: {{key_file: node.key, state_dir: state}}
listen: \"[::]:7777\"
control: {{socket: visctl.sock, signal_port: 0}}
log_level: debug
neighbours:
  - {{key: \"{a}\", endpoint: \"192.0.2.1:7777\", keepalive: 25}}
  - {{key: \"{b}\"}}
liveness: {{probe_interval_ms: 2000, dead_after_ms: 10000}}
vpn:
  server: {{enabled: true, pool4: 10.77.0.0/24, pool6: \"fd77:736b::/64\", allow: [\"{a}\"]}}
  client: {{tun: skyvpn0, server: \"{a}\", path: [\"{b}\"], routes: [\"0.0.0.0/0\"]}}
socks:
  server: {{allow: [\"{b}\"]}}
  client: {{exit: \"{a}\", path: [\"{b}\"]}}
apps:
  app:
    path: /bin/true
    daemon: true
    default_args: [a, b]
",
        a = key(2),
        b = key(3),
    );
    seeds.push(Seed::new("every_section.yaml", every_section));
    seeds
}

/// A key file as `skywired keygen` and the first start write it.
pub fn key_file_seeds() -> Vec<Seed> {
    let secret = SecretKey::from([7; 32]);
    vec![Seed::new("node.key", format!("{}\n", secret.to_base64()))]
}

/// A lease file as a VPN server writes it, with two leases.
pub fn vpn_lease_file_seeds() -> Vec<Seed> {
    let (pool4, pool6) = default_pools();
    let mut pool = Pool::new(Some(pool4), Some(pool6)).expect("the default pools");
    for byte in [2, 3] {
        pool.lease(SecretKey::from([byte; 32]).public())
            .expect("free addresses");
    }
    vec![Seed::new(LEASE_FILE, pool.to_text())]
}

/// Undo files as VPN clients write them: a full tunnel over both families, and some routes of
/// one family.
pub fn vpn_undo_file_seeds() -> Vec<Seed> {
    let device = TunName::from_str(DEFAULT_CLIENT_TUN).expect("a device name");
    let prefixes = |list: &[&str]| -> Vec<Prefix> {
        list.iter()
            .map(|prefix| prefix.parse().expect("a prefix"))
            .collect()
    };
    let full = prefixes(&["0.0.0.0/0", "::/0"]);
    let some = prefixes(&["10.20.0.0/16", "192.0.2.0/24", "fd99::/64"]);
    vec![
        Seed::new(
            "full_tunnel.yaml",
            fuzzing::vpn_undo_file_text(&device, &full, true, true).0,
        ),
        Seed::new(
            "some_routes.yaml",
            fuzzing::vpn_undo_file_text(&device, &some, true, false).0,
        ),
    ]
}
