//! `skywired`: the skywire mesh network node, and the commands that help set one up
//! (`keygen`, `pubkey`, `check-config`).

#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skywire::notify::notify;
use skywire::Config;
use skywire_control::{block_signals, ControlOptions, ControlServer};
use skywire_dataplane::api;
use skywire_dataplane::driver::{Dataplane, DriverOptions};
use skywire_dataplane::node::NodeOptions;
use skywire_dataplane::{NeighbourConfig, SecretKey};

/// A private key on standard input is 45 bytes; anything much longer is not one.
const MAX_KEY_INPUT_LEN: u64 = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "skywired",
    version,
    about = "The skywire mesh network node",
    long_about = "The skywire mesh network node: WireGuard transports to its neighbours, \
                  label-switched routes over several hops, end-to-end encrypted route sessions. \
                  `skywired --config PATH` runs a node; the subcommands help set one up. \
                  Control a running node with `visctl`.",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run a node with this configuration file (YAML). Relative paths in it are relative to
    /// its folder. Logs go to standard error; RUST_LOG overrides the file's log_level.
    #[arg(long, value_name = "PATH", required = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new private key, as `wg genkey` does. Save it with
    /// `umask 077; skywired keygen > node.key`.
    Keygen,
    /// Read a private key on standard input and print its public key, as `wg pubkey` does.
    Pubkey,
    /// Check a configuration file and the key file it names without starting the node. Prints
    /// `config OK: PATH` and the node's public key, or the problem and exits with status 1.
    CheckConfig {
        /// The configuration file to check.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match (cli.command, cli.config) {
        (Some(Command::Keygen), _) => {
            println!("{}", SecretKey::generate().to_base64());
            Ok(())
        }
        (Some(Command::Pubkey), _) => pubkey(),
        (Some(Command::CheckConfig { config }), _) => check_config(&config),
        (None, Some(config)) => start(&config),
        // clap requires --config when there is no subcommand.
        (None, None) => Err("no --config given: run `skywired --config PATH`".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skywired: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error at `level`; RUST_LOG, when set, overrides it.
fn init_logging(level: log::LevelFilter) {
    // A second call (none is made) would fail harmlessly.
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .parse_env(env_logger::Env::default())
        .try_init();
}

fn pubkey() -> Result<(), Box<dyn std::error::Error>> {
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_KEY_INPUT_LEN)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read a private key from standard input: {err}"))?;
    let key: SecretKey = text
        .parse()
        .map_err(|err| format!("standard input does not hold a private key: {err}"))?;
    println!("{}", key.public());
    Ok(())
}

fn check_config(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    init_logging(log::LevelFilter::Warn);
    let config = Config::load(path)?;
    let key = config.check_key_file()?;
    println!("config OK: {}", config.file().display());
    match key {
        Some(key) => {
            println!("public key: {key}");
            println!("mesh address: {}", key.mesh_address());
        }
        None => println!(
            "key file {} does not exist yet: the first start creates it",
            config.key_file().display()
        ),
    }
    Ok(())
}

/// Loads the configuration and the node's identity, then runs the node.
fn start(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(path)?;
    init_logging(config.log_level.into());
    let key = config.open_identity()?;
    let node = key.public();
    log::info!(
        "node {node}, mesh address {}, config {}",
        node.mesh_address(),
        config.file().display()
    );
    run(config, key)
}

/// Runs the node until SIGTERM or SIGINT: the dataplane thread, and the control thread (this
/// one), which owns the control socket and the process's signals.
fn run(config: Config, key: SecretKey) -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread exists, so that every thread inherits the mask and only the control
    // thread's signalfd sees them.
    block_signals()?;
    let dataplane = Dataplane::bind(driver_options(&config, key))?;
    let control = ControlServer::bind(ControlOptions {
        socket: config.control_socket().to_path_buf(),
        socket_group: None,
    })?;
    log::info!(
        "listening on UDP {} with {} neighbour(s); control socket {}",
        dataplane.local_addr(),
        config.neighbours.len(),
        config.control_socket().display()
    );
    let (requests, replies, end) = api::channels(dataplane.waker(), control.waker());
    let dataplane = std::thread::Builder::new()
        .name("dataplane".into())
        .spawn(move || dataplane.run(end))?;
    if let Err(error) = notify("READY=1") {
        log::warn!("cannot tell systemd that skywired is ready: {error}");
    }
    let served = control.run(requests, replies);
    let _ = notify("STOPPING=1");
    let stopped = dataplane
        .join()
        .map_err(|_| "the dataplane thread panicked")?;
    served?;
    stopped?;
    log::info!("stopped");
    Ok(())
}

/// The dataplane's options from the configuration.
fn driver_options(config: &Config, secret: SecretKey) -> DriverOptions {
    let mut node = NodeOptions::new(secret);
    node.neighbours = config
        .neighbours
        .iter()
        .map(|neighbour| NeighbourConfig {
            key: neighbour.key,
            endpoint: neighbour.endpoint,
            keepalive: neighbour.keepalive,
        })
        .collect();
    node.probe_interval = config.liveness.probe_interval;
    node.dead_after = config.liveness.dead_after;
    node.max_routes_per_neighbour = config.routes.max_per_neighbour as usize;
    node.rule_lifetime = config.routes.rule_lifetime;
    node.refresh_interval = config.routes.refresh_interval;
    DriverOptions {
        node,
        listen: config.listen,
        socks: config.socks.clone(),
        vpn: config.vpn_options(),
    }
}
