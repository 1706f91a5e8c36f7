//! `visctl`: the command-line client of a running `skywired`. Only its help is in this build;
//! the commands come with the control socket.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "visctl",
    version,
    about = "Control a running skywired node over its Unix socket",
    long_about = "Control a running skywired node over its Unix socket: one command from the \
                  arguments, or one per line from standard input. This build only has its help: \
                  the commands arrive with the control socket.",
    arg_required_else_help = true
)]
struct Cli {
    /// The command and its arguments, for example `status` or `list_routes`.
    #[arg(value_name = "COMMAND", trailing_var_arg = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "visctl: `{}`: this build of visctl cannot send commands yet",
        cli.command.join(" ")
    );
    ExitCode::FAILURE
}
