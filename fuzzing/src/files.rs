//! The files the daemon reads at start-up: the config file (as `skywired --config` and
//! `check-config` take it), the key file, and the VPN server's lease file and the VPN client's
//! undo file in the state folder. Each can be damaged or written by hand; none may panic the
//! daemon.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use skywire::config::parse_key_file;
use skywire::Config;
use skywire_dataplane::vpn::pool::Pool;
use skywire_dataplane::vpn::{Prefix, DEFAULT_POOL4, DEFAULT_POOL6};
use skywire_dataplane::{fuzzing, NodeKey, SecretKey};

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
/// pools, and no address is leased twice. Accepted when it kept a lease.
pub fn vpn_lease_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let (pool4, pool6) = default_pools();
    let Ok(leases) = fuzzing::vpn_lease_file(Some(pool4), Some(pool6), text) else {
        return false;
    };
    let mut addresses = HashSet::new();
    for (_, lease) in &leases {
        let ipv4 = lease.ipv4.expect("both pools lease");
        let ipv6 = lease.ipv6.expect("both pools lease");
        assert!(pool4.contains(IpAddr::V4(ipv4)) && pool6.contains(IpAddr::V6(ipv6)));
        assert!(addresses.insert(IpAddr::V4(ipv4)) && addresses.insert(IpAddr::V6(ipv6)));
    }
    !leases.is_empty()
}

/// The VPN client's undo file. Accepted when it lists a command.
pub fn vpn_undo_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    !fuzzing::vpn_undo_file(text).is_empty()
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
    let dir = std::env::temp_dir().join(format!("skywire-lease-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let (pool4, pool6) = default_pools();
    let mut pool = Pool::open(Some(pool4), Some(pool6), &dir).expect("an empty pool");
    for byte in [2, 3] {
        pool.lease(SecretKey::from([byte; 32]).public())
            .expect("free addresses");
    }
    let text =
        std::fs::read(dir.join(skywire_dataplane::vpn::pool::LEASE_FILE)).expect("the lease file");
    std::fs::remove_dir_all(&dir).expect("the temporary folder goes");
    vec![Seed::new("vpn-leases.yaml", text)]
}

/// An undo file as a full-tunnel VPN client writes it.
pub fn vpn_undo_file_seeds() -> Vec<Seed> {
    let undo: Vec<Vec<String>> = [
        "-4 route del 0.0.0.0/0 dev skyvpn0 table 29547",
        "-4 rule del priority 29540 table main suppress_prefixlength 0",
        "-4 rule del priority 29541 not fwmark 0x736b table 29547",
    ]
    .iter()
    .map(|line| line.split(' ').map(str::to_owned).collect())
    .collect();
    vec![Seed::new(
        "vpn-client-routes.yaml",
        fuzzing::vpn_undo_file_text(&undo),
    )]
}
