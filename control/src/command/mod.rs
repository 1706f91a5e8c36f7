//! Viscript commands: a line's words (`words`), the command table (`table`) and the parse
//! from words to a [`Command`]. The type of a command says who answers it: the control thread
//! itself, the app supervisor, or the dataplane, which gets the [`Request`] as it is.

mod table;
mod words;

use skywire_dataplane::api::Request;

use crate::signal::AppId;
pub use table::{
    CommandRole, CommandSpec, Role, COMMANDS, DEFAULT_LOG_LINES, DEFAULT_PING_COUNT, MAX_LOG_LINES,
    MAX_PING_COUNT,
};
pub use words::{join_words, quote, tokenize, SyntaxError};

/// The line that ends an `attach` (or `start -a`) and brings the connection back to commands.
pub const DETACH_LINE: &str = ".detach";

/// Names longer than this get no suggestion (no command name is near).
const MAX_SUGGESTED_NAME: usize = 32;

/// How much of a user's word an error message repeats.
const MAX_QUOTED_WORD: usize = 60;

/// A command with its arguments read, by who answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The control thread answers it by itself (and `visctl` does, without a daemon).
    Local(LocalCommand),
    /// The app supervisor runs it.
    App(AppCommand),
    /// The dataplane answers it.
    Dataplane(Request),
    /// The control thread reloads the configuration file, as on SIGHUP.
    Reload,
}

/// A command the command table alone answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCommand {
    /// Lists the commands, or explains `topic`.
    Help {
        /// The command to explain.
        topic: Option<&'static CommandSpec>,
    },
}

/// A command about the app catalog or the launched apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCommand {
    /// Explains an app of the catalog (`help APP`); the catalog is the supervisor's, so the
    /// name is checked there.
    HelpApp {
        /// The name given.
        name: String,
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

impl From<LocalCommand> for Command {
    fn from(command: LocalCommand) -> Command {
        Command::Local(command)
    }
}

impl From<AppCommand> for Command {
    fn from(command: AppCommand) -> Command {
        Command::App(command)
    }
}

impl From<Request> for Command {
    fn from(request: Request) -> Command {
        Command::Dataplane(request)
    }
}

/// A command and the table entry that read it: its name for the reply, and who may run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The entry of the command named.
    pub spec: &'static CommandSpec,
    /// The command.
    pub command: Command,
    /// The role this use of the command needs; `None` when the table gives it none, and then
    /// nobody may run it.
    pub role: Option<Role>,
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

/// The command called `name` (its name or an alias).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|spec| spec.is_called(name))
}

/// Reads a command from its words: `Ok(None)` when there are none.
pub fn parse(words: &[String]) -> Result<Option<Parsed>, CommandError> {
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    match find(name) {
        Some(spec) => spec.parse(args).map(|command| {
            Some(Parsed {
                spec,
                command,
                role: spec.role.needed(args),
            })
        }),
        None => Err(CommandError::Unknown {
            name: shorten(name),
            suggestion: suggest(name),
        }),
    }
}

/// Reads one line of viscript: `Ok(None)` for a line with nothing to run (blank, or a comment).
pub fn parse_line(line: &str) -> Result<Option<Parsed>, CommandError> {
    parse(&tokenize(line)?)
}

/// A word as an error message repeats it: at most [`MAX_QUOTED_WORD`] characters.
fn shorten(word: &str) -> String {
    match word.char_indices().nth(MAX_QUOTED_WORD) {
        Some((cut, _)) => format!("{}…", &word[..cut]),
        None => word.to_owned(),
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

#[cfg(test)]
mod tests;
