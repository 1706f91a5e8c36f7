//! `help` from the command table: the list of commands, and one command's usage and help. The
//! control thread answers it, and so does `visctl` when no daemon runs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::command::{CommandRole, CommandSpec, LocalCommand, Role, COMMANDS};
use crate::protocol::success_line;

/// Width of help's wrapped text, in characters.
const WIDTH: usize = 78;

/// The `result` of `help`: the table entries it shows.
#[derive(Debug, Serialize)]
struct HelpResult<'a> {
    help: Vec<&'a CommandSpec>,
}

/// The reply line of a command the command table answers.
pub fn local_line(command: &LocalCommand) -> Vec<u8> {
    match command {
        LocalCommand::Help { topic } => help_line(*topic),
    }
}

/// The reply line of `help` (every command) or `help COMMAND`.
pub fn help_line(topic: Option<&CommandSpec>) -> Vec<u8> {
    match topic {
        None => success_line(
            "help",
            &HelpResult {
                help: COMMANDS.iter().collect(),
            },
            &help_overview(),
        ),
        Some(spec) => success_line("help", &HelpResult { help: vec![spec] }, &help_topic(spec)),
    }
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

/// The text of `help COMMAND`: its usage, aliases, who may run it, and help.
pub fn help_topic(spec: &CommandSpec) -> String {
    let mut text = format!("usage: {}\n", spec.usage);
    if !spec.aliases.is_empty() {
        let _ = writeln!(text, "aliases: {}", spec.aliases.join(", "));
    }
    let _ = writeln!(text, "who: {}", who_may(spec));
    let _ = write!(text, "{}\n{}", spec.summary, wrap(spec.help, WIDTH));
    text
}

/// Who may run the command, in a few words.
fn who_may(spec: &CommandSpec) -> String {
    let who = |role| match role {
        Role::ReadOnly => "anyone allowed on the socket",
        Role::Admin => "administrators",
    };
    match spec.role {
        CommandRole::Whole(role) => who(role).to_owned(),
        CommandRole::BySubcommand(roles) => [Role::ReadOnly, Role::Admin]
            .into_iter()
            .filter_map(|role| {
                let subcommands: Vec<&str> = roles
                    .iter()
                    .filter(|(_, needed)| *needed == role)
                    .map(|(subcommand, _)| *subcommand)
                    .collect();
                (!subcommands.is_empty())
                    .then(|| format!("{}: {}", subcommands.join(", "), who(role)))
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
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
    use crate::command::find;
    use crate::protocol::Answer;

    #[test]
    fn every_command_has_help_that_fits_a_terminal() {
        for spec in COMMANDS {
            let text = help_topic(spec);
            assert!(text.contains(spec.usage), "{text}");
            assert!(
                text.lines().all(|line| line.chars().count() <= 80),
                "{text}"
            );
            for alias in spec.aliases {
                assert!(text.contains(alias), "{text}");
            }
            assert!(help_overview().contains(spec.summary));
        }
        assert!(help_overview().contains("help|h|?"));
    }

    #[test]
    fn help_lines_carry_the_table_entries() {
        let line = help_line(find("ping_node"));
        let answer = Answer::parse(std::str::from_utf8(&line).unwrap().trim_end()).unwrap();
        assert_eq!(answer.command.as_deref(), Some("help"));
        let entries = answer.result.unwrap()["help"].clone();
        assert_eq!(entries[0]["name"], "ping_node");
        assert_eq!(entries[0]["aliases"], serde_json::json!(["pn"]));
        assert_eq!(entries[0]["role"], "read_only");
        assert!(answer.text.unwrap().starts_with(
            "usage: ping_node KEY [COUNT]\naliases: pn\nwho: anyone allowed on the socket\n"
        ));
        let vpn = help_topic(find("vpn").unwrap());
        assert!(
            vpn.contains(
                "who: status: anyone allowed on the socket; start, stop: administrators\n"
            ),
            "{vpn}"
        );

        let all = help_line(None);
        let answer = Answer::parse(std::str::from_utf8(&all).unwrap().trim_end()).unwrap();
        assert_eq!(
            answer.result.unwrap()["help"].as_array().unwrap().len(),
            COMMANDS.len()
        );
    }
}
