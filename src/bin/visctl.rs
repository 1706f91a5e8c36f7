//! `visctl`: the command-line client of a running `skywired`. It sends one command from its
//! arguments, the commands of a script (`-f`), or those on standard input (a prompt on a
//! terminal, each line in turn from a pipe), and prints the replies. A streaming command
//! (`attach`, `start -a`) prints the app's output and sends it input until detached. `help`
//! comes from the command table compiled in here, so it needs no daemon.

#![allow(clippy::print_stdout)]

use std::fmt;
use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use skywire::config::{Config, DEFAULT_CONTROL_SOCKET};
use skywire_control::command::{self, join_words, tokenize, Command, Parsed, DETACH_LINE};
use skywire_control::protocol::failure_line;
use skywire_control::render::local_line;
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
                  from a pipe. `visctl help` lists the commands. `visctl attach ID` and \
                  `visctl start -a APP` print the app's output and send it standard input \
                  until its end (Ctrl-D) or a `.detach` line; in a script or session, the \
                  lines after `attach` are the app's input, up to `.detach`.",
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
    let mut connection = Connection {
        socket,
        origin,
        client: None,
    };
    let printer = Printer { json: cli.json };
    let outcome = if let Some((file, text)) = script {
        let mut input = ScriptInput::new(&text);
        run_session(
            &mut connection,
            &printer,
            &mut input,
            &Mode::Script { file: &file },
        )
    } else if !cli.command.is_empty() {
        run_one(&mut connection, &printer, &cli.command)
    } else {
        let interactive = io::stdin().is_terminal();
        let mut input = StdinInput::spawn();
        run_session(
            &mut connection,
            &printer,
            &mut input,
            &Mode::Stdin { interactive },
        )
    };
    outcome.into()
}

/// The connection to skywired, made when the first command is sent: a session on standard
/// input may wait long before its first line, and skywired closes connections that send none.
#[derive(Debug)]
struct Connection {
    socket: PathBuf,
    origin: Origin,
    client: Option<ControlClient>,
}

impl Connection {
    /// The client, connected now if it is not yet; `Err` (reported) if nothing answers.
    fn client(&mut self) -> Result<&mut ControlClient, Outcome> {
        if self.client.is_none() {
            match ControlClient::connect(&self.socket) {
                Ok(client) => self.client = Some(client),
                Err(err) => {
                    eprintln!("visctl: {}", unreachable(&self.socket, &self.origin, &err));
                    return Err(Outcome::Unreachable);
                }
            }
        }
        self.client.as_mut().ok_or(Outcome::Unreachable)
    }
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
            "permission denied: this user may not open the socket or enter its folder (skywired makes its socket open to all and decides itself what each user may do): run visctl as root or as skywired's user, or put the socket in a folder that all may enter, such as /run/skywire".to_owned()
        }
        _ => format!("{err}: is skywired running, and is this its socket?"),
    };
    format!(
        "cannot reach skywired at {} ({origin}): {why}",
        socket.display()
    )
}

/// Prints replies: the text of successes on standard output and the errors of failures on
/// standard error, or every reply's JSON line on standard output. In a stream, the app's
/// output goes where the app wrote it and the stream's own notes go to standard error.
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
                    if stream_note(answer) {
                        eprintln!("{text}");
                    } else {
                        let _ = writeln!(stdout, "{text}");
                    }
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

/// A field of a reply's `result` object.
fn result_field<'a>(answer: &'a Answer, field: &str) -> Option<&'a serde_json::Value> {
    answer.result.as_ref().and_then(|result| result.get(field))
}

/// Whether a reply starts a stream (`attach`, `start -a`).
fn starts_stream(answer: &Answer) -> bool {
    answer.ok && result_field(answer, "attached").is_some()
}

/// Whether a reply ends a stream.
fn ends_stream(answer: &Answer) -> bool {
    answer.ok && result_field(answer, "detached").is_some()
}

/// Whether a reply is a stream's note (attached, lines skipped, exited, detached, or an app's
/// standard error), which goes to standard error.
fn stream_note(answer: &Answer) -> bool {
    if answer.command.as_deref() != Some("attach") && !starts_stream(answer) {
        return false;
    }
    match result_field(answer, "output") {
        Some(output) => output.get("stream").and_then(|stream| stream.as_str()) == Some("stderr"),
        None => true,
    }
}

/// The answer to a command the command table answers by itself (`help`, `help COMMAND`, and
/// help's usage errors), made here without a daemon; `None` for the others, `help APP` among
/// them: the daemon has the catalog.
fn local_answer(words: &[String]) -> Option<Answer> {
    let line = match command::parse(words) {
        Ok(Some(Parsed {
            command: Command::Local(local),
            ..
        })) => local_line(&local),
        Err(err) if err.command() == Some("help") => failure_line(Some("help"), &err.to_string()),
        _ => return None,
    };
    Answer::parse(String::from_utf8_lossy(&line).trim_end()).ok()
}

/// A line of input, numbered from 1.
#[derive(Debug)]
enum Next {
    Line {
        number: usize,
        text: String,
    },
    /// A line that is not UTF-8.
    Invalid {
        number: usize,
    },
    /// Nothing yet (only when not waiting as long as it takes).
    Pending,
    End,
}

/// Where a session's lines come from: a script, or standard input.
trait Input {
    /// The next line; waits at most `wait` (`None`: as long as it takes).
    fn next(&mut self, wait: Option<Duration>) -> Next;
}

/// The lines of a script.
#[derive(Debug)]
struct ScriptInput {
    lines: Vec<String>,
    position: usize,
}

impl ScriptInput {
    fn new(text: &str) -> ScriptInput {
        ScriptInput {
            lines: text.lines().map(str::to_owned).collect(),
            position: 0,
        }
    }
}

impl Input for ScriptInput {
    fn next(&mut self, _wait: Option<Duration>) -> Next {
        let Some(text) = self.lines.get(self.position) else {
            return Next::End;
        };
        self.position += 1;
        Next::Line {
            number: self.position,
            text: text.clone(),
        }
    }
}

/// Standard input, read by a thread of its own so that a stream can wait for the app's output
/// and for input at once.
#[derive(Debug)]
struct StdinInput {
    lines: mpsc::Receiver<io::Result<Vec<u8>>>,
    number: usize,
    ended: bool,
}

impl StdinInput {
    fn spawn() -> StdinInput {
        // One line read ahead at most.
        let (sender, lines) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("stdin".to_owned())
            .spawn(move || {
                let mut input = io::stdin().lock();
                loop {
                    let mut bytes = Vec::new();
                    match input.read_until(b'\n', &mut bytes) {
                        Ok(0) => return,
                        Ok(_) => {
                            if sender.send(Ok(bytes)).is_err() {
                                return;
                            }
                        }
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            let _ = sender.send(Err(err));
                            return;
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            eprintln!("visctl: cannot read standard input: {err}");
        }
        StdinInput {
            lines,
            number: 0,
            ended: false,
        }
    }
}

impl Input for StdinInput {
    fn next(&mut self, wait: Option<Duration>) -> Next {
        if self.ended {
            return Next::End;
        }
        let received = match wait {
            None => self.lines.recv().map_err(|_| true),
            Some(wait) => self.lines.recv_timeout(wait).map_err(|err| match err {
                mpsc::RecvTimeoutError::Timeout => false,
                mpsc::RecvTimeoutError::Disconnected => true,
            }),
        };
        match received {
            Ok(Ok(bytes)) => {
                self.number += 1;
                match String::from_utf8(bytes) {
                    Ok(text) => Next::Line {
                        number: self.number,
                        text: text.trim_end_matches(['\n', '\r']).to_owned(),
                    },
                    Err(_) => Next::Invalid {
                        number: self.number,
                    },
                }
            }
            Ok(Err(err)) => {
                eprintln!("visctl: cannot read standard input: {err}");
                self.ended = true;
                Next::End
            }
            Err(false) => Next::Pending,
            Err(true) => {
                self.ended = true;
                Next::End
            }
        }
    }
}

/// How often a stream looks for input while it waits for the app's output.
const STREAM_POLL: Duration = Duration::from_millis(20);

/// Follows a stream (after `attach` or `start -a`): prints what comes until the stream ends,
/// and sends `input`'s lines meanwhile; `.detach`, or the end of `input`, detaches.
fn follow_stream(
    client: &mut ControlClient,
    printer: &Printer,
    input: &mut dyn Input,
) -> Result<(), ClientError> {
    let mut sending = true;
    loop {
        if let Some(answer) = client.poll_answer(STREAM_POLL)? {
            printer.show(&answer);
            if ends_stream(&answer) {
                return Ok(());
            }
            continue;
        }
        while sending {
            match input.next(Some(Duration::ZERO)) {
                Next::Line { text, .. } => {
                    client.send_line(&text)?;
                    sending = text.trim() != DETACH_LINE;
                }
                Next::Invalid { number } => {
                    eprintln!("visctl: input line {number} is not valid UTF-8: not sent");
                }
                Next::Pending => break,
                Next::End => {
                    client.send_line(DETACH_LINE)?;
                    sending = false;
                }
            }
        }
    }
}

/// Sends one command, given as words, and prints its reply (and its stream, if it starts one,
/// with standard input as the app's input).
fn run_one(connection: &mut Connection, printer: &Printer, words: &[String]) -> Outcome {
    if let Some(answer) = local_answer(words) {
        printer.show(&answer);
        return if answer.ok {
            Outcome::Done
        } else {
            Outcome::Failed
        };
    }
    let line = join_words(words);
    let client = match connection.client() {
        Ok(client) => client,
        Err(outcome) => return outcome,
    };
    let answer = match client.command(&line) {
        Ok(answer) => answer,
        Err(err) => return lost(&err),
    };
    printer.show(&answer);
    if !answer.ok {
        return Outcome::Failed;
    }
    if starts_stream(&answer) {
        let mut input = StdinInput::spawn();
        if let Err(err) = follow_stream(client, printer, &mut input) {
            return lost(&err);
        }
    }
    Outcome::Done
}

/// Where a session's lines come from, for its prompt and its errors.
#[derive(Debug)]
enum Mode<'a> {
    /// A script: stop at the first line that fails, naming it.
    Script { file: &'a Path },
    /// Standard input, with a prompt on a terminal; `exit` or `quit` ends it.
    Stdin { interactive: bool },
}

/// Runs the commands of `input` in turn. A command that starts a stream (`attach`) takes the
/// lines that follow as the app's input, up to `.detach`.
fn run_session(
    connection: &mut Connection,
    printer: &Printer,
    input: &mut dyn Input,
    mode: &Mode<'_>,
) -> Outcome {
    let interactive = matches!(mode, Mode::Stdin { interactive: true });
    let mut failed = false;
    loop {
        if interactive {
            let mut stdout = io::stdout().lock();
            let _ = write!(stdout, "visctl> ");
            let _ = stdout.flush();
        }
        let (number, line) = match input.next(None) {
            Next::Line { number, text } => (number, text),
            Next::Invalid { number } => {
                eprintln!("visctl: line {number} of standard input is not valid UTF-8: skipped");
                failed = true;
                continue;
            }
            Next::Pending => continue,
            Next::End => {
                if interactive {
                    println!();
                }
                break;
            }
        };
        if matches!(mode, Mode::Stdin { .. }) && matches!(line.trim(), "exit" | "quit") {
            break;
        }
        // A line the tokenizer refuses is sent all the same: skywired explains the problem.
        let words = tokenize(&line).ok();
        if words.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let local = words.as_deref().and_then(local_answer);
        let answer = match local {
            Some(answer) => answer,
            None => {
                let client = match connection.client() {
                    Ok(client) => client,
                    Err(outcome) => return outcome,
                };
                match client.command(&line) {
                    Ok(answer) => answer,
                    Err(err) => return lost(&err),
                }
            }
        };
        if answer.ok {
            printer.show(&answer);
            if starts_stream(&answer) {
                let Some(client) = connection.client.as_mut() else {
                    continue;
                };
                if let Err(err) = follow_stream(client, printer, input) {
                    return lost(&err);
                }
            }
            continue;
        }
        match mode {
            Mode::Script { file } => {
                if printer.json {
                    printer.show(&answer);
                }
                eprintln!(
                    "{}:{number}: {}: {}",
                    file.display(),
                    line.trim(),
                    answer.error_message()
                );
                return Outcome::Failed;
            }
            Mode::Stdin { .. } => {
                printer.show(&answer);
                failed = true;
            }
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
