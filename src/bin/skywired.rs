//! `skywired`: the skywire mesh network node, and the commands that help set one up
//! (`keygen`, `pubkey`, `check-config`). Launched as an app by another skywired (or Viscript)
//! with `SIGNAL_CLIENT=true`, it is also a signal client of its launcher.

#![allow(clippy::print_stdout)]

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use skywire::notify::notify;
use skywire::reload::RunningConfig;
use skywire::Config;
use skywire_control::signal::{SignalClient, SignalClientHandle};
use skywire_control::{block_signals, ControlOptions, ControlServer, Stopper};
use skywire_dataplane::api;
use skywire_dataplane::driver::{Dataplane, DriverOptions};
use skywire_dataplane::node::NodeOptions;
use skywire_dataplane::{NeighbourConfig, SecretKey};

/// A private key on standard input is 45 bytes; anything much longer is not one.
const MAX_KEY_INPUT_LEN: u64 = 1024;

/// As a signal client: how long after a signal shutdown the library leaves this process before
/// it ends it. Longer than a clean stop takes (its apps' escalation included), so that the stop
/// is never cut short.
const SIGNAL_EXIT_GRACE: Duration = Duration::from_secs(25);

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

/// Logs to standard error at `level`; RUST_LOG, when set, overrides it, and then says so
/// (`true`). Without it the level is the `log` crate's maximum, which a reload changes.
fn init_logging(level: log::LevelFilter) -> bool {
    let from_env = std::env::var_os(env_logger::DEFAULT_FILTER_ENV)
        .is_some_and(|directives| !directives.is_empty());
    let mut builder = env_logger::Builder::new();
    if from_env {
        builder
            .filter_level(level)
            .parse_env(env_logger::Env::default());
    } else {
        builder.filter_level(log::LevelFilter::Trace);
    }
    // A second call (none is made) would fail harmlessly.
    let _ = builder.try_init();
    if !from_env {
        log::set_max_level(level);
    }
    from_env
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
    let log_level_from_env = init_logging(config.log_level.into());
    let key = config.open_identity()?;
    let node = key.public();
    log::info!(
        "node {node}, mesh address {}, config {}",
        node.mesh_address(),
        config.file().display()
    );
    run(RunningConfig::new(config, node, log_level_from_env), key)
}

/// Runs the node until SIGTERM or SIGINT: the dataplane thread, and the control thread (this
/// one), which owns the control socket and the process's signals.
fn run(running: RunningConfig, key: SecretKey) -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread exists, so that every thread inherits the mask and only the control
    // thread's signalfd sees them.
    block_signals()?;
    let config = running.config();
    let node = key.public();
    let dataplane = Dataplane::bind(driver_options(config, key))?;
    let mut control = ControlServer::bind(control_options(config))?;
    log::info!(
        "listening on UDP {} with {} neighbour(s); control socket {}; signal server {}",
        dataplane.local_addr(),
        config.neighbours.len(),
        config.control_socket().display(),
        control.signal_addr()
    );
    let launcher = signal_client(config, node, dataplane.local_addr(), control.stopper());
    control.set_config_source(Box::new(running));
    let (requests, replies, end) = api::channels(dataplane.waker(), control.waker());
    let dataplane = std::thread::Builder::new()
        .name("dataplane".into())
        .spawn(move || dataplane.run(end))?;
    if let Err(error) = notify("READY=1") {
        log::warn!("cannot tell systemd that skywired is ready: {error}");
    }
    let served = control.run(requests, replies);
    let _ = notify("STOPPING=1");
    if let Some(launcher) = launcher {
        launcher.stop();
    }
    let stopped = dataplane
        .join()
        .map_err(|_| "the dataplane thread panicked")?;
    served?;
    stopped?;
    log::info!("stopped");
    Ok(())
}

/// The control thread's options from the configuration.
fn control_options(config: &Config) -> ControlOptions {
    ControlOptions {
        admin_group: config.admin_group.clone(),
        socket_group: config.socket_group.clone(),
        signal_port: config.signal_port,
        apps: config.apps.clone(),
        ..ControlOptions::new(config.control_socket(), config.dir())
    }
}

/// The signal client of the skywired (or Viscript) that launched this one, if one did.
struct Launcher {
    client: SignalClientHandle,
    /// The launcher asked for the shutdown: the client's thread is waiting out its grace.
    asked: Arc<AtomicBool>,
}

impl Launcher {
    /// Closes the signal connection, unless the launcher's shutdown request stopped the node
    /// (its thread is then waiting out the exit grace, and the process ends without it).
    fn stop(self) {
        if !self.asked.load(Ordering::SeqCst) {
            self.client.stop();
        }
    }
}

/// Starts the signal client when `SIGNAL_CLIENT` is set: it reports the node's key, addresses
/// and uptime, and a shutdown request stops the node as SIGTERM does.
fn signal_client(
    config: &Config,
    node: skywire_dataplane::NodeKey,
    listen: SocketAddr,
    stopper: Stopper,
) -> Option<Launcher> {
    let mut client = SignalClient::from_env()?;
    client.config_mut().exit_grace = SIGNAL_EXIT_GRACE;
    let app_id = client.config_mut().id;
    let started = Instant::now();
    let neighbours = config.neighbours.len();
    let control_socket = config.control_socket().display().to_string();
    let asked = Arc::new(AtomicBool::new(false));
    let asked_by_launcher = Arc::clone(&asked);
    let started = client
        .report(move || {
            serde_json::json!({
                "Node": node.to_string(),
                "MeshAddress": node.mesh_address().to_string(),
                "Listen": listen.to_string(),
                "ControlSocket": control_socket,
                "Neighbours": neighbours,
                "UptimeSecs": started.elapsed().as_secs_f64(),
                "Pid": std::process::id(),
            })
        })
        .on_shutdown(move || {
            log::info!(
                "the launcher asked this node to shut down over the signal protocol: stopping"
            );
            asked_by_launcher.store(true, Ordering::SeqCst);
            stopper.stop();
        })
        .start();
    match started {
        Ok(client) => {
            log::info!("signal client of the launcher, as app {app_id}");
            Some(Launcher { client, asked })
        }
        Err(err) => {
            log::warn!("cannot start the signal client: {err}; running unmanaged");
            None
        }
    }
}

/// The dataplane's options from the configuration.
fn driver_options(config: &Config, secret: SecretKey) -> DriverOptions {
    let mut node = NodeOptions::new(secret);
    node.neighbours = config
        .neighbours
        .iter()
        .map(NeighbourConfig::from)
        .collect();
    node.probe_interval = config.liveness.probe_interval;
    node.dead_after = config.liveness.dead_after;
    node.max_routes_per_neighbour = config.routes.max_per_neighbour as usize;
    node.rule_lifetime = config.routes.rule_lifetime;
    node.refresh_interval = config.routes.refresh_interval;
    // Adverts count on from the wall clock, so that a restarted node's are the newer.
    node.advert_sequence_start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    DriverOptions {
        node,
        listen: config.listen,
        socks: config.socks.clone(),
        vpn: config.vpn_options(),
    }
}
