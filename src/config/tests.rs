#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const FILE: &str = "/etc/skywire/config.yaml";

fn key(seed: u8) -> NodeKey {
    SecretKey::from([seed; 32]).public()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new(FILE))
}

/// Asserts that `text` is refused at `key` on `line`, with a problem mentioning each of `words`,
/// and that the message a user sees carries all of it.
fn assert_invalid(text: &str, key: &str, line: usize, words: &[&str]) {
    let err = parse(text).expect_err("the config should be refused");
    let message = err.to_string();
    match &err {
        ConfigError::Invalid {
            key: got_key,
            line: got_line,
            problem,
            ..
        } => {
            assert_eq!(got_key, key, "{message}");
            assert_eq!(*got_line, Some(line), "{message}");
            assert!(
                !problem.starts_with(key.split('.').next().unwrap_or_default()),
                "{message}"
            );
            for word in words {
                assert!(problem.contains(word), "{word:?} missing in {message}");
            }
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(message.contains(FILE), "{message}");
    assert!(message.contains(&format!("line {line}")), "{message}");
    assert!(message.contains(&format!("`{key}`")), "{message}");
}

/// A folder of its own under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skywire-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// Defaults and well-formed files.

#[test]
fn an_empty_file_gives_the_defaults() {
    for text in [
        "",
        "# nothing but a comment\n",
        "{}",
        "node:\ncontrol:\nneighbours:\nliveness:\nroutes:\n",
    ] {
        let config = parse(text).unwrap();
        assert_eq!(config.file(), Path::new(FILE));
        assert_eq!(config.dir(), Path::new("/etc/skywire"));
        assert_eq!(config.key_file(), Path::new("/etc/skywire/state/node.key"));
        assert_eq!(config.state_dir(), Path::new("/etc/skywire/state"));
        assert_eq!(
            config.control_socket(),
            Path::new("/run/skywire/visctl.sock")
        );
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert_eq!(config.listen.to_string(), "[::]:7777");
        assert!(config.neighbours.is_empty());
        assert_eq!(config.liveness, Liveness::default());
        assert_eq!(config.liveness.probe_interval, Duration::from_millis(250));
        assert_eq!(config.liveness.dead_after, Duration::from_millis(750));
        assert_eq!(config.routes, Routes::default());
        assert_eq!(config.routes.max_per_neighbour, 1_024);
        assert_eq!(config.routes.rule_lifetime, Duration::from_millis(30_000));
        assert_eq!(
            config.routes.refresh_interval,
            Duration::from_millis(10_000)
        );
        assert_eq!(config.log_level, LogLevel::Info);
    }
}

#[test]
fn every_key_is_read() {
    let (a, b) = (key(1), key(2));
    let text = format!(
        "
node:
  key_file: /var/lib/skywire/node.key
  state_dir: /var/lib/skywire
listen: \"127.0.0.1:0\"
control:
  socket: /run/skywire/control.sock
neighbours:
  - key: {a}
    endpoint: \"127.0.0.1:7778\"
    keepalive: 25
  - key: {b}
    endpoint: \"[::1]:7779\"
  - key: {c}
liveness:
  probe_interval_ms: 500
  dead_after_ms: 1001
routes:
  max_per_neighbour: 65536
  rule_lifetime_ms: 20000
  refresh_interval_ms: 9999
log_level: debug
",
        c = key(3)
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.key_file(), Path::new("/var/lib/skywire/node.key"));
    assert_eq!(config.state_dir(), Path::new("/var/lib/skywire"));
    assert_eq!(
        config.control_socket(),
        Path::new("/run/skywire/control.sock")
    );
    assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(
        config.neighbours,
        vec![
            Neighbour {
                key: a,
                endpoint: Some("127.0.0.1:7778".parse().unwrap()),
                keepalive: Some(25),
            },
            Neighbour {
                key: b,
                endpoint: Some("[::1]:7779".parse().unwrap()),
                keepalive: None,
            },
            Neighbour {
                key: key(3),
                endpoint: None,
                keepalive: None,
            },
        ]
    );
    assert_eq!(config.liveness.probe_interval, Duration::from_millis(500));
    assert_eq!(config.liveness.dead_after, Duration::from_millis(1001));
    assert_eq!(config.routes.max_per_neighbour, 65_536);
    assert_eq!(config.routes.rule_lifetime, Duration::from_millis(20_000));
    assert_eq!(config.routes.refresh_interval, Duration::from_millis(9_999));
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(
        log::LevelFilter::from(config.log_level),
        log::LevelFilter::Debug
    );
}

#[test]
fn relative_paths_resolve_against_the_config_files_folder() {
    let text = "node:\n  key_file: keys/node.key\n  state_dir: ../var\ncontrol:\n  socket: run/visctl.sock\n";
    let config = Config::from_yaml(text, Path::new("/srv/mesh/config.yaml")).unwrap();
    assert_eq!(config.key_file(), Path::new("/srv/mesh/keys/node.key"));
    assert_eq!(config.state_dir(), Path::new("/srv/mesh/../var"));
    assert_eq!(
        config.control_socket(),
        Path::new("/srv/mesh/run/visctl.sock")
    );
}

#[test]
fn a_relative_config_path_is_made_absolute() {
    let config = Config::from_yaml("", Path::new("some/config.yaml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.file(), cwd.join("some/config.yaml"));
    assert_eq!(config.key_file(), cwd.join("some/state/node.key"));
}

#[test]
fn load_reads_the_file_and_resolves_beside_it() {
    let dir = TempDir::new();
    let file = dir.0.join("node.yaml");
    fs::write(&file, "listen: \"[::1]:0\"\nnode:\n  state_dir: st\n").unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.state_dir(), dir.0.join("st"));
    assert_eq!(config.key_file(), dir.0.join("state/node.key"));
    assert_eq!(config.listen, "[::1]:0".parse().unwrap());
}

#[test]
fn a_missing_config_file_is_named() {
    let err = Config::load("/nonexistent/skywire.yaml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/skywire.yaml"),
        "{err}"
    );
    assert!(err.to_string().contains("--config"), "{err}");
}

// Every way a file is refused names the key and its line.

#[test]
fn unknown_keys_are_refused_with_the_allowed_ones() {
    assert_invalid(
        "log_level: info\naps: {}\n",
        "aps",
        2,
        &["unknown field `aps`", "`neighbours`", "`apps`"],
    );
    assert_invalid(
        "liveness:\n  probe_interval_ms: 2000\n  dead_afer_ms: 10000\n",
        "liveness.dead_afer_ms",
        3,
        &["unknown field `dead_afer_ms`", "`dead_after_ms`"],
    );
    assert_invalid("node:\n  keyfile: k\n", "node.keyfile", 2, &["`key_file`"]);
    assert_invalid(
        "control:\n  path: s\n",
        "control.path",
        2,
        &[
            "`socket`",
            "`admin_group`",
            "`socket_group`",
            "`signal_port`",
        ],
    );
    assert_invalid(
        "routes:\n  max: 5\n",
        "routes.max",
        2,
        &["`max_per_neighbour`"],
    );
    let text = format!(
        "neighbours:\n  - key: {}\n  - key: {}\n    endpont: \"127.0.0.1:1\"\n",
        key(1),
        key(2)
    );
    assert_invalid(
        &text,
        "neighbours[1].endpont",
        4,
        &["`endpoint`", "`keepalive`"],
    );
}

#[test]
fn bad_endpoints_are_refused() {
    for (endpoint, why) in [
        ("example.com:7777", "not an IP address"),
        ("127.0.0.1", "not an IP address"),
        ("::1:7777", "not an IP address"),
        ("127.0.0.1:0", "port 0"),
        ("[::]:7777", "unspecified"),
    ] {
        let text = format!(
            "neighbours:\n  - key: {}\n  - key: {}\n\n    endpoint: \"{endpoint}\"\n",
            key(1),
            key(2)
        );
        assert_invalid(
            &text,
            "neighbours[1].endpoint",
            5,
            &[why, "[2001:db8::1]:7777"],
        );
    }
}

#[test]
fn bad_neighbour_keys_are_refused() {
    assert_invalid(
        "neighbours:\n  - key: not-a-key\n",
        "neighbours[0].key",
        2,
        &["44 characters", "skywired pubkey"],
    );
    assert_invalid(
        "neighbours:\n  - endpoint: \"127.0.0.1:1\"\n",
        "neighbours[0]",
        2,
        &["missing field `key`"],
    );
    let text = format!(
        "neighbours:\n  - key: {a}\n  - key: {b}\n  - key: {a}\n    keepalive: 5\n",
        a = key(1),
        b = key(2)
    );
    assert_invalid(
        &text,
        "neighbours[2].key",
        4,
        &["listed already", "neighbours[0]"],
    );
}

#[test]
fn the_nodes_own_key_is_not_a_neighbour() {
    let text = format!("neighbours:\n  - key: {}\n  - key: {}\n", key(1), key(2));
    let config = parse(&text).unwrap();
    assert!(config.check_against(&key(3)).is_ok());
    let err = config.check_against(&key(2)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, ConfigError::Invalid { key, line: Some(3), .. } if key == "neighbours[1].key"),
        "{message}"
    );
    assert!(message.contains("own public key"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn out_of_range_numbers_are_refused_with_the_range() {
    let neighbour = format!("neighbours:\n  - key: {}\n", key(1));
    for keepalive in ["0", "3601", "-1"] {
        assert_invalid(
            &format!("{neighbour}    keepalive: {keepalive}\n"),
            "neighbours[0].keepalive",
            3,
            &["1 to 3600 seconds"],
        );
    }
    for value in ["99", "60001", "-5"] {
        assert_invalid(
            &format!("liveness:\n  probe_interval_ms: {value}\n  dead_after_ms: 3600000\n"),
            "liveness.probe_interval_ms",
            2,
            &["100 to 60000 milliseconds"],
        );
    }
    for value in ["0", "65537"] {
        assert_invalid(
            &format!("routes:\n  max_per_neighbour: {value}\n"),
            "routes.max_per_neighbour",
            2,
            &["1 to 65536 rules"],
        );
    }
    assert_invalid(
        "routes:\n  rule_lifetime_ms: 999\n",
        "routes.rule_lifetime_ms",
        2,
        &["1000 to 3600000 milliseconds"],
    );
    assert_invalid(
        "routes:\n  refresh_interval_ms: 99999999999999999999\n",
        "routes.refresh_interval_ms",
        2,
        &["100 to 1800000 milliseconds"],
    );
}

#[test]
fn values_of_the_wrong_type_are_refused() {
    assert_invalid(
        "liveness:\n  probe_interval_ms: fast\n",
        "liveness.probe_interval_ms",
        2,
        &["a whole number"],
    );
    assert_invalid(
        "routes:\n  max_per_neighbour: 2.5\n",
        "routes.max_per_neighbour",
        2,
        &["a whole number"],
    );
    assert_invalid(
        "log_level: verbose\n",
        "log_level",
        1,
        &["unknown variant `verbose`", "`error`", "`trace`"],
    );
    assert_invalid("neighbours: 3\n", "neighbours", 1, &["sequence"]);
    assert_invalid("node: state\n", "node", 1, &["key_file and state_dir"]);
}

#[test]
fn liveness_needs_more_than_two_probe_intervals() {
    assert_invalid(
        "liveness:\n  probe_interval_ms: 2000\n  dead_after_ms: 4000\n",
        "liveness.dead_after_ms",
        3,
        &["more than twice", "above 4000"],
    );
    // Only the probe interval is written down: it is the key to blame.
    assert_invalid(
        "log_level: warn\nliveness:\n  probe_interval_ms: 400\n",
        "liveness.probe_interval_ms",
        3,
        &["dead_after_ms (750)", "above 800"],
    );
    assert!(parse("liveness:\n  probe_interval_ms: 2000\n  dead_after_ms: 4001\n").is_ok());
}

#[test]
fn refresh_must_be_less_than_half_the_rule_lifetime() {
    assert_invalid(
        "routes:\n  rule_lifetime_ms: 30000\n  refresh_interval_ms: 15000\n",
        "routes.refresh_interval_ms",
        3,
        &["less than half", "below 15000"],
    );
    assert_invalid(
        "routes:\n  rule_lifetime_ms: 20000\n",
        "routes.rule_lifetime_ms",
        2,
        &["refresh_interval_ms (10000)"],
    );
    assert!(parse("routes:\n  rule_lifetime_ms: 30000\n  refresh_interval_ms: 14999\n").is_ok());
}

#[test]
fn a_bad_listen_address_is_refused() {
    assert_invalid(
        "\nlisten: 7777\n",
        "listen",
        2,
        &["IP address and port", "[::]:7777"],
    );
    assert_invalid(
        "listen: \"localhost:7777\"\n",
        "listen",
        1,
        &["IP address and port"],
    );
}

#[test]
fn bad_paths_are_refused() {
    assert_invalid("node:\n  key_file: \"\"\n", "node.key_file", 2, &["empty"]);
    let long = "s".repeat(120);
    assert_invalid(
        &format!("control:\n  socket: {long}\n"),
        "control.socket",
        2,
        &["at most 107", "shorter"],
    );
}

#[test]
fn broken_yaml_is_a_syntax_error_with_its_line() {
    let err = parse("node:\n  key_file: a\n   state_dir: b: c\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::Syntax { line: Some(3), .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("not valid YAML"), "{message}");
    let err = parse("- a\n- b\n").unwrap_err();
    assert!(err.to_string().contains("mapping of sections"), "{err}");
}

// The state folder and the key file.

#[test]
fn a_missing_key_file_is_created_with_mode_0600_and_kept() {
    let dir = TempDir::new();
    let path = dir.0.join("node.key");
    let key = load_or_create_key(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", key.to_base64()));
    assert_eq!(text.len(), 45);
    let again = load_or_create_key(&path).unwrap();
    assert_eq!(again.public(), key.public());
    assert_eq!(read_key_file(&path).unwrap().public(), key.public());
}

#[test]
fn a_key_file_is_not_created_in_a_missing_folder() {
    let dir = TempDir::new();
    let path = dir.0.join("keys/node.key");
    let err = load_or_create_key(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::KeyFolderMissing { folder, .. } if *folder == dir.0.join("keys"))
    );
    assert!(
        err.to_string()
            .contains(&dir.0.join("keys").display().to_string()),
        "{err}"
    );
    assert!(!dir.0.join("keys").exists());
}

#[test]
fn a_malformed_key_file_is_refused_by_name() {
    let dir = TempDir::new();
    let path = dir.0.join("node.key");
    for content in [
        "garbage\n",
        "",
        "bXUUn8rnDmS0N1kOIlm7s5rHiYSMQbi/IZ9mu4aaBw==\n",
    ] {
        fs::write(&path, content).unwrap();
        let err = load_or_create_key(&path).unwrap_err();
        assert!(matches!(err, ConfigError::KeyMalformed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("wg genkey"), "{message}");
    }
    fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(matches!(
        read_key_file(&path),
        Err(ConfigError::KeyMalformed { .. })
    ));
    // Untouched: the operator's file is never replaced.
    assert_eq!(fs::read(&path).unwrap(), [0xff, 0xfe, 0x00]);
}

#[test]
fn a_key_file_readable_by_others_is_used_anyway() {
    let dir = TempDir::new();
    let path = dir.0.join("node.key");
    let key = SecretKey::from([7; 32]);
    fs::write(&path, format!("{}\n", key.to_base64())).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(load_or_create_key(&path).unwrap().public(), key.public());
}

#[test]
fn open_identity_creates_the_state_folder_and_the_key() {
    let dir = TempDir::new();
    let file = dir.0.join("config.yaml");
    let config = Config::from_yaml(
        "node:\n  state_dir: var/state\n  key_file: var/state/node.key\n",
        &file,
    )
    .unwrap();
    assert_eq!(config.check_key_file().unwrap(), None);
    let key = config.open_identity().unwrap();
    assert_eq!(mode(&dir.0.join("var/state")), 0o700);
    assert_eq!(mode(config.key_file()), 0o600);
    assert_eq!(config.check_key_file().unwrap(), Some(key.public()));
    assert_eq!(config.open_identity().unwrap().public(), key.public());
}

#[test]
fn open_identity_refuses_a_config_that_lists_the_node_itself() {
    let dir = TempDir::new();
    let file = dir.0.join("config.yaml");
    let key = SecretKey::from([9; 32]);
    fs::create_dir(dir.0.join("state")).unwrap();
    fs::write(
        dir.0.join("state/node.key"),
        format!("{}\n", key.to_base64()),
    )
    .unwrap();
    let text = format!("neighbours:\n  - key: {}\n", key.public());
    let config = Config::from_yaml(&text, &file).unwrap();
    for err in [
        config.open_identity().unwrap_err(),
        config.check_key_file().unwrap_err(),
    ] {
        assert!(err.to_string().contains("neighbours[0].key"), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}

#[test]
fn check_key_file_refuses_a_missing_folder_outside_the_state_folder() {
    let dir = TempDir::new();
    let file = dir.0.join("config.yaml");
    let config = Config::from_yaml("node:\n  key_file: keys/node.key\n", &file).unwrap();
    let err = config.check_key_file().unwrap_err();
    assert!(
        matches!(err, ConfigError::KeyFolderMissing { .. }),
        "{err:?}"
    );
    let err = config.open_identity().unwrap_err();
    assert!(
        err.to_string()
            .contains(&dir.0.join("keys").display().to_string()),
        "{err}"
    );
    // The state folder was made all the same; the key file was not.
    assert!(dir.0.join("state").is_dir());
    assert!(!dir.0.join("keys").exists());
}

// The socks section.

#[test]
fn socks_apps_are_absent_unless_configured() {
    let config = parse("log_level: info\n").unwrap();
    assert_eq!(
        config.socks,
        skywire_dataplane::socks::SocksOptions::default()
    );
    let config = parse("socks:\n").unwrap();
    assert!(config.socks.client.is_none() && config.socks.server.is_none());
}

#[test]
fn every_socks_key_is_read() {
    let (a, b, c) = (key(1), key(2), key(3));
    let text = format!(
        "
socks:
  server:
    enabled: false
    port: 2080
    allow: [{a}, {b}]
    deny: [\"203.0.113.0/24\", \"2001:db8::/32\"]
    allow_private: true
    allow_targets: [\"127.0.0.1/32\"]
    dial_timeout_ms: 3000
    idle_timeout_ms: 60000
    max_connections: 100
    max_connections_per_key: 40
  client:
    listen: \"127.0.0.1:0\"
    exit: {c}
    exit_port: 2080
    path: [{b}]
    handshake_timeout_ms: 500
    connect_timeout_ms: 7000
    idle_timeout_ms: 2000
    max_connections: 300
"
    );
    let config = parse(&text).unwrap();
    let server = config.socks.server.unwrap();
    assert!(!server.enabled);
    assert_eq!((server.port, server.allow), (2080, vec![a, b]));
    let policy = server.dial_policy;
    assert_eq!(
        policy.deny,
        vec![
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap()
        ]
    );
    assert!(policy.allow_private);
    assert_eq!(policy.allow_targets, vec!["127.0.0.1/32".parse().unwrap()]);
    assert_eq!(server.dial_timeout, Duration::from_secs(3));
    assert_eq!(server.idle_timeout, Duration::from_secs(60));
    assert_eq!(server.max_connections, 100);
    assert_eq!(server.max_connections_per_key, 40);
    let client = config.socks.client.unwrap();
    assert!(client.enabled, "a present section is enabled by default");
    assert_eq!(client.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!((client.exit, client.exit_port), (c, 2080));
    assert_eq!(client.route_path(), Some(vec![b, c]));
    assert_eq!(client.handshake_timeout, Duration::from_millis(500));
    assert_eq!(client.connect_timeout, Duration::from_secs(7));
    assert_eq!(client.idle_timeout, Duration::from_secs(2));
    assert_eq!(client.max_connections, 300);
}

#[test]
fn a_socks_port_for_other_hosts_needs_allow_remote_clients() {
    let exit = key(3);
    for listen in [
        "127.0.0.1:1080",
        "127.8.0.1:0",
        "[::1]:1080",
        "[::ffff:127.0.0.1]:1080",
    ] {
        let text = format!("socks:\n  client:\n    exit: {exit}\n    listen: \"{listen}\"\n");
        assert!(parse(&text).is_ok(), "{listen} is loopback");
    }
    let text = format!(
        "socks:\n  client:\n    exit: {exit}\n    listen: \"0.0.0.0:1080\"\n    allow_remote_clients: true\n"
    );
    let client = parse(&text).unwrap().socks.client.unwrap();
    assert_eq!(client.listen, "0.0.0.0:1080".parse().unwrap());
    let text = format!(
        "socks:\n  client:\n    exit: {exit}\n    listen: \"0.0.0.0:1080\"\n    allow_remote_clients: false\n"
    );
    assert!(parse(&text).is_err());
}

#[test]
fn socks_defaults_follow_the_reference() {
    let text = format!("socks:\n  client:\n    exit: {}\n  server: {{}}\n", key(3));
    let config = parse(&text).unwrap();
    let client = config.socks.client.unwrap();
    assert_eq!(client.listen, "127.0.0.1:1080".parse().unwrap());
    assert_eq!(client.exit_port, 1080);
    assert_eq!(
        client.route_path(),
        None,
        "no path key: the node chooses the path"
    );
    let server = config.socks.server.unwrap();
    assert_eq!(server.port, 1080);
    assert!(server.allow.is_empty(), "nobody is served unless listed");
    assert_eq!(
        server.dial_policy,
        skywire_dataplane::socks::DialPolicy::default()
    );
    assert!(!server.dial_policy.allow_private);
    assert!(server
        .dial_policy
        .check("127.0.0.1".parse().unwrap(), &[])
        .is_err());
    assert_eq!(
        (server.max_connections, server.max_connections_per_key),
        (512, 512)
    );
    let text = "socks:\n  server:\n    max_connections: 30\n";
    let server = parse(text).unwrap().socks.server.unwrap();
    assert_eq!(
        server.max_connections_per_key, 30,
        "one key may use them all"
    );
}

#[test]
fn bad_socks_values_are_refused_with_key_and_line() {
    assert_invalid(
        "socks:\n  client:\n    listen: \"127.0.0.1:1080\"\n",
        "socks.client.exit",
        3,
        &["missing", "exit node's public key"],
    );
    assert_invalid(
        "socks:\n  client:\n    exit: nope\n",
        "socks.client.exit",
        3,
        &["not a key"],
    );
    assert_invalid(
        "socks:\n  server:\n    deny: [\"10.0.0.0/8\", \"192.0.2.1\"]\n",
        "socks.server.deny[1]",
        3,
        &["10.77.0.0/24", "/32"],
    );
    assert_invalid(
        "socks:\n  server:\n    allow_targets: [\"127.0.0.1/33\"]\n",
        "socks.server.allow_targets[0]",
        3,
        &["too long"],
    );
    let exit = key(3);
    for listen in ["0.0.0.0:1080", "[::]:1080", "192.0.2.7:1080"] {
        assert_invalid(
            &format!("socks:\n  client:\n    exit: {exit}\n    listen: \"{listen}\"\n"),
            "socks.client.listen",
            4,
            &[
                "open proxy",
                "socks.client.allow_remote_clients: true",
                "127.0.0.1:1080",
            ],
        );
    }
    assert_invalid(
        &format!("socks:\n  client:\n    exit: {exit}\n    listen: localhost\n"),
        "socks.client.listen",
        4,
        &["127.0.0.1:1080"],
    );
    assert_invalid(
        &format!(
            "socks:\n  client:\n    exit: {exit}\n    path: [{exit}, {}]\n",
            key(2)
        ),
        "socks.client.path[0]",
        4,
        &["last node"],
    );
    assert_invalid(
        &format!("socks:\n  client:\n    exit: {exit}\n    path: []\n"),
        "socks.client.path",
        4,
        &[
            "remove the key for an automatic path",
            "list the exit alone for a direct route",
        ],
    );
    assert_invalid(
        &format!("socks:\n  client:\n    exit: {exit}\n    handshake_timeout_ms: 0\n"),
        "socks.client.handshake_timeout_ms",
        4,
        &["100 to 600000"],
    );
    assert_invalid(
        "socks:\n  server:\n    port: 70000\n",
        "socks.server.port",
        3,
        &["1 to 65535"],
    );
    assert_invalid(
        &format!("socks:\n  server:\n    allow:\n      - {exit}\n      - {exit}\n"),
        "socks.server.allow[1]",
        5,
        &["listed already"],
    );
    assert_invalid(
        "socks:\n  server:\n    alow: []\n",
        "socks.server.alow",
        3,
        &["`allow`"],
    );
}

// The vpn section.

#[test]
fn vpn_apps_are_off_unless_configured() {
    let config = parse("").unwrap();
    assert!(config.vpn.server.is_none() && config.vpn.client.is_none());
    let options = config.vpn_options();
    assert_eq!(options.state_dir, Path::new("/etc/skywire/state"));
}

#[test]
fn every_vpn_key_is_read() {
    let text = format!(
        "vpn:\n  server:\n    enabled: true\n    tun: srv0\n    pool4: 10.9.0.0/16\n    pool6: off\n    allow: [{}, {}]\n    port: 7100\n  client:\n    enabled: true\n    tun: cli0\n    server: {}\n    path: [{}]\n    routes: [0.0.0.0/0, \"::/0\", 10.1.0.0/16]\n    port: 7200\n",
        key(1),
        key(2),
        key(3),
        key(4)
    );
    let config = parse(&text).unwrap();
    let server = config.vpn.server.unwrap();
    assert!(server.start);
    assert_eq!(server.tun.as_str(), "srv0");
    assert_eq!(server.pool4.unwrap().to_string(), "10.9.0.0/16");
    assert_eq!(server.pool6, None);
    assert_eq!(server.allow, vec![key(1), key(2)]);
    assert_eq!(server.port, 7100);
    let client = config.vpn.client.unwrap();
    assert!(client.start);
    assert_eq!(client.tun.as_str(), "cli0");
    assert_eq!(client.server, key(3));
    assert_eq!(client.path, Some(vec![key(4)]));
    assert_eq!(client.routes.len(), 3);
    assert!(client.routes[0].is_default() && client.routes[1].is_default());
    assert_eq!(client.port, 7200);
}

#[test]
fn vpn_defaults_fill_what_is_left_out() {
    let text = format!("vpn:\n  server: {{}}\n  client:\n    server: {}\n", key(3));
    let config = parse(&text).unwrap();
    let server = config.vpn.server.unwrap();
    assert!(!server.start);
    assert_eq!(server.tun.as_str(), "skyvpn-srv");
    assert_eq!(server.pool4.unwrap().to_string(), "10.77.0.0/24");
    assert!(server.pool6.is_some());
    assert!(server.allow.is_empty());
    assert_eq!(server.port, 7001);
    let client = config.vpn.client.unwrap();
    assert_eq!(client.tun.as_str(), "skyvpn0");
    assert!(client.routes.is_empty());
    assert_eq!(client.path, None, "no path key: the node chooses the path");
}

#[test]
fn bad_vpn_values_are_refused_with_key_and_line() {
    assert_invalid(
        "vpn:\n  server:\n    tun: a-name-too-long-for-linux\n",
        "vpn.server.tun",
        3,
        &["15"],
    );
    assert_invalid(
        "vpn:\n  server:\n    pool4: fd00::/64\n",
        "vpn.server.pool4",
        3,
        &["not an IPv4 prefix"],
    );
    assert_invalid(
        "vpn:\n  server:\n    pool6: fd00::/127\n",
        "vpn.server.pool6",
        3,
        &["2 host bits"],
    );
    assert_invalid(
        "vpn:\n  server:\n    pool4: 'off'\n    pool6: 'off'\n",
        "vpn.server.pool4",
        3,
        &["needs pool4, pool6 or both"],
    );
    assert_invalid(
        &format!(
            "vpn:\n  server:\n    allow:\n      - {}\n      - {}\n",
            key(1),
            key(1)
        ),
        "vpn.server.allow[1]",
        5,
        &["listed already"],
    );
    assert_invalid(
        "vpn:\n  server:\n    port: 0\n",
        "vpn.server.port",
        3,
        &["1 to 65535"],
    );
    assert_invalid(
        "vpn:\n  client:\n    tun: x\n",
        "vpn.client.server",
        3,
        &["missing"],
    );
    assert_invalid(
        &format!(
            "vpn:\n  client:\n    server: {}\n    routes: [10.0.0.0/33]\n",
            key(1)
        ),
        "vpn.client.routes[0]",
        4,
        &["too long"],
    );
    assert_invalid(
        &format!(
            "vpn:\n  server:\n    tun: same\n  client:\n    server: {}\n    tun: same\n",
            key(1)
        ),
        "vpn.client.tun",
        6,
        &["different names"],
    );
    assert_invalid(
        "vpn:\n  client:\n    speed: 3\n",
        "vpn.client.speed",
        3,
        &["unknown field"],
    );
    assert_invalid(
        &format!("vpn:\n  client:\n    server: {}\n    path: []\n", key(1)),
        "vpn.client.path",
        4,
        &[
            "remove the key for an automatic path",
            "list the server alone for a direct route",
        ],
    );
    assert_invalid(
        &format!(
            "vpn:\n  client:\n    server: {}\n    path: [{}, {}]\n",
            key(1),
            key(1),
            key(2)
        ),
        "vpn.client.path[0]",
        4,
        &["the server must be the last node"],
    );
}

#[test]
fn a_node_is_not_its_own_vpn_server() {
    let own = SecretKey::from([7; 32]);
    let config = parse(&format!("vpn:\n  client:\n    server: {}\n", own.public())).unwrap();
    let err = config.check_against(&own.public()).unwrap_err();
    assert!(err.to_string().contains("vpn.client.server"), "{err}");
}

// The launched apps: the catalog, the signal port and the groups that may use the socket.

#[test]
fn apps_and_signal_defaults() {
    let config = parse("").unwrap();
    assert!(config.apps.is_empty());
    assert_eq!(config.signal_port, 7999);
    assert_eq!(config.socket_group, None);
    assert_eq!(config.admin_group, None);
    let config =
        parse("apps:\ncontrol:\n  signal_port: 0\n  socket_group: skywire\n  admin_group: wheel\n")
            .unwrap();
    assert!(config.apps.is_empty());
    assert_eq!(config.signal_port, 0);
    assert_eq!(config.socket_group.as_deref(), Some("skywire"));
    assert_eq!(config.admin_group.as_deref(), Some("wheel"));
}

#[test]
fn the_seeds_catalog_entry_is_read_as_written() {
    let text = "\
apps:
  meshnet-socks-server:
    daemon: true
    desc: DESCRIPTION GOES HERE
    path: bin/meshnet/meshnet-run-socks-server
    default_args: []
    help: |
        [1] Text name of app, must be unique
  second:
    path: target/release/skywired
    default_args: [\"--config\", \"examples/second-node.yaml\"]
    capabilities: [CAP_NET_ADMIN]
    env:
      RUST_LOG: debug
";
    let config = parse(text).unwrap();
    assert_eq!(config.apps.len(), 2);
    let seed = config.apps.get("meshnet-socks-server").unwrap();
    assert!(seed.daemon);
    assert_eq!(seed.desc, "DESCRIPTION GOES HERE");
    assert_eq!(seed.path, "bin/meshnet/meshnet-run-socks-server");
    assert_eq!(seed.help, "[1] Text name of app, must be unique\n");
    let second = config.apps.get("second").unwrap();
    assert!(!second.daemon);
    assert_eq!(
        second.default_args,
        ["--config", "examples/second-node.yaml"]
    );
    assert_eq!(
        second.capabilities,
        [skywire_control::capability::Capability::NET_ADMIN]
    );
    assert_eq!(
        second.env.get("RUST_LOG").map(String::as_str),
        Some("debug")
    );
    assert!(seed.capabilities.is_empty() && seed.env.is_empty());
}

#[test]
fn bad_apps_and_control_values_are_refused_with_key_and_line() {
    assert_invalid(
        "apps:\n  example:\n    path: x/y\n    deamon: true\n",
        "apps.example.deamon",
        4,
        &["unknown field `deamon`", "`daemon`"],
    );
    assert_invalid(
        "apps:\n  example:\n    desc: no path\n",
        "apps.example",
        3,
        &["missing field `path`"],
    );
    assert_invalid(
        "apps:\n  example:\n    path: \"\"\n",
        "apps.example.path",
        3,
        &["is empty"],
    );
    assert_invalid(
        "apps:\n  first:\n    path: a/b\n  \"two words\":\n    path: a/b\n",
        "apps.two words",
        5,
        &["cannot name an app"],
    );
    assert_invalid(
        "apps:\n  example:\n    path: x\n    default_args: -a\n",
        "apps.example.default_args",
        4,
        &["sequence"],
    );
    assert_invalid(
        "apps:\n  example:\n    path: x\n    capabilities: [CAP_NET_ADMIN, net_raw]\n",
        "apps.example.capabilities[1]",
        4,
        &["\"net_raw\" is not a Linux capability", "CAP_NET_ADMIN"],
    );
    assert_invalid(
        "apps:\n  example:\n    path: x\n    env:\n      SIGNAL_CLIENT: \"false\"\n",
        "apps.example.env.SIGNAL_CLIENT",
        5,
        &["skywired sets it for every app"],
    );
    assert_invalid(
        "control:\n  signal_port: 65536\n",
        "control.signal_port",
        2,
        &["0 to 65535"],
    );
    assert_invalid(
        "control:\n  signal_port: -1\n",
        "control.signal_port",
        2,
        &["out of range"],
    );
    assert_invalid(
        "control:\n  socket_group: \"wheel users\"\n",
        "control.socket_group",
        2,
        &["is not a group name"],
    );
    assert_invalid(
        "control:\n  admin_group: -x\n",
        "control.admin_group",
        2,
        &["is not a group name"],
    );
}

// The messenger section.

#[test]
fn the_messenger_runs_only_with_its_section() {
    assert_eq!(parse("log_level: info\n").unwrap().messenger, None);
    let defaults = Some(skywire_dataplane::messenger::Settings::default());
    assert_eq!(parse("messenger: {}\n").unwrap().messenger, defaults);
    // The heading alone, every key under it commented out.
    assert_eq!(
        parse("messenger:\n#  max_inbox: 5\nlog_level: info\n")
            .unwrap()
            .messenger,
        defaults
    );
    let options = parse("messenger: {}\n").unwrap().messenger_options();
    assert_eq!(options.state_dir, Path::new("/etc/skywire/state"));
}

#[test]
fn every_messenger_key_is_read() {
    let (a, b) = (key(1), key(2));
    let text = format!(
        "
messenger:
  allow: [{a}, {b}]
  max_text_bytes: 100
  max_inbox: 50
  per_sender_per_minute: 6
  send_timeout_ms: 2500
  max_streams: 8
"
    );
    let settings = parse(&text).unwrap().messenger.unwrap();
    assert_eq!(settings.allow, Some(vec![a, b]));
    assert_eq!(settings.max_text_bytes, 100);
    assert_eq!(settings.max_inbox, 50);
    assert_eq!(settings.per_sender_per_minute, 6);
    assert_eq!(settings.send_timeout, Duration::from_millis(2500));
    assert_eq!(settings.max_streams, 8);
    let nobody = parse("messenger:\n  allow: []\n")
        .unwrap()
        .messenger
        .unwrap();
    assert_eq!(
        nobody.allow,
        Some(Vec::new()),
        "an empty list allows nobody"
    );
}

#[test]
fn bad_messenger_values_are_refused_with_key_and_line() {
    assert_invalid(
        "messenger:\n  max_text_bytes: 70000\n",
        "messenger.max_text_bytes",
        2,
        &["1 to 65536"],
    );
    assert_invalid(
        "messenger:\n  send_timeout_ms: 10\n",
        "messenger.send_timeout_ms",
        2,
        &["100 to 600000"],
    );
    assert_invalid(
        "messenger:\n  per_sender_per_minute: 0\n",
        "messenger.per_sender_per_minute",
        2,
        &["1 to 6000"],
    );
    assert_invalid(
        "messenger:\n  allow: [nope]\n",
        "messenger.allow[0]",
        2,
        &["not a key"],
    );
    assert_invalid(
        "messenger:\n  max_inbox: 5\n  inbox: 5\n",
        "messenger.inbox",
        3,
        &["`max_inbox`"],
    );
}
