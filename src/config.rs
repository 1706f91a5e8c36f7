//! Configuration: the YAML file that `skywired --config` reads, checked into typed sections with
//! every relative path resolved against the file's folder, the node's identity on disk (the
//! state folder and the key file), and what a changed file asks of a running node (`diff`). Every error names what to fix: the key path and line of a bad
//! value, or the file or folder that is missing.

mod apps;
mod diff;
mod keyfile;
mod locate;
mod messenger;
mod path;
mod socks;
mod vpn;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use skywire_control::catalog::Catalog;
use skywire_dataplane::vpn::VpnOptions;
use skywire_dataplane::{NodeKey, SecretKey};

pub use diff::diff;
pub use keyfile::{create_state_dir, load_or_create_key, parse_key_file, read_key_file};
use locate::KeyPath;
pub use vpn::Vpn;

/// The UDP address when `listen` is unset: every IPv4 and IPv6 address, port 7777.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 7777);

/// The control socket when `control.socket` is unset.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/skywire/visctl.sock";

/// The key file when `node.key_file` is unset, relative to the config file's folder.
pub const DEFAULT_KEY_FILE: &str = "state/node.key";

/// The state folder when `node.state_dir` is unset, relative to the config file's folder.
pub const DEFAULT_STATE_DIR: &str = "state";

/// A Unix socket address holds at most 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH_LEN: usize = 107;

const PROBE_INTERVAL_MS: RangeInclusive<u64> = 100..=60_000;
const DEAD_AFTER_MAX_MS: u64 = 3_600_000;
const MAX_PER_NEIGHBOUR: RangeInclusive<u64> = 1..=65_536;
const RULE_LIFETIME_MS: RangeInclusive<u64> = 1_000..=3_600_000;
const REFRESH_INTERVAL_MS: RangeInclusive<u64> = 100..=1_800_000;
const KEEPALIVE_S: RangeInclusive<u64> = 1..=3_600;

/// Why a configuration, the state folder or the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {}: {source}; check the path given to --config", .file.display())]
    Read {
        /// The config file.
        file: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The config file is not valid YAML.
    #[error("{}{}: not valid YAML: {problem}; check the indentation, colons and quotes there", .file.display(), at_line(*.line))]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// Where the parser gave up (1-based), if it said.
        line: Option<usize>,
        /// What the parser said.
        problem: String,
    },
    /// A key is unknown, or its value is not allowed.
    #[error("{}{}: `{key}`: {problem}", .file.display(), at_line(*.line))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The key's path, like `neighbours[1].endpoint`.
        key: String,
        /// The key's line (1-based); for a key left to its default, the line of its section.
        line: Option<usize>,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// The state folder could not be created.
    #[error("cannot create the state folder {}: {source}; create it yourself or set node.state_dir to a folder this user can write", .dir.display())]
    StateDir {
        /// The state folder.
        dir: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file is missing and so is the folder it would be created in.
    #[error("cannot create the key file {}: its folder {} does not exist; create that folder, or set node.key_file to a path inside node.state_dir or another existing folder", .file.display(), .folder.display())]
    KeyFolderMissing {
        /// The key file.
        file: PathBuf,
        /// Its missing folder.
        folder: PathBuf,
    },
    /// The key file exists but could not be read.
    #[error("cannot read the key file {}: {source}; check its owner and permissions", .file.display())]
    KeyRead {
        /// The key file.
        file: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The key file does not hold a private key.
    #[error("the key file {} does not hold a private key: it must hold the output of `skywired keygen` or `wg genkey` (44 characters of base64 and a newline); fix it, or move it away to have a new key created on the next start", .file.display())]
    KeyMalformed {
        /// The key file.
        file: PathBuf,
    },
    /// A new key file could not be written.
    #[error("cannot create the key file {}: {source}; check that this user can write its folder", .file.display())]
    KeyWrite {
        /// The key file.
        file: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
}

fn at_line(line: Option<usize>) -> String {
    match line {
        Some(line) => format!(", line {line}"),
        None => String::new(),
    }
}

/// A checked configuration: every value in range, every path absolute.
///
/// The paths are behind getters so that they stay resolved; the other sections are plain data.
#[derive(Debug, Clone)]
pub struct Config {
    file: PathBuf,
    key_file: PathBuf,
    state_dir: PathBuf,
    control_socket: PathBuf,
    /// The UDP socket's address (`listen`); `[::]` is dual stack, port 0 picks a free port.
    pub listen: SocketAddr,
    /// The only nodes this node accepts transports with (`neighbours`), in file order, no key twice.
    pub neighbours: Vec<Neighbour>,
    /// Link liveness probing (`liveness`).
    pub liveness: Liveness,
    /// Routing-table limits and route rule soft state (`routes`).
    pub routes: Routes,
    /// How much to log (`log_level`); `RUST_LOG` overrides it.
    pub log_level: LogLevel,
    /// The VPN apps (`vpn`); none unless configured.
    pub vpn: Vpn,
    /// The SOCKS apps (`socks`): none unless configured.
    pub socks: skywire_dataplane::socks::SocksOptions,
    /// The messenger (`messenger`): none unless configured.
    pub messenger: Option<skywire_dataplane::messenger::Settings>,
    /// The signal server's TCP port on 127.0.0.1 (`control.signal_port`, default 7999); 0 picks
    /// a free one.
    pub signal_port: u16,
    /// A group whose members may run every control command (`control.admin_group`), beside
    /// root and skywired's own user.
    pub admin_group: Option<String>,
    /// A group whose members may run the read-only control commands (`control.socket_group`).
    pub socket_group: Option<String>,
    /// The apps `visctl start` launches (`apps`), in the seed's format; none by default.
    pub apps: Catalog,
    source: Source,
}

/// A neighbour: a node this node accepts a transport with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its public key (`key`).
    pub key: NodeKey,
    /// Where to reach it first (`endpoint`); without one, this node waits for it to call.
    pub endpoint: Option<SocketAddr>,
    /// WireGuard persistent keepalive in seconds (`keepalive`), 1..=3600.
    pub keepalive: Option<u16>,
}

/// Link liveness probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Time between probes on each transport (`probe_interval_ms`).
    pub probe_interval: Duration,
    /// Silence after which a link is dead (`dead_after_ms`), more than two probe intervals.
    pub dead_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            probe_interval: Duration::from_millis(250),
            dead_after: Duration::from_millis(750),
        }
    }
}

/// Routing-table limits and route rule soft state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    /// Most rules that one neighbour's route setups may hold here (`max_per_neighbour`): a route
    /// relayed for it takes two, one that ends here one.
    pub max_per_neighbour: u32,
    /// Idle rules expire after this (`rule_lifetime_ms`).
    pub rule_lifetime: Duration,
    /// How often a route's initiator refreshes its rules (`refresh_interval_ms`), less than half
    /// the rule lifetime.
    pub refresh_interval: Duration,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            max_per_neighbour: 1_024,
            rule_lifetime: Duration::from_millis(30_000),
            refresh_interval: Duration::from_millis(10_000),
        }
    }
}

/// How much to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// What a node operator wants to see (the default).
    #[default]
    Info,
    /// What a developer wants to see.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for log::LevelFilter {
    fn from(level: LogLevel) -> log::LevelFilter {
        match level {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The file's text, kept to find the line of a key path found wrong later.
#[derive(Clone)]
struct Source(String);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({} bytes)", self.0.len())
    }
}

impl Config {
    /// Reads and checks the config file `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let read_error = |source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        };
        let file = std::path::absolute(path).map_err(read_error)?;
        let text = std::fs::read_to_string(&file).map_err(read_error)?;
        Config::from_yaml(&text, &file)
    }

    /// Checks `text` as the content of the config file `file`, whose folder anchors relative
    /// paths. Nothing is read from disk.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let file = std::path::absolute(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let raw = parse(text, &file)?;
        Checker { file, text }.check(raw)
    }

    /// The config file, absolute.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The folder that relative paths in the config file are relative to.
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("/"))
    }

    /// The private key file (`node.key_file`), absolute.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The state folder (`node.state_dir`), absolute.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The Unix socket that `visctl` talks to (`control.socket`), absolute.
    pub fn control_socket(&self) -> &Path {
        &self.control_socket
    }

    /// The app socket, through which launched apps use the mesh: `apps.sock` in the state
    /// folder.
    pub fn app_socket(&self) -> PathBuf {
        self.state_dir.join("apps.sock")
    }

    /// The dataplane's VPN options: the apps as configured, their state in the state folder.
    pub fn vpn_options(&self) -> VpnOptions {
        VpnOptions {
            state_dir: self.state_dir.clone(),
            server: self.vpn.server.clone(),
            client: self.vpn.client.clone(),
        }
    }

    /// The dataplane's messenger options: its settings, its logs in the state folder.
    pub fn messenger_options(&self) -> skywire_dataplane::messenger::MessengerOptions {
        skywire_dataplane::messenger::MessengerOptions {
            state_dir: self.state_dir.clone(),
            settings: self.messenger.clone(),
        }
    }

    /// Checks the configuration against this node's own public key: the node must not list
    /// itself as a neighbour, nor be its own VPN server.
    pub fn check_against(&self, own: &NodeKey) -> Result<(), ConfigError> {
        let checker = Checker {
            file: self.file.clone(),
            text: &self.source.0,
        };
        if self
            .vpn
            .client
            .as_ref()
            .is_some_and(|client| client.server == *own)
        {
            return Err(checker.invalid(
                &KeyPath::top("vpn").key("client").key("server"),
                "this is the node's own public key: a VPN client needs another node as its server"
                    .to_owned(),
            ));
        }
        for (index, neighbour) in self.neighbours.iter().enumerate() {
            if neighbour.key == *own {
                return Err(checker.invalid(
                    &KeyPath::top("neighbours").index(index).key("key"),
                    format!(
                        "this is the node's own public key (from {}); a node is not its own neighbour: remove this entry",
                        self.key_file.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Prepares this node's identity for a start: creates the state folder if it is missing,
    /// reads the key file or creates it with a new key, and checks the configuration against it.
    pub fn open_identity(&self) -> Result<SecretKey, ConfigError> {
        create_state_dir(&self.state_dir)?;
        let key = load_or_create_key(&self.key_file)?;
        self.check_against(&key.public())?;
        Ok(key)
    }

    /// Checks the key file without changing anything: `Some(public key)` if it exists (and is a
    /// key that is not listed as a neighbour), `None` if a start would create it. A missing key
    /// file whose folder is missing too is an error, unless that folder is the state folder,
    /// which a start creates.
    pub fn check_key_file(&self) -> Result<Option<NodeKey>, ConfigError> {
        if self.key_file.exists() {
            let public = read_key_file(&self.key_file)?.public();
            self.check_against(&public)?;
            return Ok(Some(public));
        }
        let folder = self.key_file.parent().unwrap_or(Path::new("/"));
        if folder.is_dir() || folder == self.state_dir {
            Ok(None)
        } else {
            Err(ConfigError::KeyFolderMissing {
                file: self.key_file.clone(),
                folder: folder.to_path_buf(),
            })
        }
    }
}

/// The file as written, before checking. Sections and lists may be left empty (`null`), which
/// happens when every entry under a heading is commented out.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping of sections (node, listen, control, neighbours, liveness, routes, log_level, vpn, socks, messenger, apps)"
)]
struct RawConfig {
    node: Option<RawNode>,
    listen: Option<String>,
    control: Option<RawControl>,
    neighbours: Option<Vec<RawNeighbour>>,
    liveness: Option<RawLiveness>,
    routes: Option<RawRoutes>,
    log_level: Option<LogLevel>,
    vpn: Option<vpn::RawVpn>,
    socks: Option<socks::RawSocks>,
    #[serde(deserialize_with = "messenger::present")]
    messenger: Option<messenger::RawMessenger>,
    apps: Option<Catalog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with key_file and state_dir"
)]
struct RawNode {
    key_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with socket, admin_group, socket_group and signal_port"
)]
struct RawControl {
    socket: Option<PathBuf>,
    admin_group: Option<String>,
    socket_group: Option<String>,
    signal_port: Option<Whole>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with key, endpoint and keepalive"
)]
struct RawNeighbour {
    key: String,
    endpoint: Option<String>,
    keepalive: Option<Whole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with probe_interval_ms and dead_after_ms"
)]
struct RawLiveness {
    probe_interval_ms: Option<Whole>,
    dead_after_ms: Option<Whole>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    expecting = "a mapping with max_per_neighbour, rule_lifetime_ms and refresh_interval_ms"
)]
struct RawRoutes {
    max_per_neighbour: Option<Whole>,
    rule_lifetime_ms: Option<Whole>,
    refresh_interval_ms: Option<Whole>,
}

/// A whole number as written, range-checked later so the error can say what is allowed.
#[derive(Debug, Clone, Copy)]
struct Whole(i128);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Whole, D::Error> {
        struct WholeVisitor;

        impl de::Visitor<'_> for WholeVisitor {
            type Value = Whole;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Whole, E> {
                Ok(Whole(number.into()))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Whole, E> {
                Ok(Whole(number.into()))
            }

            fn visit_i128<E: de::Error>(self, number: i128) -> Result<Whole, E> {
                Ok(Whole(number))
            }

            fn visit_u128<E: de::Error>(self, number: u128) -> Result<Whole, E> {
                Ok(Whole(i128::try_from(number).unwrap_or(i128::MAX)))
            }
        }

        // `deserialize_any`: yaml_serde's `deserialize_i64` refuses numbers past u64 outright,
        // which would hide the allowed range from the message.
        deserializer.deserialize_any(WholeVisitor)
    }
}

fn parse(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    // Parsing twice (a small file) tells broken YAML apart from a bad key or value.
    if let Err(err) = yaml_serde::from_str::<de::IgnoredAny>(text) {
        let line = err.location().map(|location| location.line());
        return Err(ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            problem: err.to_string(),
        });
    }
    let raw: Option<RawConfig> = serde_path_to_error::deserialize(
        yaml_serde::Deserializer::from_str(text),
    )
    .map_err(|err| {
        let key = KeyPath::from(err.path()).to_string();
        let inner = err.into_inner();
        let location = inner.location();
        let mut problem = inner.to_string();
        // yaml_serde prints the path and position itself; they have fields of their own here.
        if let Some(location) = &location {
            let suffix = format!(" at line {} column {}", location.line(), location.column());
            if let Some(stripped) = problem.strip_suffix(&suffix) {
                problem.truncate(stripped.len());
            }
        }
        // Its path is the parent's for an unknown key, so strip any prefix of ours.
        if let Some((head, rest)) = problem.split_once(": ") {
            if !head.contains(char::is_whitespace) && key.starts_with(head) {
                problem = rest.to_owned();
            }
        }
        ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            line: location.map(|location| location.line()),
            problem,
        }
    })?;
    Ok(raw.unwrap_or_default())
}

/// Turns the file as written into a [`Config`], naming the key and line of the first bad value.
struct Checker<'t> {
    file: PathBuf,
    text: &'t str,
}

impl Checker<'_> {
    fn invalid(&self, key: &KeyPath, problem: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.to_string(),
            line: key.line_in(self.text),
            problem,
        }
    }

    fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("/"))
    }

    fn resolve(&self, path: &Path) -> PathBuf {
        // `join` keeps an absolute `path` as it is.
        self.dir().join(path)
    }

    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let node = raw.node.unwrap_or_default();
        let key_file = self.path(
            &KeyPath::top("node").key("key_file"),
            node.key_file
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_KEY_FILE)),
        )?;
        let state_dir = self.path(
            &KeyPath::top("node").key("state_dir"),
            node.state_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_STATE_DIR)),
        )?;
        let control = raw.control.unwrap_or_default();
        let socket_key = KeyPath::top("control").key("socket");
        let control_socket = self.path(
            &socket_key,
            control
                .socket
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_CONTROL_SOCKET)),
        )?;
        let socket_len = control_socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH_LEN {
            return Err(self.invalid(
                &socket_key,
                format!(
                    "{} is {socket_len} bytes long, but a Unix socket path can be at most {MAX_SOCKET_PATH_LEN}: choose a shorter path",
                    control_socket.display()
                ),
            ));
        }

        let listen = match &raw.listen {
            None => DEFAULT_LISTEN,
            Some(text) => text.trim().parse::<SocketAddr>().map_err(|_| {
                self.invalid(
                    &KeyPath::top("listen"),
                    format!(
                        "{text:?} is not an IP address and port: write \"[::]:7777\" (every address, dual stack), \"0.0.0.0:7777\", \"127.0.0.1:0\" (any free port) or similar"
                    ),
                )
            })?,
        };

        let neighbours = self.neighbours(raw.neighbours.unwrap_or_default())?;
        let liveness = self.liveness(raw.liveness.unwrap_or_default())?;
        let routes = self.routes(raw.routes.unwrap_or_default())?;
        let vpn = self.vpn(raw.vpn.unwrap_or_default())?;
        let socks = self.socks(raw.socks.unwrap_or_default())?;
        let messenger = raw.messenger.map(|raw| self.messenger(raw)).transpose()?;
        let admin_group = self.group("admin_group", control.admin_group)?;
        let socket_group = self.group("socket_group", control.socket_group)?;
        let signal_port = self.signal_port(control.signal_port)?;
        let apps = self.apps(raw.apps)?;

        Ok(Config {
            file: self.file.clone(),
            key_file,
            state_dir,
            control_socket,
            listen,
            neighbours,
            liveness,
            routes,
            log_level: raw.log_level.unwrap_or_default(),
            vpn,
            socks,
            messenger,
            signal_port,
            admin_group,
            socket_group,
            apps,
            source: Source(self.text.to_owned()),
        })
    }

    fn path(&self, key: &KeyPath, path: &Path) -> Result<PathBuf, ConfigError> {
        if path.as_os_str().is_empty() {
            return Err(self.invalid(
                key,
                "is empty: give a path, absolute or relative to the config file's folder"
                    .to_owned(),
            ));
        }
        Ok(self.resolve(path))
    }

    fn number(
        &self,
        key: &KeyPath,
        value: Option<Whole>,
        default: u64,
        allowed: RangeInclusive<u64>,
        unit: &str,
    ) -> Result<u64, ConfigError> {
        let Some(Whole(value)) = value else {
            return Ok(default);
        };
        match u64::try_from(value) {
            Ok(value) if allowed.contains(&value) => Ok(value),
            _ => Err(self.invalid(
                key,
                format!(
                    "{value} is out of range: allowed are {} to {} {unit}",
                    allowed.start(),
                    allowed.end()
                ),
            )),
        }
    }

    fn neighbours(&self, raw: Vec<RawNeighbour>) -> Result<Vec<Neighbour>, ConfigError> {
        let mut neighbours: Vec<Neighbour> = Vec::with_capacity(raw.len());
        for (index, entry) in raw.into_iter().enumerate() {
            let at = KeyPath::top("neighbours").index(index);
            let key: NodeKey = entry.key.parse().map_err(|err| {
                self.invalid(
                    &at.key("key"),
                    format!(
                        "{err}; give the neighbour's public key (its `skywired pubkey` output)"
                    ),
                )
            })?;
            if let Some(first) = neighbours.iter().position(|other| other.key == key) {
                return Err(self.invalid(
                    &at.key("key"),
                    format!(
                        "the key {key} is listed already, as neighbours[{first}]: list each neighbour once"
                    ),
                ));
            }
            let endpoint = match &entry.endpoint {
                None => None,
                Some(text) => Some(self.endpoint(&at.key("endpoint"), text)?),
            };
            let keepalive = match entry.keepalive {
                None => None,
                Some(value) => Some(self.number(
                    &at.key("keepalive"),
                    Some(value),
                    0,
                    KEEPALIVE_S,
                    "seconds",
                )?),
            };
            neighbours.push(Neighbour {
                key,
                endpoint,
                keepalive: keepalive.and_then(|seconds| u16::try_from(seconds).ok()),
            });
        }
        Ok(neighbours)
    }

    fn endpoint(&self, key: &KeyPath, text: &str) -> Result<SocketAddr, ConfigError> {
        let invalid = |why: &str| {
            self.invalid(
                key,
                format!(
                    "{text:?} {why}: write an IP address and port, like \"192.0.2.1:7777\" or \"[2001:db8::1]:7777\" (host names are not resolved here)"
                ),
            )
        };
        let endpoint: SocketAddr = text
            .trim()
            .parse()
            .map_err(|_| invalid("is not an IP address and port"))?;
        if endpoint.port() == 0 {
            return Err(invalid("has port 0, which no node listens on"));
        }
        if endpoint.ip().is_unspecified() {
            return Err(invalid(
                "is the unspecified address, which no node listens on",
            ));
        }
        Ok(endpoint)
    }

    fn liveness(&self, raw: RawLiveness) -> Result<Liveness, ConfigError> {
        let defaults = Liveness::default();
        let section = KeyPath::top("liveness");
        let probe_interval_ms = self.number(
            &section.key("probe_interval_ms"),
            raw.probe_interval_ms,
            millis(defaults.probe_interval),
            PROBE_INTERVAL_MS,
            "milliseconds",
        )?;
        let dead_after_ms = self.number(
            &section.key("dead_after_ms"),
            raw.dead_after_ms,
            millis(defaults.dead_after),
            1..=DEAD_AFTER_MAX_MS,
            "milliseconds",
        )?;
        if dead_after_ms <= 2 * probe_interval_ms {
            // Blame the key that is written down; if both are, the one that has to grow.
            let key = if raw.dead_after_ms.is_some() || raw.probe_interval_ms.is_none() {
                section.key("dead_after_ms")
            } else {
                section.key("probe_interval_ms")
            };
            return Err(self.invalid(
                &key,
                format!(
                    "dead_after_ms ({dead_after_ms}) must be more than twice probe_interval_ms ({probe_interval_ms}), so that one lost probe does not kill a link: raise dead_after_ms above {} or lower probe_interval_ms",
                    2 * probe_interval_ms
                ),
            ));
        }
        Ok(Liveness {
            probe_interval: Duration::from_millis(probe_interval_ms),
            dead_after: Duration::from_millis(dead_after_ms),
        })
    }

    fn routes(&self, raw: RawRoutes) -> Result<Routes, ConfigError> {
        let defaults = Routes::default();
        let section = KeyPath::top("routes");
        let max_per_neighbour = self.number(
            &section.key("max_per_neighbour"),
            raw.max_per_neighbour,
            defaults.max_per_neighbour.into(),
            MAX_PER_NEIGHBOUR,
            "rules",
        )?;
        let rule_lifetime_ms = self.number(
            &section.key("rule_lifetime_ms"),
            raw.rule_lifetime_ms,
            millis(defaults.rule_lifetime),
            RULE_LIFETIME_MS,
            "milliseconds",
        )?;
        let refresh_interval_ms = self.number(
            &section.key("refresh_interval_ms"),
            raw.refresh_interval_ms,
            millis(defaults.refresh_interval),
            REFRESH_INTERVAL_MS,
            "milliseconds",
        )?;
        if refresh_interval_ms * 2 >= rule_lifetime_ms {
            let key = if raw.refresh_interval_ms.is_some() || raw.rule_lifetime_ms.is_none() {
                section.key("refresh_interval_ms")
            } else {
                section.key("rule_lifetime_ms")
            };
            return Err(self.invalid(
                &key,
                format!(
                    "refresh_interval_ms ({refresh_interval_ms}) must be less than half of rule_lifetime_ms ({rule_lifetime_ms}), so that a lost refresh does not expire a route: lower refresh_interval_ms below {} or raise rule_lifetime_ms",
                    rule_lifetime_ms.div_ceil(2)
                ),
            ));
        }
        Ok(Routes {
            max_per_neighbour: u32::try_from(max_per_neighbour).unwrap_or(u32::MAX),
            rule_lifetime: Duration::from_millis(rule_lifetime_ms),
            refresh_interval: Duration::from_millis(refresh_interval_ms),
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
