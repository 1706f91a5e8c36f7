//! Viscript commands: the words of one line (quotes, escapes, comments), the command table that
//! `help` prints, and the parse from words to a [`Command`], which the control thread answers
//! itself (`help`), runs through the app supervisor (the app commands) or turns into a
//! dataplane [`Request`].

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Serialize;
use skywire_dataplane::api::{Request, VpnApp};
use skywire_dataplane::socks::SocksApp;
use skywire_dataplane::NodeKey;

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

/// The line that ends an `attach` (or `start -a`) and brings the connection back to commands.
pub const DETACH_LINE: &str = ".detach";

/// Names longer than this get no suggestion (no command name is near).
const MAX_SUGGESTED_NAME: usize = 32;

/// How much of a user's word an error message repeats.
const MAX_QUOTED_WORD: usize = 60;

/// Why a line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// A quote was opened and never closed.
    #[error("the {} quote opened at column {column} is not closed: close it, or escape a double quote inside double quotes as \\\"", quote_name(*.quote))]
    UnterminatedQuote {
        /// `'` or `"`.
        quote: char,
        /// Where it opens, counted in characters from 1.
        column: usize,
    },
    /// A backslash inside double quotes is followed by a character it does not escape.
    #[error("unknown escape \\{escape} at column {column}: inside double quotes write \\\\ for a backslash, \\\" for a double quote, \\n for a new line, \\t for a tab")]
    UnknownEscape {
        /// The character after the backslash.
        escape: char,
        /// Where the backslash is, counted in characters from 1.
        column: usize,
    },
}

fn quote_name(quote: char) -> &'static str {
    if quote == '\'' {
        "single"
    } else {
        "double"
    }
}

/// Splits a line into words.
///
/// Words are separated by white space. Inside single quotes every character is itself; inside
/// double quotes a backslash escapes `\`, `"`, `'`, and writes a new line, tab or carriage return
/// as `\n`, `\t`, `\r`. Quoted and unquoted parts next to each other make one word, and `""` is an
/// empty word. A `#` that starts a word starts a comment, which runs to the end of the line.
/// Outside quotes a backslash is an ordinary character.
pub fn tokenize(line: &str) -> Result<Vec<String>, SyntaxError> {
    let mut words = Vec::new();
    let mut chars = line.chars().enumerate().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some((_, '#')) => return Ok(words),
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some((index, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
            match c {
                '\'' => loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => word.push(c),
                        None => {
                            return Err(SyntaxError::UnterminatedQuote {
                                quote: '\'',
                                column: index + 1,
                            })
                        }
                    }
                },
                '"' => loop {
                    let unterminated = SyntaxError::UnterminatedQuote {
                        quote: '"',
                        column: index + 1,
                    };
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((backslash, '\\')) => match chars.next() {
                            Some((_, escaped @ ('\\' | '"' | '\''))) => word.push(escaped),
                            Some((_, 'n')) => word.push('\n'),
                            Some((_, 't')) => word.push('\t'),
                            Some((_, 'r')) => word.push('\r'),
                            Some((_, escape)) => {
                                return Err(SyntaxError::UnknownEscape {
                                    escape,
                                    column: backslash + 1,
                                })
                            }
                            None => return Err(unterminated),
                        },
                        Some((_, c)) => word.push(c),
                        None => return Err(unterminated),
                    }
                },
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// Writes `word` so that [`tokenize`] reads it back as one word: as it is when it needs no
/// quoting, in double quotes with escapes otherwise.
pub fn quote(word: &str) -> Cow<'_, str> {
    let plain = !word.is_empty()
        && !word.starts_with('#')
        && !word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\'' || c == '"');
    if plain {
        return Cow::Borrowed(word);
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('"');
    for c in word.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Cow::Owned(quoted)
}

/// Joins words into one line that [`tokenize`] splits back into the same words.
pub fn join_words<S: AsRef<str>>(words: &[S]) -> String {
    let mut line = String::new();
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push_str(&quote(word.as_ref()));
    }
    line
}

/// One entry of the command table: what `help` prints and how the arguments are read.
#[derive(Debug, Serialize)]
pub struct CommandSpec {
    /// The command's name.
    pub name: &'static str,
    /// Shorter names for it.
    pub aliases: &'static [&'static str],
    /// The command line, with its arguments in capitals.
    pub usage: &'static str,
    /// What it does, in a few words.
    pub summary: &'static str,
    /// What it does, its arguments and what it answers.
    pub help: &'static str,
    #[serde(skip)]
    parse: fn(&'static CommandSpec, &[String]) -> Result<Command, CommandError>,
}

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

    fn key(&'static self, word: &str) -> Result<NodeKey, CommandError> {
        word.parse().map_err(|_| CommandError::BadKey {
            command: self.name,
            word: shorten(word),
        })
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

/// A word as an error message repeats it: at most [`MAX_QUOTED_WORD`] characters.
fn shorten(word: &str) -> String {
    match word.char_indices().nth(MAX_QUOTED_WORD) {
        Some((cut, _)) => format!("{}…", &word[..cut]),
        None => word.to_owned(),
    }
}

/// Every command, in the order `help` lists them.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        aliases: &["h", "?"],
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
        usage: "status",
        summary: "the node at a glance: key, mesh address, UDP address, uptime, counts",
        help: "Shows this node's public key (its name), its mesh address, the UDP address it \
               is bound to (with the real port when the config says 0), how long the \
               dataplane has run, and how many transports, links up, routes and routing \
               rules it has.",
        parse: parse_status,
    },
    CommandSpec {
        name: "list_transports",
        aliases: &["lt"],
        usage: "list_transports",
        summary: "the neighbours' transports: link state, latency, counters",
        help: "One row per configured neighbour: its key, the endpoint its packets go to, \
               whether its link is up (liveness probes answered), when the last WireGuard \
               handshake completed and the last authenticated packet arrived, the round-trip \
               time of the last probe, and the bytes and packets sent and received.",
        parse: parse_list_transports,
    },
    CommandSpec {
        name: "list_routes",
        aliases: &["lr"],
        usage: "list_routes",
        summary: "the routes this node is an end of, and its routing table",
        help: "Lists the routes this node is an end of (the other end, the path, whether this \
               node set it up, whether its end-to-end session is ready, and the route ids in \
               each direction), then every rule of the routing table: the route id it \
               matches, forward or consume, the neighbour packets must come from, where they \
               go, how much used it and when it expires unless refreshed.",
        parse: parse_list_routes,
    },
    CommandSpec {
        name: "build_route",
        aliases: &["br"],
        usage: "build_route N0 N1 …",
        summary: "set up a route along a path of node keys",
        help: "Sets up a route hop by hop along the nodes given by public key (44 characters \
               of base64, as `skywired pubkey` prints). N0 may be this node or the first hop: \
               this node is put first when it is missing. The last key is the destination. \
               Answers once the route's end-to-end session is ready, or names the hop that \
               refused it.",
        parse: parse_build_route,
    },
    CommandSpec {
        name: "rm_route",
        aliases: &["rr"],
        usage: "rm_route KEY",
        summary: "tear down the route to a node",
        help: "Tears down the route to the node with public key KEY: every hop drops its \
               rules, and the other end learns that the route is gone.",
        parse: parse_rm_route,
    },
    CommandSpec {
        name: "ping_node",
        aliases: &["pn"],
        usage: "ping_node KEY [COUNT]",
        summary: "ping a node over its route (ICMPv6 echo)",
        help: "Sends COUNT echo requests (4 unless given, at most 100) to the mesh address of \
               the node with public key KEY, over the route to it, and shows each reply's \
               round-trip time and a summary. Set up a route first with build_route.",
        parse: parse_ping_node,
    },
    CommandSpec {
        name: "vpn",
        aliases: &[],
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
        usage: "socks start|stop|status [client|server]",
        summary: "start, stop or show the SOCKS apps",
        help: "`socks status` shows the SOCKS client app (the local SOCKS5 port, its exit and \
               the route to it) and the server app (the mesh port and how many client keys it \
               serves): whether each runs, its open connections, connections accepted, \
               refused and failed, bytes each way and bytes buffered. `socks start` and \
               `socks stop` start or stop both configured apps, or only `client` or `server`; \
               stopping closes the app's connections. The apps are configured in the \
               config's `socks` section.",
        parse: parse_socks,
    },
    CommandSpec {
        name: "apps",
        aliases: &[],
        usage: "apps",
        summary: "the launchable apps of the catalog: name and description",
        help: "Lists the apps of the config's `apps:` catalog that `start` can launch, with \
               their descriptions; daemon apps (restarted when they exit) are marked. \
               `help APP` shows an app's default arguments and help text.",
        parse: parse_apps,
    },
    CommandSpec {
        name: "start",
        aliases: &["s"],
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
        usage: "ping ID",
        summary: "an app's signal round trip, in milliseconds",
        help: "Sends a ping over the signal protocol to app ID and shows the round-trip time. \
               The app must be a signal client that has registered (`list_apps` shows it); \
               an app that does not answer within 10 s is reported. To ping a mesh node, use \
               ping_node.",
        parse: parse_ping,
    },
    CommandSpec {
        name: "res_usage",
        aliases: &["ru"],
        usage: "res_usage ID",
        summary: "an app's CPU, memory, threads, open files, uptime and restarts",
        help: "Shows app ID's resource usage read from /proc: CPU use since the previous \
               res_usage (or since it started) in percent of one core, resident memory, \
               threads, open files, uptime and restarts; then what the app reports about \
               itself over the signal protocol, or why it did not.",
        parse: parse_res_usage,
    },
    CommandSpec {
        name: "shutdown",
        aliases: &["sd"],
        usage: "shutdown ID",
        summary: "stop an app: signal shutdown, then SIGTERM, then SIGKILL",
        help: "Stops app ID and answers once its process is reaped. A registered signal \
               client is asked to shut down over the signal protocol and has 12 s to exit \
               (Viscript's library exits 10 s after answering); an app that is not a signal \
               client, or has not exited by then, gets SIGTERM, and 3 s later SIGKILL, sent \
               to its whole process group. A daemon app is not restarted after it. The reply \
               says what stopped it.",
        parse: parse_shutdown,
    },
    CommandSpec {
        name: "attach",
        aliases: &[],
        usage: "attach ID",
        summary: "stream an app's output and send it input, until detached",
        help: "Attaches the connection to app ID: from then on, every line the app writes \
               comes as a reply line (`result.output` with its stream and text), and every \
               line sent is written to the app's standard input, until the line `.detach` \
               is sent, the connection ends, or the app exits for good (a daemon app's \
               restart keeps the stream). The stream ends with a reply holding \
               `result.detached`. visctl attach ID forwards its standard input and prints \
               the output; end of input (Ctrl-D) detaches.",
        parse: parse_attach,
    },
    CommandSpec {
        name: "logs",
        aliases: &[],
        usage: "logs ID [N]",
        summary: "an app's last output lines",
        help: "Shows the last N lines (20 unless given, at most 1000) that app ID wrote to its \
               standard output and standard error (marked `[stderr]`), oldest first. \
               skywired keeps the last 1000 lines of each app, also after it exited.",
        parse: parse_logs,
    },
];

/// The command called `name` (its name or an alias).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|spec| spec.is_called(name))
}

/// A command with its arguments read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Lists the commands, or explains `topic`.
    Help {
        /// The command to explain.
        topic: Option<&'static CommandSpec>,
    },
    /// Explains an app of the catalog (`help APP`); the catalog is the control thread's, so
    /// the name is checked there.
    HelpApp {
        /// The name given.
        name: String,
    },
    /// Asks for the node at a glance.
    Status,
    /// Asks for the transports.
    ListTransports,
    /// Asks for the routes and the routing table.
    ListRoutes,
    /// Sets up a route along `path`.
    BuildRoute {
        /// The nodes, by key; this node may be missing at the front.
        path: Vec<NodeKey>,
    },
    /// Tears down the route to `peer`.
    RemoveRoute {
        /// The route's other end.
        peer: NodeKey,
    },
    /// Pings `peer` `count` times.
    PingNode {
        /// The node to ping.
        peer: NodeKey,
        /// Echo requests to send, 1 to [`MAX_PING_COUNT`].
        count: u32,
    },
    /// Starts a VPN app.
    VpnStart {
        /// Which one.
        app: VpnApp,
    },
    /// Stops a VPN app.
    VpnStop {
        /// Which one.
        app: VpnApp,
    },
    /// Asks for the VPN apps' state.
    VpnStatus,
    /// Starts, stops or shows the SOCKS apps.
    Socks {
        /// What to do.
        action: SocksAction,
        /// The app, or both.
        app: Option<SocksApp>,
    },
    /// Lists the catalog.
    Apps,
    /// Launches a catalog app.
    Start {
        /// Its catalog name.
        app: String,
        /// Its arguments; `None` for its `default_args`.
        args: Option<Vec<String>>,
        /// Attach to it once started (`-a`).
        attach: bool,
    },
    /// Lists the launched apps.
    ListApps {
        /// Include exited apps, command lines and exit statuses (`-f`).
        full: bool,
    },
    /// Pings an app over the signal protocol.
    Ping {
        /// The app.
        id: AppId,
    },
    /// Measures an app.
    ResUsage {
        /// The app.
        id: AppId,
    },
    /// Stops an app.
    Shutdown {
        /// The app.
        id: AppId,
    },
    /// Streams an app's output and feeds its input.
    Attach {
        /// The app.
        id: AppId,
    },
    /// Shows an app's last output lines.
    Logs {
        /// The app.
        id: AppId,
        /// How many lines, 1 to [`MAX_LOG_LINES`].
        count: usize,
    },
}

/// What `socks` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocksAction {
    /// Starts the app(s).
    Start,
    /// Stops the app(s).
    Stop,
    /// Shows them.
    Status,
}

impl PartialEq for CommandSpec {
    fn eq(&self, other: &CommandSpec) -> bool {
        self.name == other.name
    }
}

impl Eq for CommandSpec {}

impl Command {
    /// The command's name in the table (never an alias).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help { .. } | Command::HelpApp { .. } => "help",
            Command::Status => "status",
            Command::ListTransports => "list_transports",
            Command::ListRoutes => "list_routes",
            Command::BuildRoute { .. } => "build_route",
            Command::RemoveRoute { .. } => "rm_route",
            Command::PingNode { .. } => "ping_node",
            Command::VpnStart { .. } | Command::VpnStop { .. } | Command::VpnStatus => "vpn",
            Command::Socks { .. } => "socks",
            Command::Apps => "apps",
            Command::Start { .. } => "start",
            Command::ListApps { .. } => "list_apps",
            Command::Ping { .. } => "ping",
            Command::ResUsage { .. } => "res_usage",
            Command::Shutdown { .. } => "shutdown",
            Command::Attach { .. } => "attach",
            Command::Logs { .. } => "logs",
        }
    }

    /// Whether the app supervisor runs this command (the catalog, the launched apps, and
    /// `help APP`).
    pub fn is_app_command(&self) -> bool {
        matches!(
            self,
            Command::HelpApp { .. }
                | Command::Apps
                | Command::Start { .. }
                | Command::ListApps { .. }
                | Command::Ping { .. }
                | Command::ResUsage { .. }
                | Command::Shutdown { .. }
                | Command::Attach { .. }
                | Command::Logs { .. }
        )
    }

    /// What to ask the dataplane, or `None` when the control thread answers by itself (with
    /// the supervisor for the app commands).
    pub fn request(&self) -> Option<Request> {
        match self {
            Command::Help { .. }
            | Command::HelpApp { .. }
            | Command::Apps
            | Command::Start { .. }
            | Command::ListApps { .. }
            | Command::Ping { .. }
            | Command::ResUsage { .. }
            | Command::Shutdown { .. }
            | Command::Attach { .. }
            | Command::Logs { .. } => None,
            Command::Status => Some(Request::Status),
            Command::ListTransports => Some(Request::ListTransports),
            Command::ListRoutes => Some(Request::ListRoutes),
            Command::BuildRoute { path } => Some(Request::BuildRoute { path: path.clone() }),
            Command::RemoveRoute { peer } => Some(Request::RemoveRoute { peer: *peer }),
            Command::Socks { action, app } => Some(match action {
                SocksAction::Start => Request::SocksStart { app: *app },
                SocksAction::Stop => Request::SocksStop { app: *app },
                SocksAction::Status => Request::SocksStatus,
            }),
            Command::PingNode { peer, count } => Some(Request::PingNode {
                peer: *peer,
                count: *count,
            }),
            Command::VpnStart { app } => Some(Request::VpnStart { app: *app }),
            Command::VpnStop { app } => Some(Request::VpnStop { app: *app }),
            Command::VpnStatus => Some(Request::VpnStatus),
        }
    }
}

/// Why a line is not a command that can be run. The messages do not repeat the command's name:
/// [`CommandError::command`] gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The line could not be split into words.
    #[error("{0}")]
    Syntax(#[from] SyntaxError),
    /// No command has this name.
    #[error("unknown command `{name}`{}: run `help` to list the commands", suggestion.map(|known| format!(" (did you mean `{known}`?)")).unwrap_or_default())]
    Unknown {
        /// The name given, shortened if long.
        name: String,
        /// A command with a similar name.
        suggestion: Option<&'static str>,
    },
    /// The arguments do not fit the command.
    #[error("{problem}; usage: {usage}")]
    Usage {
        /// The command.
        command: &'static str,
        /// Its usage line.
        usage: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// An argument that should be a node key is not one.
    #[error(
        "`{word}` is not a node key: a key is 44 characters of base64, as `skywired pubkey` prints"
    )]
    BadKey {
        /// The command.
        command: &'static str,
        /// The word given, shortened if long.
        word: String,
    },
}

impl CommandError {
    /// The command the line named, when it named a known one.
    pub fn command(&self) -> Option<&'static str> {
        match self {
            CommandError::Syntax(_) | CommandError::Unknown { .. } => None,
            CommandError::Usage { command, .. } | CommandError::BadKey { command, .. } => {
                Some(command)
            }
        }
    }
}

/// Reads one line of viscript: `Ok(None)` for a line with nothing to run (blank, or a comment).
pub fn parse(line: &str) -> Result<Option<Command>, CommandError> {
    let words = tokenize(line)?;
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    match find(name) {
        Some(spec) => spec.parse(args).map(Some),
        None => Err(CommandError::Unknown {
            name: shorten(name),
            suggestion: suggest(name),
        }),
    }
}

/// The known name closest to a mistyped one, when one is close enough to be what was meant.
fn suggest(name: &str) -> Option<&'static str> {
    // Longer than any name by more than the distance allowed: nothing to compare.
    if !(2..=MAX_SUGGESTED_NAME).contains(&name.chars().count()) {
        return None;
    }
    COMMANDS
        .iter()
        .flat_map(|spec| {
            std::iter::once(&spec.name)
                .chain(spec.aliases)
                .map(move |called| (spec, called))
        })
        .filter(|(_, called)| called.len() > 2)
        .map(|(spec, called)| (edit_distance(name, called), spec.name))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let deletion = previous[j + 1] + 1;
            let insertion = current[j] + 1;
            current.push(substitution.min(deletion).min(insertion));
        }
        previous = current;
    }
    previous[b.len()]
}

fn parse_help(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=1)?;
    let Some(name) = args.first() else {
        return Ok(Command::Help { topic: None });
    };
    if let Some(topic) = find(name) {
        return Ok(Command::Help { topic: Some(topic) });
    }
    if catalog::is_app_name(name) {
        return Ok(Command::HelpApp { name: name.clone() });
    }
    Err(spec.usage_error(format!(
        "there is no command or app `{}`: run `help` to list the commands and `apps` to list the apps",
        shorten(name)
    )))
}

/// An app id: a whole number from 1 on.
fn app_id(spec: &'static CommandSpec, word: &str) -> Result<AppId, CommandError> {
    match word.parse::<AppId>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(spec.usage_error(format!(
            "`{}` is not an app id: ids are the numbers that `start` answers and `list_apps` shows",
            shorten(word)
        ))),
    }
}

fn parse_apps(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=0)?;
    Ok(Command::Apps)
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
    Ok(Command::Start {
        app: app.clone(),
        args: (!app_args.is_empty()).then(|| app_args.to_vec()),
        attach,
    })
}

fn parse_list_apps(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=1)?;
    match args.first().map(String::as_str) {
        None => Ok(Command::ListApps { full: false }),
        Some("-f") => Ok(Command::ListApps { full: true }),
        Some(other) => Err(spec.usage_error(format!(
            "unknown option `{}`: the only option is -f (full: exited apps and command lines too)",
            shorten(other)
        ))),
    }
}

fn parse_one_id(spec: &'static CommandSpec, args: &[String]) -> Result<AppId, CommandError> {
    spec.expect_args(args, 1..=1)?;
    app_id(spec, &args[0])
}

fn parse_ping(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    Ok(Command::Ping {
        id: parse_one_id(spec, args)?,
    })
}

fn parse_res_usage(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    Ok(Command::ResUsage {
        id: parse_one_id(spec, args)?,
    })
}

fn parse_shutdown(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    Ok(Command::Shutdown {
        id: parse_one_id(spec, args)?,
    })
}

fn parse_attach(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    Ok(Command::Attach {
        id: parse_one_id(spec, args)?,
    })
}

fn parse_logs(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let id = app_id(spec, &args[0])?;
    let count = match args.get(1) {
        None => DEFAULT_LOG_LINES,
        Some(word) => match word.parse::<usize>() {
            Ok(count) if (1..=MAX_LOG_LINES).contains(&count) => count,
            _ => {
                return Err(spec.usage_error(format!(
                    "N `{}` is not a whole number from 1 to {MAX_LOG_LINES}",
                    shorten(word)
                )))
            }
        },
    };
    Ok(Command::Logs { id, count })
}

fn parse_status(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=0)?;
    Ok(Command::Status)
}

fn parse_list_transports(
    spec: &'static CommandSpec,
    args: &[String],
) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=0)?;
    Ok(Command::ListTransports)
}

fn parse_list_routes(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 0..=0)?;
    Ok(Command::ListRoutes)
}

fn parse_build_route(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    if args.is_empty() {
        return Err(spec.usage_error("needs the path's node keys, at least the destination's"));
    }
    let path = args
        .iter()
        .map(|word| spec.key(word))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::BuildRoute { path })
}

fn parse_rm_route(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=1)?;
    let peer = spec.key(&args[0])?;
    Ok(Command::RemoveRoute { peer })
}

fn parse_ping_node(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let peer = spec.key(&args[0])?;
    let count = match args.get(1) {
        None => DEFAULT_PING_COUNT,
        Some(word) => match word.parse::<u32>() {
            Ok(count) if (1..=MAX_PING_COUNT).contains(&count) => count,
            _ => {
                return Err(spec.usage_error(format!(
                    "COUNT `{}` is not a whole number from 1 to {MAX_PING_COUNT}",
                    shorten(word)
                )))
            }
        },
    };
    Ok(Command::PingNode { peer, count })
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
    match args[0].as_str() {
        "start" => Ok(Command::VpnStart { app }),
        "stop" => Ok(Command::VpnStop { app }),
        "status" if args.len() == 1 => Ok(Command::VpnStatus),
        "status" => Err(spec.usage_error("`vpn status` takes no app: it shows both")),
        other => {
            Err(spec.usage_error(format!("`{}` is not start, stop or status", shorten(other))))
        }
    }
}

fn parse_socks(spec: &'static CommandSpec, args: &[String]) -> Result<Command, CommandError> {
    spec.expect_args(args, 1..=2)?;
    let action = match args[0].as_str() {
        "start" => SocksAction::Start,
        "stop" => SocksAction::Stop,
        "status" => SocksAction::Status,
        other => {
            return Err(
                spec.usage_error(format!("`{}` is not start, stop or status", shorten(other)))
            )
        }
    };
    let app = match args.get(1).map(String::as_str) {
        None => None,
        Some("client") => Some(SocksApp::Client),
        Some("server") => Some(SocksApp::Server),
        Some(other) => {
            return Err(spec.usage_error(format!("`{}` is not client or server", shorten(other))))
        }
    };
    Ok(Command::Socks { action, app })
}

/// The text of `help`: every command and its summary.
pub fn help_overview() -> String {
    let called: Vec<String> = COMMANDS
        .iter()
        .map(|spec| {
            if spec.aliases.is_empty() {
                spec.name.to_owned()
            } else {
                format!("{}|{}", spec.name, spec.aliases.join("|"))
            }
        })
        .collect();
    let width = called
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::from("commands:\n");
    for (spec, name) in COMMANDS.iter().zip(&called) {
        let _ = writeln!(text, "  {name:<width$}  {}", spec.summary);
    }
    text.push_str(
        "run `help COMMAND` for a command's arguments;\n\
         `apps` lists the launchable apps and `help APP` explains one",
    );
    text
}

/// The text of `help COMMAND`: its usage, aliases and help.
pub fn help_topic(spec: &CommandSpec) -> String {
    let mut text = format!("usage: {}\n", spec.usage);
    if !spec.aliases.is_empty() {
        let _ = writeln!(text, "aliases: {}", spec.aliases.join(", "));
    }
    let _ = write!(text, "{}\n{}", spec.summary, wrap(spec.help, 78));
    text
}

/// Breaks `text` into lines of at most `width` characters where it can.
fn wrap(text: &str, width: usize) -> String {
    let mut wrapped = String::with_capacity(text.len());
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            wrapped.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            wrapped.push(' ');
            line_len += 1;
        }
        wrapped.push_str(word);
        line_len += len;
    }
    wrapped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn words(line: &str) -> Vec<String> {
        tokenize(line).unwrap()
    }

    fn key(text: &str) -> NodeKey {
        text.parse().unwrap()
    }

    #[test]
    fn tokenizer_splits_on_white_space() {
        assert_eq!(words("  status  "), ["status"]);
        assert_eq!(words("build_route a\tb  c"), ["build_route", "a", "b", "c"]);
        assert!(words("").is_empty());
        assert!(words(" \t ").is_empty());
    }

    #[test]
    fn tokenizer_reads_quotes_and_escapes() {
        assert_eq!(words("msg 'hello world'"), ["msg", "hello world"]);
        assert_eq!(words(r#"msg "say \"hi\"""#), ["msg", "say \"hi\""]);
        assert_eq!(
            words(r#""a\\b" "tab\there" "nl\nx" "cr\r" "q\'""#),
            ["a\\b", "tab\there", "nl\nx", "cr\r", "q'"]
        );
        assert_eq!(words(r"'no \escape in single'"), [r"no \escape in single"]);
        assert_eq!(words(r#"ab"c d"'e f'g"#), ["abc de fg"]);
        assert_eq!(words(r#"'' """#), ["", ""]);
        assert_eq!(words(r"a\b"), [r"a\b"]);
        assert_eq!(words(r#"'say "hi"'"#), [r#"say "hi""#]);
        assert_eq!(words("\"it's\""), ["it's"]);
    }

    #[test]
    fn tokenizer_skips_comments() {
        assert!(words("# only a comment").is_empty());
        assert!(words("   #indented comment").is_empty());
        assert_eq!(words("status # why not"), ["status"]);
        assert_eq!(words("a#b '#c' \"#d\""), ["a#b", "#c", "#d"]);
    }

    #[test]
    fn tokenizer_reports_unterminated_quotes_and_unknown_escapes() {
        assert_eq!(
            tokenize("msg 'hello"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '\'',
                column: 5
            })
        );
        assert_eq!(
            tokenize("msg \"hello"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '"',
                column: 5
            })
        );
        assert_eq!(
            tokenize("\"ends in a backslash\\"),
            Err(SyntaxError::UnterminatedQuote {
                quote: '"',
                column: 1
            })
        );
        assert_eq!(
            tokenize(r#"é "\q""#),
            Err(SyntaxError::UnknownEscape {
                escape: 'q',
                column: 4
            })
        );
        let message = tokenize("'x").unwrap_err().to_string();
        assert!(
            message.contains("single quote opened at column 1 is not closed"),
            "{message}"
        );
    }

    #[test]
    fn quoting_round_trips() {
        let cases: &[&[&str]] = &[
            &["status"],
            &["msg", "hello world"],
            &[
                "a'b",
                "c\"d",
                "e\\f",
                "",
                "#not a comment",
                "tab\there",
                "nl\nline",
                "cr\r",
            ],
            &["ü ñ", "plain+/=", "a#b"],
        ];
        for case in cases {
            let line = join_words(case);
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(tokenize(&line).unwrap(), *case, "{line:?}");
        }
        assert_eq!(quote("status"), "status");
        assert_eq!(quote(KEY_A), KEY_A);
    }

    #[test]
    fn every_command_parses() {
        assert_eq!(parse("help").unwrap(), Some(Command::Help { topic: None }));
        assert_eq!(parse("h").unwrap(), Some(Command::Help { topic: None }));
        assert_eq!(parse("?").unwrap(), Some(Command::Help { topic: None }));
        assert_eq!(
            parse("help lr").unwrap(),
            Some(Command::Help {
                topic: find("list_routes")
            })
        );
        assert_eq!(parse("status").unwrap(), Some(Command::Status));
        assert_eq!(
            parse("list_transports").unwrap(),
            Some(Command::ListTransports)
        );
        assert_eq!(parse("lt").unwrap(), Some(Command::ListTransports));
        assert_eq!(parse("list_routes").unwrap(), Some(Command::ListRoutes));
        assert_eq!(parse("lr").unwrap(), Some(Command::ListRoutes));
        assert_eq!(
            parse(&format!("build_route {KEY_A} {KEY_B}")).unwrap(),
            Some(Command::BuildRoute {
                path: vec![key(KEY_A), key(KEY_B)]
            })
        );
        assert_eq!(
            parse(&format!("br {KEY_B}")).unwrap(),
            Some(Command::BuildRoute {
                path: vec![key(KEY_B)]
            })
        );
        assert_eq!(
            parse(&format!("rm_route {KEY_A}")).unwrap(),
            Some(Command::RemoveRoute { peer: key(KEY_A) })
        );
        assert_eq!(
            parse(&format!("rr '{KEY_A}'")).unwrap(),
            Some(Command::RemoveRoute { peer: key(KEY_A) })
        );
        assert_eq!(
            parse(&format!("ping_node {KEY_A}")).unwrap(),
            Some(Command::PingNode {
                peer: key(KEY_A),
                count: DEFAULT_PING_COUNT
            })
        );
        assert_eq!(
            parse(&format!("pn {KEY_A} 100")).unwrap(),
            Some(Command::PingNode {
                peer: key(KEY_A),
                count: 100
            })
        );
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("  # a comment").unwrap(), None);
    }

    #[test]
    fn commands_become_requests() {
        assert_eq!(Command::Help { topic: None }.request(), None);
        assert_eq!(Command::Status.request(), Some(Request::Status));
        assert_eq!(
            parse("vpn start").unwrap().unwrap().request(),
            Some(Request::VpnStart {
                app: VpnApp::Client
            })
        );
        assert_eq!(
            parse("vpn stop server").unwrap().unwrap().request(),
            Some(Request::VpnStop {
                app: VpnApp::Server
            })
        );
        assert_eq!(
            parse("vpn status").unwrap().unwrap().request(),
            Some(Request::VpnStatus)
        );
        for bad in ["vpn", "vpn go", "vpn start both", "vpn status client"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Command::ListTransports.request(),
            Some(Request::ListTransports)
        );
        assert_eq!(Command::ListRoutes.request(), Some(Request::ListRoutes));
        assert_eq!(
            Command::BuildRoute {
                path: vec![key(KEY_A)]
            }
            .request(),
            Some(Request::BuildRoute {
                path: vec![key(KEY_A)]
            })
        );
        assert_eq!(
            Command::RemoveRoute { peer: key(KEY_B) }.request(),
            Some(Request::RemoveRoute { peer: key(KEY_B) })
        );
        assert_eq!(
            Command::PingNode {
                peer: key(KEY_B),
                count: 7
            }
            .request(),
            Some(Request::PingNode {
                peer: key(KEY_B),
                count: 7
            })
        );
    }

    #[test]
    fn every_command_name_matches_its_table_entry() {
        let commands = [
            Command::Help { topic: None },
            Command::Status,
            Command::ListTransports,
            Command::ListRoutes,
            Command::BuildRoute { path: vec![] },
            Command::RemoveRoute { peer: key(KEY_A) },
            Command::PingNode {
                peer: key(KEY_A),
                count: 1,
            },
            Command::VpnStatus,
            Command::Socks {
                action: SocksAction::Status,
                app: None,
            },
            Command::Apps,
            Command::Start {
                app: "a".to_owned(),
                args: None,
                attach: false,
            },
            Command::ListApps { full: false },
            Command::Ping { id: 1 },
            Command::ResUsage { id: 1 },
            Command::Shutdown { id: 1 },
            Command::Attach { id: 1 },
            Command::Logs { id: 1, count: 1 },
        ];
        assert_eq!(commands.len(), COMMANDS.len());
        for (command, spec) in commands.iter().zip(COMMANDS) {
            assert_eq!(command.name(), spec.name);
        }
    }

    fn error(line: &str) -> CommandError {
        parse(line).unwrap_err()
    }

    #[test]
    fn unknown_commands_point_to_help() {
        let err = error("frobnicate");
        assert_eq!(err.command(), None);
        assert_eq!(
            err.to_string(),
            "unknown command `frobnicate`: run `help` to list the commands"
        );
        let err = error("stauts");
        assert!(err.to_string().contains("did you mean `status`?"), "{err}");
        let err = error("list_route");
        assert!(
            err.to_string().contains("did you mean `list_routes`?"),
            "{err}"
        );
        let long = "x".repeat(1000);
        assert!(error(&long).to_string().len() < 200);
    }

    #[test]
    fn argument_errors_say_what_is_wanted() {
        let cases = [
            ("help a b", "help", "takes 0 to 1 arguments, not 2; usage: help [COMMAND|APP]"),
            ("help 'a b'", "help", "there is no command or app `a b`: run `help` to list the commands and `apps` to list the apps"),
            ("status now", "status", "takes no arguments, not 1; usage: status"),
            ("lt x", "list_transports", "takes no arguments"),
            ("lr x y", "list_routes", "takes no arguments, not 2"),
            ("build_route", "build_route", "needs the path's node keys"),
            ("br nope", "build_route", "`nope` is not a node key: a key is 44 characters of base64, as `skywired pubkey` prints"),
            ("rm_route", "rm_route", "takes 1 argument, not 0; usage: rm_route KEY"),
            ("rr a b", "rm_route", "takes 1 argument, not 2"),
            ("rr short", "rm_route", "`short` is not a node key"),
            ("ping_node", "ping_node", "takes 1 to 2 arguments, not 0; usage: ping_node KEY [COUNT]"),
            ("pn bad", "ping_node", "`bad` is not a node key"),
        ];
        for (line, command, message) in cases {
            let err = error(line);
            assert_eq!(err.command(), Some(command), "{line}");
            assert!(err.to_string().contains(message), "{line}: {err}");
        }
        for count in ["0", "101", "-1", "four", "1.5"] {
            let err = error(&format!("pn {KEY_A} {count}"));
            assert_eq!(err.command(), Some("ping_node"));
            assert!(
                err.to_string().contains(&format!(
                    "COUNT `{count}` is not a whole number from 1 to 100"
                )),
                "{err}"
            );
        }
        let err = error(&format!("pn {KEY_A} 1 2"));
        assert!(err.to_string().contains("not 3"), "{err}");
        let err = error("status 'open");
        assert_eq!(err.command(), None);
        assert!(matches!(err, CommandError::Syntax(_)));
    }

    #[test]
    fn every_command_has_help() {
        for spec in COMMANDS {
            assert!(!spec.summary.is_empty(), "{}", spec.name);
            assert!(!spec.help.is_empty(), "{}", spec.name);
            assert!(spec.usage.starts_with(spec.name), "{}", spec.name);
            let text = help_topic(spec);
            assert!(text.contains(spec.usage), "{text}");
            assert!(
                text.lines().all(|line| line.chars().count() <= 80),
                "{text}"
            );
            for alias in spec.aliases {
                assert_eq!(find(alias), Some(spec));
                assert!(text.contains(alias), "{text}");
            }
            assert!(help_overview().contains(spec.summary));
        }
        assert!(help_overview().contains("help|h|?"));
    }

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for spec in COMMANDS {
            for name in std::iter::once(&spec.name).chain(spec.aliases) {
                assert!(seen.insert(*name), "{name} twice");
            }
        }
    }

    #[test]
    fn socks_commands_parse_into_requests() {
        let cases = [
            ("socks status", Request::SocksStatus),
            ("socks start", Request::SocksStart { app: None }),
            (
                "socks start client",
                Request::SocksStart {
                    app: Some(SocksApp::Client),
                },
            ),
            (
                "socks stop server",
                Request::SocksStop {
                    app: Some(SocksApp::Server),
                },
            ),
        ];
        for (line, request) in cases {
            let command = parse(line).unwrap().unwrap();
            assert_eq!(command.request(), Some(request), "{line}");
        }
        for (line, problem) in [
            ("socks", "takes 1 to 2 arguments, not 0"),
            ("socks restart", "`restart` is not start, stop or status"),
            ("socks start both", "`both` is not client or server"),
            ("socks stop client now", "takes 1 to 2 arguments, not 3"),
        ] {
            let error = parse(line).unwrap_err();
            assert_eq!(error.command(), Some("socks"), "{line}");
            assert!(error.to_string().contains(problem), "{line}: {error}");
        }
    }

    #[test]
    fn app_commands_parse() {
        let cases = [
            ("apps", Command::Apps),
            (
                "help example-app",
                Command::HelpApp {
                    name: "example-app".to_owned(),
                },
            ),
            (
                "start example",
                Command::Start {
                    app: "example".to_owned(),
                    args: None,
                    attach: false,
                },
            ),
            (
                "s -a example --flag 'two words' -a",
                Command::Start {
                    app: "example".to_owned(),
                    args: Some(vec![
                        "--flag".to_owned(),
                        "two words".to_owned(),
                        "-a".to_owned(),
                    ]),
                    attach: true,
                },
            ),
            ("list_apps", Command::ListApps { full: false }),
            ("la -f", Command::ListApps { full: true }),
            ("ping 3", Command::Ping { id: 3 }),
            ("res_usage 3", Command::ResUsage { id: 3 }),
            (
                "ru 18446744073709551615",
                Command::ResUsage { id: u64::MAX },
            ),
            ("shutdown 2", Command::Shutdown { id: 2 }),
            ("sd 2", Command::Shutdown { id: 2 }),
            ("attach 9", Command::Attach { id: 9 }),
            (
                "logs 9",
                Command::Logs {
                    id: 9,
                    count: DEFAULT_LOG_LINES,
                },
            ),
            ("logs 9 1000", Command::Logs { id: 9, count: 1000 }),
        ];
        for (line, command) in cases {
            let parsed = parse(line).unwrap().unwrap();
            assert_eq!(parsed, command, "{line}");
            assert!(parsed.is_app_command(), "{line}");
            assert_eq!(parsed.request(), None, "{line}");
        }
        assert!(!Command::Status.is_app_command());
        assert!(!Command::Help { topic: None }.is_app_command());
        // A command's name wins over an app of the same name.
        assert_eq!(
            parse("help ping").unwrap(),
            Some(Command::Help {
                topic: find("ping")
            })
        );
    }

    #[test]
    fn app_command_errors_say_what_is_wanted() {
        let cases = [
            ("apps x", "apps", "takes no arguments, not 1"),
            (
                "start",
                "start",
                "needs the name of an app: `apps` lists them",
            ),
            ("s -a", "start", "needs the name of an app"),
            (
                "start -x app",
                "start",
                "unknown option `-x`: the only option is -a",
            ),
            ("start 'a b'", "start", "`a b` is not an app name"),
            (
                "la -l",
                "list_apps",
                "unknown option `-l`: the only option is -f",
            ),
            ("la -f x", "list_apps", "takes 0 to 1 arguments, not 2"),
            ("ping", "ping", "takes 1 argument, not 0; usage: ping ID"),
            (
                "ping x",
                "ping",
                "`x` is not an app id: ids are the numbers that `start` answers",
            ),
            ("ping 0", "ping", "`0` is not an app id"),
            ("ping -1", "ping", "`-1` is not an app id"),
            ("ru 1 2", "res_usage", "takes 1 argument, not 2"),
            ("sd 18446744073709551616", "shutdown", "is not an app id"),
            ("attach", "attach", "usage: attach ID"),
            ("logs", "logs", "takes 1 to 2 arguments, not 0"),
            (
                "logs 1 0",
                "logs",
                "N `0` is not a whole number from 1 to 1000",
            ),
            ("logs 1 1001", "logs", "N `1001` is not a whole number"),
        ];
        for (line, command, message) in cases {
            let err = error(line);
            assert_eq!(err.command(), Some(command), "{line}");
            assert!(err.to_string().contains(message), "{line}: {err}");
        }
    }
}
