#![allow(clippy::unwrap_used)]

use skywire_dataplane::api::socks::SocksApp;
use skywire_dataplane::api::vpn::VpnApp;
use skywire_dataplane::{NeighbourConfig, NodeKey};

use super::*;

const KEY_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const KEY_B: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

fn key(text: &str) -> NodeKey {
    text.parse().unwrap()
}

/// The command a line reads as, and the name of its table entry.
fn command(line: &str) -> (&'static str, Command) {
    let parsed = parse_line(line).unwrap().unwrap();
    (parsed.spec.name, parsed.command)
}

fn error(line: &str) -> CommandError {
    parse_line(line).unwrap_err()
}

#[test]
fn blank_and_comment_lines_hold_no_command() {
    assert_eq!(parse_line("").unwrap(), None);
    assert_eq!(parse_line("  # a comment").unwrap(), None);
    assert_eq!(parse(&[]).unwrap(), None);
}

#[test]
fn help_is_answered_locally() {
    let help = |topic| ("help", Command::Local(LocalCommand::Help { topic }));
    assert_eq!(command("help"), help(None));
    assert_eq!(command("h"), help(None));
    assert_eq!(command("?"), help(None));
    assert_eq!(command("help lr"), help(find("list_routes")));
    // A command's name wins over an app of the same name.
    assert_eq!(command("help ping"), help(find("ping")));
    assert_eq!(
        command("help example-app"),
        (
            "help",
            Command::App(AppCommand::HelpApp {
                name: "example-app".to_owned()
            })
        )
    );
}

#[test]
fn dataplane_commands_are_its_requests() {
    let cases = [
        ("status", "status", Request::Status),
        (
            "list_transports",
            "list_transports",
            Request::ListTransports,
        ),
        ("lt", "list_transports", Request::ListTransports),
        ("list_routes", "list_routes", Request::ListRoutes),
        ("lr", "list_routes", Request::ListRoutes),
        (
            &format!("build_route {KEY_A} {KEY_B}"),
            "build_route",
            Request::BuildRoute {
                path: vec![key(KEY_A), key(KEY_B)],
            },
        ),
        (
            &format!("br {KEY_B}"),
            "build_route",
            Request::BuildRouteTo { peer: key(KEY_B) },
        ),
        (
            &format!("find_route {KEY_B}"),
            "find_route",
            Request::FindRoute { peer: key(KEY_B) },
        ),
        (
            &format!("fr '{KEY_A}'"),
            "find_route",
            Request::FindRoute { peer: key(KEY_A) },
        ),
        ("list_nodes", "list_nodes", Request::ListNodes),
        ("ln", "list_nodes", Request::ListNodes),
        (
            &format!("rm_route {KEY_A}"),
            "rm_route",
            Request::RemoveRoute { peer: key(KEY_A) },
        ),
        (
            &format!("rr '{KEY_A}'"),
            "rm_route",
            Request::RemoveRoute { peer: key(KEY_A) },
        ),
        (
            &format!("ping_node {KEY_A}"),
            "ping_node",
            Request::PingNode {
                peer: key(KEY_A),
                count: DEFAULT_PING_COUNT,
            },
        ),
        (
            &format!("pn {KEY_A} 100"),
            "ping_node",
            Request::PingNode {
                peer: key(KEY_A),
                count: 100,
            },
        ),
        (
            "vpn start",
            "vpn",
            Request::VpnStart {
                app: VpnApp::Client,
            },
        ),
        (
            "vpn stop server",
            "vpn",
            Request::VpnStop {
                app: VpnApp::Server,
            },
        ),
        ("vpn status", "vpn", Request::VpnStatus),
        ("socks status", "socks", Request::SocksStatus),
        ("socks start", "socks", Request::SocksStart { app: None }),
        (
            "socks start client",
            "socks",
            Request::SocksStart {
                app: Some(SocksApp::Client),
            },
        ),
        (
            "socks stop server",
            "socks",
            Request::SocksStop {
                app: Some(SocksApp::Server),
            },
        ),
        (
            &format!("add_neighbour {KEY_A}"),
            "add_neighbour",
            Request::AddNeighbour(NeighbourConfig {
                key: key(KEY_A),
                endpoint: None,
                keepalive: None,
            }),
        ),
        (
            &format!("add_neighbour {KEY_A} [2001:db8::1]:7777"),
            "add_neighbour",
            Request::AddNeighbour(NeighbourConfig {
                key: key(KEY_A),
                endpoint: Some("[2001:db8::1]:7777".parse().unwrap()),
                keepalive: None,
            }),
        ),
        (
            &format!("rm_neighbour {KEY_B}"),
            "rm_neighbour",
            Request::RemoveNeighbour { key: key(KEY_B) },
        ),
    ];
    for (line, name, request) in cases {
        assert_eq!(command(line), (name, Command::Dataplane(request)), "{line}");
    }
    assert_eq!(command("reload"), ("reload", Command::Reload));
}

#[test]
fn app_commands_go_to_the_supervisor() {
    let cases = [
        ("apps", "apps", AppCommand::Apps),
        (
            "start example",
            "start",
            AppCommand::Start {
                app: "example".to_owned(),
                args: None,
                attach: false,
            },
        ),
        (
            "s -a example --flag 'two words' -a",
            "start",
            AppCommand::Start {
                app: "example".to_owned(),
                args: Some(vec![
                    "--flag".to_owned(),
                    "two words".to_owned(),
                    "-a".to_owned(),
                ]),
                attach: true,
            },
        ),
        (
            "list_apps",
            "list_apps",
            AppCommand::ListApps { full: false },
        ),
        ("la -f", "list_apps", AppCommand::ListApps { full: true }),
        ("ping 3", "ping", AppCommand::Ping { id: 3 }),
        ("res_usage 3", "res_usage", AppCommand::ResUsage { id: 3 }),
        (
            "ru 18446744073709551615",
            "res_usage",
            AppCommand::ResUsage { id: u64::MAX },
        ),
        ("shutdown 2", "shutdown", AppCommand::Shutdown { id: 2 }),
        ("sd 2", "shutdown", AppCommand::Shutdown { id: 2 }),
        ("attach 9", "attach", AppCommand::Attach { id: 9 }),
        (
            "logs 9",
            "logs",
            AppCommand::Logs {
                id: 9,
                count: DEFAULT_LOG_LINES,
            },
        ),
        (
            "logs 9 1000",
            "logs",
            AppCommand::Logs { id: 9, count: 1000 },
        ),
    ];
    for (line, name, app_command) in cases {
        assert_eq!(command(line), (name, Command::App(app_command)), "{line}");
    }
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
        ("build_route", "build_route", "needs the destination's key, after the path's other node keys to keep to a path; usage: build_route [N0 N1 …] KEY"),
        ("find_route", "find_route", "takes 1 argument, not 0; usage: find_route KEY"),
        ("fr nope", "find_route", "`nope` is not a node key"),
        ("ln all", "list_nodes", "takes no arguments, not 1; usage: list_nodes"),
        ("br nope", "build_route", "`nope` is not a node key: a key is 44 characters of base64, as `skywired pubkey` prints"),
        ("rm_route", "rm_route", "takes 1 argument, not 0; usage: rm_route KEY"),
        ("rr a b", "rm_route", "takes 1 argument, not 2"),
        ("rr short", "rm_route", "`short` is not a node key"),
        ("ping_node", "ping_node", "takes 1 to 2 arguments, not 0; usage: ping_node KEY [COUNT]"),
        ("pn bad", "ping_node", "`bad` is not a node key"),
        ("vpn", "vpn", "takes 1 to 2 arguments, not 0"),
        ("vpn go", "vpn", "`go` is not start, stop or status"),
        ("vpn start both", "vpn", "`both` is not a VPN app: say client or server"),
        ("vpn status client", "vpn", "`vpn status` takes no app: it shows both"),
        ("socks", "socks", "takes 1 to 2 arguments, not 0"),
        ("socks restart", "socks", "`restart` is not start, stop or status"),
        ("socks start both", "socks", "`both` is not client or server"),
        ("socks stop client now", "socks", "takes 1 to 2 arguments, not 3"),
        ("add_neighbour", "add_neighbour", "takes 1 to 2 arguments, not 0; usage: add_neighbour KEY [ENDPOINT]"),
        ("add_neighbour nope", "add_neighbour", "`nope` is not a node key"),
        (&format!("add_neighbour {KEY_A} example.org:7777"), "add_neighbour", "`example.org:7777` is not an endpoint: give the neighbour's IP address and port"),
        (&format!("add_neighbour {KEY_A} 192.0.2.1:0"), "add_neighbour", "`192.0.2.1:0` is not an endpoint"),
        (&format!("add_neighbour {KEY_A} 0.0.0.0:7777"), "add_neighbour", "`0.0.0.0:7777` is not an endpoint"),
        ("rm_neighbour", "rm_neighbour", "takes 1 argument, not 0; usage: rm_neighbour KEY"),
        ("reload now", "reload", "takes no arguments, not 1; usage: reload"),
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
fn every_entry_explains_itself() {
    for spec in COMMANDS {
        assert!(!spec.summary.is_empty(), "{}", spec.name);
        assert!(!spec.help.is_empty(), "{}", spec.name);
        assert!(spec.usage.starts_with(spec.name), "{}", spec.name);
        for alias in spec.aliases {
            assert_eq!(find(alias), Some(spec));
        }
    }
}

/// The role each use of a command needs, as a line reads. A command added to the table must be
/// added here too: what a member of `control.socket_group` or a launched app may run is decided
/// on purpose, never by a default.
#[test]
fn every_command_needs_the_role_decided_for_it() {
    let read_only = [
        "help",
        "help status",
        "status",
        "list_transports",
        "list_routes",
        &format!("find_route {KEY_A}"),
        "list_nodes",
        &format!("ping_node {KEY_A}"),
        "vpn status",
        "socks status",
        "apps",
        "list_apps -f",
        "ping 1",
        "res_usage 1",
        "logs 1",
    ];
    let admin = [
        &format!("build_route {KEY_A}") as &str,
        &format!("rm_route {KEY_A}"),
        "vpn start",
        "vpn stop server",
        "socks start",
        "socks stop client",
        "start example",
        "start -a example --flag",
        "shutdown 1",
        "attach 1",
        &format!("add_neighbour {KEY_A} 192.0.2.1:7777"),
        &format!("rm_neighbour {KEY_A}"),
        "reload",
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (lines, role) in [(&read_only[..], Role::ReadOnly), (&admin[..], Role::Admin)] {
        for line in lines {
            let parsed = parse_line(line).unwrap().unwrap();
            assert_eq!(parsed.role, Some(role), "{line}");
            covered.insert(parsed.spec.name);
        }
    }
    let all: std::collections::BTreeSet<_> = COMMANDS.iter().map(|spec| spec.name).collect();
    assert_eq!(
        covered, all,
        "add every new command to this test with the role it needs"
    );
    assert!(Role::Admin.allows(Role::ReadOnly));
    assert!(!Role::ReadOnly.allows(Role::Admin));
}

#[test]
fn a_subcommand_without_a_role_is_refused_to_everyone() {
    const ROLES: CommandRole = CommandRole::BySubcommand(&[("status", Role::ReadOnly)]);
    let words = |line: &str| tokenize(line).unwrap();
    assert_eq!(ROLES.needed(&words("status")), Some(Role::ReadOnly));
    assert_eq!(ROLES.needed(&words("start")), None);
    assert_eq!(ROLES.needed(&[]), None);
    assert_eq!(
        serde_json::to_value(ROLES).unwrap(),
        serde_json::json!({"status": "read_only"})
    );
    assert_eq!(
        serde_json::to_value(CommandRole::Whole(Role::Admin)).unwrap(),
        "admin"
    );
}
