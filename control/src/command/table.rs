//! The command table: every command's names, the role it needs, its usage and help, and how
//! its arguments are read into a [`Command`]. `help` prints it, in this order, from `visctl` without
//! a daemon as well as from `skywired`.

use std::net::SocketAddr;

use serde::Serialize;
use skywire_dataplane::api::messenger::{Mailbox, MessengerRequest};
use skywire_dataplane::api::socks::SocksApp;
use skywire_dataplane::api::vpn::VpnApp;
use skywire_dataplane::api::Request;
use skywire_dataplane::wire::ServiceName;
use skywire_dataplane::{NeighbourConfig, NodeKey};

use super::{shorten, AppCommand, Command, CommandError, LocalCommand};
use crate::catalog;
use crate::signal::AppId;

/// Echo requests `ping_node` sends when no count is given.
pub const DEFAULT_PING_COUNT: u32 = 4;

/// Most echo requests one `ping_node` may send.
pub const MAX_PING_COUNT: u32 = 100;

/// Output lines `logs` shows when no count is given.
pub const DEFAULT_LOG_LINES: usize = 20;

/// Most output lines one `logs` may ask for (the supervisor keeps 1000 per app).
pub const MAX_LOG_LINES: usize = 1000;

/// What a peer of the control socket may do, and what a command needs. An administrator may
/// run every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Commands that change nothing: also for `control.socket_group` and launched apps.
    ReadOnly,
    /// Every command: root, skywired's own user and `control.admin_group`.
    Admin,
}

impl Role {
    /// Whether a peer with this role may run a command that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

/// The role a command needs: one for every use of it, or one per subcommand. A use of a
/// command that the table gives no role is refused whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRole {
    /// Every use of the command needs this role.
    Whole(Role),
    /// The role depends on the first argument, the subcommand; one not listed is refused.
    BySubcommand(&'static [(&'static str, Role)]),
}

impl CommandRole {
    /// The role the command needs with `args`; `None` when the table gives it none.
    pub fn needed(&self, args: &[String]) -> Option<Role> {
        match self {
            CommandRole::Whole(role) => Some(*role),
            CommandRole::BySubcommand(roles) => {
                let subcommand = args.first()?;
                roles
                    .iter()
                    .find(|(name, _)| name == subcommand)
                    .map(|(_, role)| *role)
            }
        }
    }
}

/// `"admin"`, or a map of subcommands to roles.
impl Serialize for CommandRole {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CommandRole::Whole(role) => role.serialize(serializer),
            CommandRole::BySubcommand(roles) => {
                serializer.collect_map(roles.iter().map(|(name, role)| (name, role)))
            }
        }
    }
}

const READ_ONLY: CommandRole = CommandRole::Whole(Role::ReadOnly);
const ADMIN: CommandRole = CommandRole::Whole(Role::Admin);
/// `vpn` and `socks`: anyone who may use the socket sees their state; starting and stopping
/// them is the administrators'.
const APP_SWITCH: CommandRole = CommandRole::BySubcommand(&[
    ("status", Role::ReadOnly),
    ("start", Role::Admin),
    ("stop", Role::Admin),
]);

/// One entry of the command table.
#[derive(Debug, Serialize)]
pub struct CommandSpec {
    /// The command's name.
    pub name: &'static str,
    /// Shorter names for it.
    pub aliases: &'static [&'static str],
    /// The role it needs: a required field, so that no command is added without deciding
    /// who may run it.
    pub role: CommandRole,
    /// The command line, with its arguments in capitals.
    pub usage: &'static str,
    /// What it does, in a few words.
    pub summary: &'static str,
    /// What it does, its arguments and what it answers.
    pub help: &'static str,
    #[serde(skip)]
    parse: fn(&'static CommandSpec, &[String]) -> Result<Command, CommandError>,
}

impl PartialEq for CommandSpec {
    fn eq(&self, other: &CommandSpec) -> bool {
        self.name == other.name
    }
}

impl Eq for CommandSpec {}

impl CommandSpec {
    /// Reads the arguments (the words after the command's name).
    pub fn parse(&'static self, args: &[String]) -> Result<Command, CommandError> {
        (self.parse)(self, args)
    }

    /// Whether `name` is this command's name or one of its aliases.
    pub fn is_called(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    fn usage_error(&'static self, problem: impl Into<String>) -> CommandError {
        CommandError::Usage {
            command: self.name,
            usage: self.usage,
            problem: problem.into(),
        }
    }

    fn expect_args(
        &'static self,
        args: &[String],
        allowed: std::ops::RangeInclusive<usize>,
    ) -> Result<(), CommandError> {
        if allowed.contains(&args.len()) {
            return Ok(());
        }
        let wanted = match (allowed.start(), allowed.end()) {
            (0, 0) => "takes no arguments".to_owned(),
            (low, high) if low == high => format!("takes {low} argument{}", plural(*low)),
            (low, high) => format!("takes {low} to {high} arguments"),
        };
        Err(self.usage_error(format!("{wanted}, not {}", args.len())))
    }

    /// A command that takes no arguments.
    fn no_args(
        &'static self,
        args: &[String],
        command: impl Into<Command>,
    ) -> Result<Command, CommandError> {
        self.expect_args(args, 0..=0)?;
        Ok(command.into())
    }

    fn key(&'static self, word: &str) -> Result<NodeKey, CommandError> {
        word.parse().map_err(|_| CommandError::BadKey {
            command: self.name,
            word: shorten(word),
        })
    }

    /// The one argument of a command that takes a node key.
    fn one_key(&'static self, args: &[String]) -> Result<NodeKey, CommandError> {
        self.expect_args(args, 1..=1)?;
        self.key(&args[0])
    }

    /// A neighbour's endpoint: an IP address and port where a node may listen.
    fn endpoint(&'static self, word: &str) -> Result<SocketAddr, CommandError> {
        match word.parse::<SocketAddr>() {
            Ok(endpoint) if endpoint.port() != 0 && !endpoint.ip().is_unspecified() => Ok(endpoint),
            _ => Err(self.usage_error(format!(
                "`{}` is not an endpoint: give the neighbour's IP address and port, like \
                 192.0.2.1:7777 or [2001:db8::1]:7777 (host names are not resolved)",
                shorten(word)
            ))),
        }
    }

    /// An app id: a whole number from 1 on.
    fn app_id(&'static self, word: &str) -> Result<AppId, CommandError> {
        match word.parse::<AppId>() {
            Ok(id) if id > 0 => Ok(id),
            _ => Err(self.usage_error(format!(
                "`{}` is not an app id: ids are the numbers that `start` answers and `list_apps` shows",
                shorten(word)
            ))),
        }
    }

    /// The one argument of a command that takes an app id.
    fn one_id(&'static self, args: &[String]) -> Result<AppId, CommandError> {
        self.expect_args(args, 1..=1)?;
        self.app_id(&args[0])
    }

    /// A count from 1 to `max`, or `default` when not given.
    fn count<N: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display>(
        &'static self,
        word: Option<&String>,
        name: &str,
        default: N,
        max: N,
    ) -> Result<N, CommandError> {
        let Some(word) = word else {
            return Ok(default);
        };
        match word.parse::<N>() {
            Ok(count) if count >= N::from(1) && count <= max => Ok(count),
            _ => Err(self.usage_error(format!(
                "{name} `{}` is not a whole number from 1 to {max}",
                shorten(word)
            ))),
        }
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        aliases: &["h", "?"],
        role: READ_ONLY,
        usage: "help [COMMAND|APP]",
        summary: "list the commands, or explain a command or an app",
        help: "Without an argument, lists every command with a one-line summary. With a \
               command's name or alias, shows how it is used and what it does. With the name \
               of an app of the catalog (see `apps`), shows its description, default \
               arguments and help text. A command's name wins over an app of the same name.",
        parse: parse_help,
    },
    CommandSpec {
        name: "status",
        aliases: &[],
        role: READ_ONLY,
        usage: "status",
        summary: "the node at a glance: key, mesh address, UDP address, uptime, counts",
        help: "Shows this node's public key (its name), its mesh address, the UDP address it \
               is bound to (with the real port when the config says 0), how long the \
               dataplane has run, and how many transports, links up, routes and routing \
               rules it has.",
        parse: |spec, args| spec.no_args(args, Request::Status),
    },
    CommandSpec {
        name: "list_transports",
        aliases: &["lt"],
        role: READ_ONLY,
        usage: "list_transports",
        summary: "the neighbours' transports: link state, latency, counters",
        help: "One row per configured neighbour: its key, the endpoint its packets go to, \
               whether its link is up (liveness probes answered), when the last WireGuard \
               handshake completed and the last authenticated packet arrived, the round-trip \
               time of the last probe, and the bytes and packets sent and received.",
        parse: |spec, args| spec.no_args(args, Request::ListTransports),
    },
    CommandSpec {
        name: "add_neighbour",
        aliases: &[],
        role: ADMIN,
        usage: "add_neighbour KEY [ENDPOINT]",
        summary: "add a transport to a neighbour while the node runs",
        help: "Adds a neighbour by public key KEY: the node accepts a WireGuard transport with \
               it and probes its link at once. ENDPOINT (an IP address and port, like \
               192.0.2.1:7777 or [2001:db8::1]:7777) says where to reach it; without one, the \
               node waits for the neighbour to call. The change is not written to the config \
               file: the next reload or restart undoes it unless the file says the same.",
        parse: parse_add_neighbour,
    },
    CommandSpec {
        name: "rm_neighbour",
        aliases: &[],
        role: ADMIN,
        usage: "rm_neighbour KEY",
        summary: "remove a neighbour's transport while the node runs",
        help: "Removes the transport to the neighbour with public key KEY, and what ran over \
               it as when its link dies: the routes this node is an end of through it go down \
               (the apps that used them rebuild them as after a link failure), the routes it \
               relayed to it are reported down to their other end, and the neighbour finds \
               out as from a dead link. The change is not written to the config file: the next \
               reload or restart undoes it unless the file says the same.",
        parse: |spec, args| {
            let key = spec.one_key(args)?;
            Ok(Request::RemoveNeighbour { key }.into())
        },
    },
    CommandSpec {
        name: "list_routes",
        aliases: &["lr"],
        role: READ_ONLY,
        usage: "list_routes",
        summary: "the routes this node is an end of, and its routing table",
        help: "Lists the routes this node is an end of (the other end, the path, whether this \
               node set it up, whether its end-to-end session is ready, and the route ids in \
               each direction), then every rule of the routing table: the route id it \
               matches, forward or consume, the neighbour packets must come from, where they \
               go, how much used it and when it expires unless refreshed.",
        parse: |spec, args| spec.no_args(args, Request::ListRoutes),
    },
    CommandSpec {
        name: "build_route",
        aliases: &["br"],
        role: ADMIN,
        usage: "build_route [N0 N1 …] KEY",
        summary: "set up a route to a node, over the path it finds or one given",
        help: "With one key (44 characters of base64, as `skywired pubkey` prints), sets up a \
               route to that node over the lowest-cost path this node knows (the one \
               `find_route KEY` shows); when a link on it dies, the node rebuilds the route \
               over another path without a new handshake. With more keys, sets up the route \
               hop by hop along exactly those nodes, the last one the destination, and keeps \
               it there: when it breaks it is reported down. N0 may be this node or the first \
               hop: this node is put first when it is missing (`build_route SELF KEY` is a \
               direct route to a neighbour). Answers once the route's end-to-end session is \
               ready, or names the hop that refused it.",
        parse: parse_build_route,
    },
    CommandSpec {
        name: "find_route",
        aliases: &["fr"],
        role: READ_ONLY,
        usage: "find_route KEY",
        summary: "the path a route to a node would take, and its cost",
        help: "Shows the lowest-cost path from this node to the node with public key KEY over \
               the links that are alive, as the nodes' adverts tell them, without building \
               it: each hop and its link's cost (the larger of the round-trip times the \
               link's two ends measured), the total, and the path of the route in use to that \
               node, if there is one. A node that no advert names, or that no live link \
               reaches, has no path.",
        parse: |spec, args| {
            let peer = spec.one_key(args)?;
            Ok(Request::FindRoute { peer }.into())
        },
    },
    CommandSpec {
        name: "list_nodes",
        aliases: &["ln"],
        role: READ_ONLY,
        usage: "list_nodes",
        summary: "the known graph: nodes, services, links, costs, advert ages",
        help: "Lists every node whose advert this node holds (this node's own included): its \
               key, how many links it advertises, its advert's age, when the advert expires \
               unless a newer one comes, its sequence number and the services it advertises \
               (`name:port`); then every advertised link with the round-trip time each end \
               measured and its cost, `-` while only one end advertises it (such a link is \
               not used); then the adverts this node sent and those it dropped, by reason.",
        parse: |spec, args| spec.no_args(args, Request::ListNodes),
    },
    CommandSpec {
        name: "rm_route",
        aliases: &["rr"],
        role: ADMIN,
        usage: "rm_route KEY",
        summary: "tear down the route to a node",
        help: "Tears down the route to the node with public key KEY: every hop drops its \
               rules, and the other end learns that the route is gone.",
        parse: |spec, args| {
            let peer = spec.one_key(args)?;
            Ok(Request::RemoveRoute { peer }.into())
        },
    },
    CommandSpec {
        name: "ping_node",
        aliases: &["pn"],
        role: READ_ONLY,
        usage: "ping_node KEY [COUNT]",
        summary: "ping a node over its route (ICMPv6 echo)",
        help: "Sends COUNT echo requests (4 unless given, at most 100) to the mesh address of \
               the node with public key KEY, over the route to it, and shows each reply's \
               round-trip time and a summary. When there is no route to the node, one is set \
               up first over the lowest-cost path, as `build_route KEY` does, and stays; one \
               being set up or repaired is waited for, and no second setup starts beside it.",
        parse: parse_ping_node,
    },
    CommandSpec {
        name: "services",
        aliases: &[],
        role: READ_ONLY,
        usage: "services [NAME]",
        summary: "who offers which service, and what the path there costs",
        help: "Lists the services that the nodes' adverts offer (only those called NAME, when \
               given): the built-in apps that run (socks-server, vpn-server, messenger) and the \
               services that launched apps listen as (`listen PORT SERVICE` on the app \
               socket). Each row names the node that offers it, its mesh port, and the cost \
               of the lowest-cost path there (the sum of its links' round-trip times) with its \
               hops; this node's own services cost nothing. An advert says that a service \
               exists, not who may use it.",
        parse: parse_services,
    },
    CommandSpec {
        name: "vpn",
        aliases: &[],
        role: APP_SWITCH,
        usage: "vpn start|stop [client|server] | vpn status",
        summary: "start or stop the VPN apps, or show their state",
        help: "`vpn start` and `vpn stop` start and stop the VPN client (or, with `server`, the \
               VPN server) as the config's `vpn` section describes it: the app's TUN device \
               is created at start and removed at stop, with its routes. `vpn status` shows \
               each configured app's state, the addresses its server gave (or its own and its \
               clients'), and its packet counters. The VPN needs CAP_NET_ADMIN.",
        parse: parse_vpn,
    },
    CommandSpec {
        name: "socks",
        aliases: &[],
        role: APP_SWITCH,
        usage: "socks start|stop|status [client|server]",
        summary: "start, stop or show the SOCKS apps",
        help: "`socks status` shows the SOCKS client app (the local SOCKS5 port, its exit and \
               the route to it) and the server app (the mesh port and how many client keys it \
               serves): whether each runs, its open connections, connections accepted, \
               refused (a node not allowed), denied (a target the dial policy does not let \
               the exit reach) and failed, bytes each way and bytes buffered. `socks start` and \
               `socks stop` start or stop both configured apps, or only `client` or `server`; \
               stopping closes the app's connections. The apps are configured in the \
               config's `socks` section.",
        parse: parse_socks,
    },
    CommandSpec {
        name: "msg",
        aliases: &[],
        // Messages are private: reading them is the administrators' as much as sending.
        role: ADMIN,
        usage: "msg send KEY TEXT… | msg inbox [KEY] | msg outbox [KEY] | msg watch",
        summary: "send a message to a node by its key, or read the messages",
        help: "`msg send KEY TEXT` delivers TEXT (the words after the key, joined by one space; \
               quote it to keep its spacing or a `#`) to the messenger of the node with public \
               key KEY, over a route built with an automatic path if none is up, and answers \
               once that node has stored it on its disk, or says why it could not be delivered \
               within messenger.send_timeout_ms (no route, refused, no answer). It does not \
               queue messages for later. `msg inbox` lists the messages received (sender, time, \
               text), `msg outbox` those sent and stored by their recipient, each the newest \
               1000, only those from or to KEY when it is given. `msg watch` turns the \
               connection into a stream of the messages as they arrive, until `.detach` or \
               the end of input. The messenger runs when the config has a `messenger:` section.",
        parse: parse_msg,
    },
    CommandSpec {
        name: "reload",
        aliases: &[],
        role: ADMIN,
        usage: "reload",
        summary: "make the running node match its config file, as SIGHUP does",
        help: "Reads the config file again and applies what changed, leaving the rest running: \
               neighbours added, removed or with a new endpoint or keepalive, the liveness and \
               route settings, log_level, the groups of the control socket, the SOCKS and VPN \
               sections (only the app whose section changed restarts) and the apps catalog \
               (launched apps run on). A file that is not valid changes nothing: the reply \
               says what is wrong. Keys that only a restart can change (listen, node.*, \
               control.socket, control.signal_port) are named, and the rest still applies; \
               then, as when a change fails, the command fails after saying what it did.",
        parse: |spec, args| spec.no_args(args, Command::Reload),
    },
    CommandSpec {
        name: "apps",
        aliases: &[],
        role: READ_ONLY,
        usage: "apps",
        summary: "the launchable apps of the catalog: name and description",
        help: "Lists the apps of the config's `apps:` catalog that `start` can launch, with \
               their descriptions; daemon apps (restarted when they exit) are marked. \
               `help APP` shows an app's default arguments and help text.",
        parse: |spec, args| spec.no_args(args, AppCommand::Apps),
    },
    CommandSpec {
        name: "start",
        aliases: &["s"],
        role: ADMIN,
        usage: "start [-a] APP [ARGS…]",
        summary: "launch an app of the catalog under a new id",
        help: "Launches catalog app APP with ARGS, or with its `default_args` when no ARGS \
               are given, and answers with its new id (ids count up from 1 and are never \
               reused while skywired runs) and the command line it runs. The app runs in the \
               config's folder with SIGNAL_CLIENT=true, SIGNAL_CLIENT_ID and \
               SIGNAL_SERVER_ADDRESS set, so that a signal client can register. With -a, the \
               connection then streams the app's output and sends it input lines, as \
               `attach` does.",
        parse: parse_start,
    },
    CommandSpec {
        name: "list_apps",
        aliases: &["la"],
        role: READ_ONLY,
        usage: "list_apps [-f]",
        summary: "the launched apps: id, name, state, pid, restarts, uptime",
        help: "Lists the apps this skywired launched that have not exited: id, catalog name, \
               state (running, stopping, waiting to restart), pid, whether it registered over \
               the signal protocol, restarts and uptime. With -f (full), apps that have \
               exited are listed too (the last 32), with each app's command line and how its \
               last process ended.",
        parse: parse_list_apps,
    },
    CommandSpec {
        name: "ping",
        aliases: &[],
        role: READ_ONLY,
        usage: "ping ID",
        summary: "an app's signal round trip, in milliseconds",
        help: "Sends a ping over the signal protocol to app ID and shows the round-trip time. \
               The app must be a signal client that has registered (`list_apps` shows it); \
               an app that does not answer within 10 s is reported. To ping a mesh node, use \
               ping_node.",
        parse: |spec, args| {
            Ok(AppCommand::Ping {
                id: spec.one_id(args)?,
            }
            .into())
        },
    },
    CommandSpec {
        name: "res_usage",
        aliases: &["ru"],
        role: READ_ONLY,
        usage: "res_usage ID",
        summary: "an app's CPU, memory, threads, open files, uptime and restarts",
        help: "Shows app ID's resource usage read from /proc: CPU use since the previous \
               res_usage (or since it started) in percent of one core, resident memory, \
               threads, open files, uptime and restarts; then what the app reports about \
               itself over the signal protocol, or why it did not.",
        parse: |spec, args| {
            Ok(AppCommand::ResUsage {
                id: spec.one_id(args)?,
            }
            .into())
        },
    },
    CommandSpec {
        name: "shutdown",
        aliases: &["sd"],
        role: ADMIN,
        usage: "shutdown ID",
        summary: "stop an app: signal shutdown, then SIGTERM, then SIGKILL",
        help: "Stops app ID and answers once its process is reaped. A registered signal \
               client is asked to shut down over the signal protocol and has 12 s to exit \
               (Viscript's library exits 10 s after answering); an app that is not a signal \
               client, or has not exited by then, gets SIGTERM, and 3 s later SIGKILL, sent \
               to its whole process group. A daemon app is not restarted after it. The reply \
               says what stopped it.",
        parse: |spec, args| {
            Ok(AppCommand::Shutdown {
                id: spec.one_id(args)?,
            }
            .into())
        },
    },
    CommandSpec {
        name: "attach",
        aliases: &[],
        role: ADMIN,
        usage: "attach ID",
        summary: "stream an app's output and send it input, until detached",
        help: "Attaches the connection to app ID: from then on, every line the app writes \
               comes as a reply line (`result.output` with its stream and text), and every \
               line sent is written to the app's standard input, until the line `.detach` \
               is sent, the connection ends, or the app exits for good (a daemon app's \
               restart keeps the stream). The stream ends with a reply holding \
               `result.detached`. visctl attach ID forwards its standard input and prints \
               the output; end of input (Ctrl-D) detaches.",
        parse: |spec, args| {
            Ok(AppCommand::Attach {
                id: spec.one_id(args)?,
            }
            .into())
        },
    },
    CommandSpec {
        name: "logs",
        aliases: &[],
        role: READ_ONLY,
        usage: "logs ID [N]",
        summary: "an app's last output lines",
        help: "Shows the last N lines (20 unless given, at most 1000) that app ID wrote to its \
               standard output and standard error (marked `[stderr]`), oldest first. \
               skywired keeps the last 1000 lines of each app, also after it exited.",
        parse: parse_logs,
    },
];

fn parse_help(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=1)?;
    let Some(name) = args.first() else {
        return Ok(LocalCommand::Help { topic: None }.into());
    };
    if let Some(topic) = super::find(name) {
        return Ok(LocalCommand::Help { topic: Some(topic) }.into());
    }
    if catalog::is_app_name(name) {
        return Ok(AppCommand::HelpApp { name: name.clone() }.into());
    }
    Err(spec.usage_error(format!(
        "there is no command or app `{}`: run `help` to list the commands and `apps` to list the apps",
        shorten(name)
    )))
}

fn parse_build_route(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    if args.is_empty() {
        return Err(spec.usage_error(
            "needs the destination's key, after the path's other node keys to keep to a path",
        ));
    }
    let path = args
        .iter()
        .map(|word| spec.key(word))
        .collect::<Result<Vec<_>, _>>()?;
    if let [peer] = path[..] {
        return Ok(Request::BuildRouteTo { peer }.into());
    }
    Ok(Request::BuildRoute { path }.into())
}

fn parse_add_neighbour(
    spec: &'static CommandSpec,
    args: &[String],
) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let key = spec.key(&args[0])?;
    let endpoint = args.get(1).map(|word| spec.endpoint(word)).transpose()?;
    Ok(Request::AddNeighbour(NeighbourConfig {
        key,
        endpoint,
        keepalive: None,
    })
    .into())
}

fn parse_ping_node(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let peer = spec.key(&args[0])?;
    let count = spec.count(args.get(1), "COUNT", DEFAULT_PING_COUNT, MAX_PING_COUNT)?;
    Ok(Request::PingNode { peer, count }.into())
}

fn parse_services(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=1)?;
    let name = args
        .first()
        .map(|word| {
            word.parse::<ServiceName>().map_err(|error| {
                spec.usage_error(format!(
                    "`{}` is not a service name: {error}",
                    shorten(word)
                ))
            })
        })
        .transpose()?;
    Ok(Request::Services { name }.into())
}

fn parse_vpn(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let app = match args.get(1).map(String::as_str) {
        None | Some("client") => VpnApp::Client,
        Some("server") => VpnApp::Server,
        Some(other) => {
            return Err(spec.usage_error(format!(
                "`{}` is not a VPN app: say client or server",
                shorten(other)
            )))
        }
    };
    let request = match args[0].as_str() {
        "start" => Request::VpnStart { app },
        "stop" => Request::VpnStop { app },
        "status" if args.len() == 1 => Request::VpnStatus,
        "status" => return Err(spec.usage_error("`vpn status` takes no app: it shows both")),
        other => {
            return Err(
                spec.usage_error(format!("`{}` is not start, stop or status", shorten(other)))
            )
        }
    };
    Ok(request.into())
}

fn parse_socks(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let app = match args.get(1).map(String::as_str) {
        None => None,
        Some("client") => Some(SocksApp::Client),
        Some("server") => Some(SocksApp::Server),
        Some(other) => {
            return Err(spec.usage_error(format!("`{}` is not client or server", shorten(other))))
        }
    };
    let request = match args[0].as_str() {
        "start" => Request::SocksStart { app },
        "stop" => Request::SocksStop { app },
        "status" => Request::SocksStatus,
        other => {
            return Err(
                spec.usage_error(format!("`{}` is not start, stop or status", shorten(other)))
            )
        }
    };
    Ok(request.into())
}

fn parse_msg(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    let Some((subcommand, rest)) = args.split_first() else {
        return Err(spec.usage_error("needs send, inbox, outbox or watch"));
    };
    let list = |mailbox| -> Result<Command, CommandError> {
        if rest.len() > 1 {
            return Err(spec.usage_error(format!(
                "`msg {mailbox}` takes at most one node key, not {} words",
                rest.len()
            )));
        }
        let peer = rest.first().map(|word| spec.key(word)).transpose()?;
        Ok(Request::Messenger(MessengerRequest::List { mailbox, peer }).into())
    };
    match subcommand.as_str() {
        "send" => {
            let Some((key, words)) = rest.split_first() else {
                return Err(spec.usage_error("`msg send` needs the recipient's key and the text"));
            };
            let peer = spec.key(key)?;
            if words.is_empty() {
                return Err(spec.usage_error("`msg send` needs the text after the key"));
            }
            let text = words.join(" ");
            Ok(Request::Messenger(MessengerRequest::Send { peer, text }).into())
        }
        "inbox" => list(Mailbox::Inbox),
        "outbox" => list(Mailbox::Outbox),
        "watch" if rest.is_empty() => Ok(Request::Messenger(MessengerRequest::Watch).into()),
        "watch" => Err(spec.usage_error("`msg watch` takes no arguments")),
        other => Err(spec.usage_error(format!(
            "`{}` is not send, inbox, outbox or watch",
            shorten(other)
        ))),
    }
}

fn parse_start(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    let (attach, rest) = match args.split_first() {
        Some((flag, rest)) if flag == "-a" => (true, rest),
        _ => (false, args),
    };
    let Some((app, app_args)) = rest.split_first() else {
        return Err(spec.usage_error("needs the name of an app: `apps` lists them"));
    };
    if app.starts_with('-') {
        return Err(spec.usage_error(format!(
            "unknown option `{}`: the only option is -a (attach), before the app's name",
            shorten(app)
        )));
    }
    if !catalog::is_app_name(app) {
        return Err(spec.usage_error(format!(
            "`{}` is not an app name: `apps` lists them",
            shorten(app)
        )));
    }
    Ok(AppCommand::Start {
        app: app.clone(),
        args: (!app_args.is_empty()).then(|| app_args.to_vec()),
        attach,
    }
    .into())
}

fn parse_list_apps(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=1)?;
    let full = match args.first().map(String::as_str) {
        None => false,
        Some("-f") => true,
        Some(other) => {
            return Err(spec.usage_error(format!(
            "unknown option `{}`: the only option is -f (full: exited apps and command lines too)",
            shorten(other)
        )))
        }
    };
    Ok(AppCommand::ListApps { full }.into())
}

fn parse_logs(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let id = spec.app_id(&args[0])?;
    let count = spec.count(args.get(1), "N", DEFAULT_LOG_LINES, MAX_LOG_LINES)?;
    Ok(AppCommand::Logs { id, count }.into())
}
