//! `visctl`: the command-line client of a running `skywired`. It sends one command from its
//! arguments, the commands of a script (`-f`), or those on standard input (a prompt on a
//! terminal, each line in turn from a pipe), and prints the replies.

#![allow(clippy::print_stdout)]

use std::fmt;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use skywire::config::{Config, DEFAULT_CONTROL_SOCKET};
use skywire_control::command::{join_words, tokenize};
use skywire_control::{Answer, ClientError, ControlClient};

/// The environment variable that names the socket when `--socket` is not given.
const SOCKET_VARIABLE: &str = "SKYWIRE_SOCKET";

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "visctl",
    version,
    about = "Control a running skywired node over its Unix socket",
    long_about = "Control a running skywired node over its Unix socket. `visctl COMMAND ARGS…` \
                  sends one command and prints the reply; `visctl -f FILE` runs a script, one \
                  command a line, and stops at the first that fails; `visctl` alone reads \
                  commands from standard input: with a prompt on a terminal, each line in turn \
                  from a pipe. `visctl help` lists the commands.",
    after_help = "The socket is the one given with --socket, else $SKYWIRE_SOCKET, else the \
                  control.socket of the --config file, else /run/skywire/visctl.sock.\n\n\
                  Exit status: 0 done, 1 a command failed, 2 bad usage, 3 no skywired reachable."
)]
struct Cli {
    /// The control socket of the skywired to talk to.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Take the socket from this skywired configuration file (its control.socket) when neither
    /// --socket nor $SKYWIRE_SOCKET names one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print each reply as the JSON line skywired sent, instead of its text.
    #[arg(long)]
    json: bool,

    /// Run the commands in FILE, one a line (blank lines and `#` comments skipped), and stop
    /// at the first that fails.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        conflicts_with = "command"
    )]
    file: Option<PathBuf>,

    /// The command and its arguments, for example `status` or `ping_node KEY 10`. Without
    /// one, commands are read from standard input.
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    command: Vec<String>,
}

/// How the socket's path was chosen, for error messages.
#[derive(Debug)]
enum Origin {
    Flag,
    Variable,
    Config(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("given with --socket"),
            Origin::Variable => write!(f, "from ${SOCKET_VARIABLE}"),
            Origin::Config(file) => write!(f, "control.socket in {}", file.display()),
            Origin::Default => write!(
                f,
                "the default; choose another with --socket, ${SOCKET_VARIABLE} or --config"
            ),
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed,
    Unreachable,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> ExitCode {
        match outcome {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(EXIT_FAILED),
            Outcome::Unreachable => ExitCode::from(EXIT_UNREACHABLE),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let script = match &cli.file {
        None => None,
        Some(file) => match std::fs::read_to_string(file) {
            Ok(text) => Some((file.clone(), text)),
            Err(err) => {
                eprintln!("visctl: cannot read the script {}: {err}", file.display());
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let (socket, origin) = match find_socket(&cli) {
        Ok(found) => found,
        Err(message) => {
            eprintln!("visctl: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut client = match ControlClient::connect(&socket) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("visctl: {}", unreachable(&socket, &origin, &err));
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let printer = Printer { json: cli.json };
    let outcome = if let Some((file, text)) = script {
        run_script(&mut client, &printer, &file, &text)
    } else if !cli.command.is_empty() {
        run_one(&mut client, &printer, &cli.command)
    } else {
        run_stdin(&mut client, &printer)
    };
    outcome.into()
}

/// The socket's path: `--socket`, then `$SKYWIRE_SOCKET`, then `--config`'s control.socket,
/// then the default.
fn find_socket(cli: &Cli) -> Result<(PathBuf, Origin), String> {
    if let Some(socket) = &cli.socket {
        return Ok((socket.clone(), Origin::Flag));
    }
    if let Some(socket) = std::env::var_os(SOCKET_VARIABLE).filter(|value| !value.is_empty()) {
        return Ok((PathBuf::from(socket), Origin::Variable));
    }
    if let Some(file) = &cli.config {
        let config = Config::load(file)
            .map_err(|err| format!("cannot take the socket from --config: {err}"))?;
        return Ok((
            config.control_socket().to_path_buf(),
            Origin::Config(config.file().to_path_buf()),
        ));
    }
    Ok((PathBuf::from(DEFAULT_CONTROL_SOCKET), Origin::Default))
}

/// Why nothing answers at `socket`, and what to do.
fn unreachable(socket: &Path, origin: &Origin, err: &io::Error) -> String {
    let why = match err.kind() {
        io::ErrorKind::NotFound => {
            "no such socket: is skywired running, and is this the socket it was configured with (control.socket)?".to_owned()
        }
        io::ErrorKind::ConnectionRefused => {
            "connection refused: nothing listens there; skywired is not running (or stopped without removing its socket): start it".to_owned()
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied: run visctl as root, or as a member of the socket's group".to_owned()
        }
        _ => format!("{err}: is skywired running, and is this its socket?"),
    };
    format!(
        "cannot reach skywired at {} ({origin}): {why}",
        socket.display()
    )
}

/// Prints replies: the text of successes on standard output and the errors of failures on
/// standard error, or every reply's JSON line on standard output.
#[derive(Debug)]
struct Printer {
    json: bool,
}

impl Printer {
    fn show(&self, answer: &Answer) {
        let mut stdout = io::stdout().lock();
        // A closed standard output (`visctl … | head`) is not worth a failure.
        if self.json {
            let _ = writeln!(stdout, "{}", answer.raw);
        } else if answer.ok {
            match answer.text.as_deref() {
                Some(text) if !text.is_empty() => {
                    let _ = writeln!(stdout, "{text}");
                }
                _ => {}
            }
        } else {
            match &answer.command {
                Some(command) => eprintln!("visctl: {command}: {}", answer.error_message()),
                None => eprintln!("visctl: {}", answer.error_message()),
            }
        }
        let _ = stdout.flush();
    }
}

/// Whether a line holds a command (not blank, not only a comment). A line the tokenizer
/// refuses is sent anyway, so that skywired explains the problem.
fn has_command(line: &str) -> bool {
    tokenize(line).map_or(true, |words| !words.is_empty())
}

/// Sends one command, given as words, and prints its reply.
fn run_one(client: &mut ControlClient, printer: &Printer, words: &[String]) -> Outcome {
    let line = join_words(words);
    if !has_command(&line) {
        return Outcome::Done;
    }
    match client.command(&line) {
        Ok(answer) => {
            printer.show(&answer);
            if answer.ok {
                Outcome::Done
            } else {
                Outcome::Failed
            }
        }
        Err(err) => lost(&err),
    }
}

/// Runs a script, stopping at the first line that fails.
fn run_script(client: &mut ControlClient, printer: &Printer, file: &Path, text: &str) -> Outcome {
    for (index, line) in text.lines().enumerate() {
        if !has_command(line) {
            continue;
        }
        let answer = match client.command(line) {
            Ok(answer) => answer,
            Err(err) => return lost(&err),
        };
        if answer.ok {
            printer.show(&answer);
            continue;
        }
        if printer.json {
            printer.show(&answer);
        }
        eprintln!(
            "{}:{}: {}: {}",
            file.display(),
            index + 1,
            line.trim(),
            answer.error_message()
        );
        return Outcome::Failed;
    }
    Outcome::Done
}

/// Runs the commands on standard input until its end, `exit` or `quit`; with a prompt when it
/// is a terminal.
fn run_stdin(client: &mut ControlClient, printer: &Printer) -> Outcome {
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut failed = false;
    let mut number = 0;
    loop {
        if interactive {
            let mut stdout = io::stdout().lock();
            let _ = write!(stdout, "visctl> ");
            let _ = stdout.flush();
        }
        let mut bytes = Vec::new();
        number += 1;
        match input.read_until(b'\n', &mut bytes) {
            Ok(0) => {
                if interactive {
                    println!();
                }
                break;
            }
            Ok(_) => {}
            Err(err) => {
                eprintln!("visctl: cannot read standard input: {err}");
                return Outcome::Failed;
            }
        }
        let Ok(line) = String::from_utf8(bytes) else {
            eprintln!("visctl: line {number} of standard input is not valid UTF-8: skipped");
            failed = true;
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if matches!(line.trim(), "exit" | "quit") {
            break;
        }
        if !has_command(line) {
            continue;
        }
        match client.command(line) {
            Ok(answer) => {
                printer.show(&answer);
                failed |= !answer.ok;
            }
            Err(err) => return lost(&err),
        }
    }
    if failed {
        Outcome::Failed
    } else {
        Outcome::Done
    }
}

/// Reports a connection that broke mid-session.
fn lost(err: &ClientError) -> Outcome {
    eprintln!("visctl: {err}");
    match err {
        ClientError::NewLine => Outcome::Failed,
        _ => Outcome::Unreachable,
    }
}
