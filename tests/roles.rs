//! Who may do what on the control socket, through the real binaries: users and groups of the
//! test's own (made with `useradd` and `groupadd`, removed at the end) run `visctl` from
//! children that drop root. A member of `control.socket_group` reads but may not start an app,
//! and the refusal names the groups; a member of `control.admin_group` may; a user in neither is
//! refused at once; a launched app may read but not start; and a skywired that is not root lets
//! its own user do everything.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::machine::{require, require_root};
use common::users::{programs_for_everyone, TestGroup, TestUser};
use common::{json, wait_until, Daemon, Launch, TempDir};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// An app that sleeps, for the users to start.
const SLEEPER: &str = "apps:\n  sleeper:\n    path: sleep\n    default_args: [\"600\"]\n";

/// Whether `test` can make users and act as them here.
fn can_act_as_users(test: &str) -> bool {
    require_root(test) && require("useradd", test)
}

/// `visctl --socket SOCKET --json ARGS…` run as `user`.
fn visctl_as(user: &TestUser, visctl: &Path, socket: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(visctl);
    command
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .args(args)
        .env_remove("SKYWIRE_SOCKET")
        .stdin(Stdio::null());
    user.run(&mut command);
    command.output().unwrap()
}

/// The reply of a `visctl_as` that must succeed.
fn allowed(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "refused: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    json(output)
}

/// The error of a `visctl_as` that must be refused (exit status 1, a failure reply).
fn refused(output: &Output) -> (Value, String) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "not refused: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let reply = json(output);
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("permission denied: "), "{error}");
    (reply, error)
}

/// The rows of `list_apps -f`.
fn apps(daemon: &Daemon) -> Vec<Value> {
    daemon.ask(&["list_apps", "-f"])["result"]["apps"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn the_socket_group_reads_the_admin_group_starts_and_others_are_refused() {
    const TEST: &str = "the_socket_group_reads_the_admin_group_starts_and_others_are_refused";
    if !can_act_as_users(TEST) {
        return;
    }
    // Groups first, so that they are removed after their members.
    let admins = TestGroup::create("adm");
    let readers = TestGroup::create("rd");
    let admin = TestUser::create("a", &[&admins]);
    let reader = TestUser::create("r", &[&readers]);
    let stranger = TestUser::create("s", &[]);
    let dir = TempDir::new("roles");
    let (_, visctl) = programs_for_everyone(&dir);
    let control = format!(
        "  signal_port: 0\n  admin_group: {}\n  socket_group: {}\n",
        admins.name, readers.name
    );
    let daemon = Daemon::launch_alone(
        &dir,
        &Launch {
            control: &control,
            extra: SLEEPER,
            ..Launch::default()
        },
    );
    let socket = daemon.socket.as_path();
    let mode = fs::metadata(socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o666
    );
    let admin_group = format!("group `{}` (control.admin_group)", admins.name);
    let socket_group = format!("group `{}` (control.socket_group)", readers.name);

    // The socket group reads…
    let status = allowed(&visctl_as(&reader, &visctl, socket, &["status"]));
    assert_eq!(status["result"]["key"], daemon.key.to_string());
    allowed(&visctl_as(&reader, &visctl, socket, &["list_apps"]));
    allowed(&visctl_as(&reader, &visctl, socket, &["vpn", "status"]));
    // …and may not start, stop or change anything; the refusal names both groups.
    let (reply, error) = refused(&visctl_as(&reader, &visctl, socket, &["start", "sleeper"]));
    assert_eq!(reply["command"], "start");
    assert!(
        error.starts_with("permission denied: `start` needs an administrator"),
        "{error}"
    );
    assert!(
        error.contains("as a member of control.socket_group"),
        "{error}"
    );
    assert!(
        error.contains(&admin_group) && error.contains(&socket_group),
        "{error}"
    );
    refused(&visctl_as(&reader, &visctl, socket, &["vpn", "start"]));
    assert!(apps(&daemon).is_empty(), "the reader started an app");

    // The admin group may start and stop apps.
    let started = allowed(&visctl_as(&admin, &visctl, socket, &["start", "sleeper"]));
    let id = started["result"]["started"]["id"].as_u64().unwrap();
    let row = apps(&daemon)
        .into_iter()
        .find(|row| row["id"] == id)
        .unwrap();
    assert_eq!(row["state"], "running", "{row}");
    allowed(&visctl_as(
        &admin,
        &visctl,
        socket,
        &["shutdown", &id.to_string()],
    ));

    // Anyone else is refused at once, whatever the command, with a line naming the groups.
    for args in [&["status"][..], &["start", "sleeper"]] {
        let (reply, error) = refused(&visctl_as(&stranger, &visctl, socket, args));
        assert!(reply.get("command").is_none(), "{reply}");
        assert!(
            error.contains("may not use skywired's control socket"),
            "{error}"
        );
        assert!(
            error.contains(&admin_group) && error.contains(&socket_group),
            "{error}"
        );
    }
    assert!(
        daemon.log().contains(&format!(
            "refused a control connection from uid {}",
            stranger.uid
        )),
        "{}",
        daemon.log()
    );
    assert_eq!(apps(&daemon).len(), 1, "only the admin's app ran");
}

#[test]
fn a_launched_app_may_read_but_not_start() {
    let dir = TempDir::new("roles");
    let (_, visctl) = programs_for_everyone(&dir);
    // Launched apps run as skywired's own user (root here, when the tests run as root), which
    // may otherwise do everything: their process tree is what makes them read-only.
    let socket = dir.path("node/visctl.sock");
    let asks = |command: &str| {
        format!(
            "    path: {}\n    default_args: [\"--socket\", {:?}, \"--json\", {command}]\n",
            visctl.display(),
            socket.display().to_string()
        )
    };
    let catalog = format!(
        "{SLEEPER}  try-start:\n{}  try-status:\n{}",
        asks("\"start\", \"sleeper\""),
        asks("\"status\"")
    );
    let daemon = Daemon::launch_alone(
        &dir,
        &Launch {
            extra: &catalog,
            ..Launch::default()
        },
    );
    let exited = |id: u64| {
        wait_until(&format!("app {id} to exit"), WAIT, || {
            apps(&daemon)
                .iter()
                .any(|row| row["id"] == id && row["state"] == "exited")
        });
        // Its standard output: visctl's reply line.
        let logs = daemon.ask(&["logs", &id.to_string()]);
        let line = logs["result"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["stream"] == "stdout")
            .unwrap_or_else(|| panic!("app {id} printed no reply: {logs}"))["line"]
            .as_str()
            .unwrap()
            .to_owned();
        serde_json::from_str::<Value>(&line).unwrap()
    };

    let reads = daemon.ask(&["start", "try-status"])["result"]["started"]["id"]
        .as_u64()
        .unwrap();
    let reply = exited(reads);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["result"]["key"], daemon.key.to_string());

    let starts = daemon.ask(&["start", "try-start"])["result"]["started"]["id"]
        .as_u64()
        .unwrap();
    let reply = exited(starts);
    assert_eq!(reply["ok"], false, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.starts_with("permission denied: `start` needs an administrator"),
        "{error}"
    );
    assert!(
        error.contains(&format!("as a process of launched app {starts}")),
        "{error}"
    );
    assert!(
        apps(&daemon).iter().all(|row| row["name"] != "sleeper"),
        "the app started another"
    );
}

#[test]
fn a_skywired_that_is_not_root_lets_its_own_user_do_everything() {
    const TEST: &str = "a_skywired_that_is_not_root_lets_its_own_user_do_everything";
    if !can_act_as_users(TEST) {
        return;
    }
    let own = TestUser::create("d", &[]);
    let stranger = TestUser::create("s", &[]);
    let dir = TempDir::new("roles");
    let (skywired, visctl) = programs_for_everyone(&dir);
    let mut daemon = Daemon::launch_alone(
        &dir,
        &Launch {
            extra: SLEEPER,
            program: Some(&skywired),
            user: Some(&own),
            ..Launch::default()
        },
    );
    let status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap();
    assert_eq!(
        uid.split_whitespace().next(),
        Some(own.uid.to_string().as_str())
    );
    let socket = daemon.socket.clone();

    // Its own user may start and stop apps, which run as that user.
    let started = allowed(&visctl_as(&own, &visctl, &socket, &["start", "sleeper"]));
    let id = started["result"]["started"]["id"].as_u64().unwrap();
    let pid = started["result"]["started"]["pid"].as_u64().unwrap();
    let app = fs::metadata(format!("/proc/{pid}")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&app), own.uid.as_raw());
    allowed(&visctl_as(
        &own,
        &visctl,
        &socket,
        &["shutdown", &id.to_string()],
    ));
    // So may root.
    daemon.ask(&["start", "sleeper"]);
    // Nobody else: no group is configured.
    let (_, error) = refused(&visctl_as(&stranger, &visctl, &socket, &["status"]));
    assert!(
        error.contains(&format!("skywired's own user `{}`", own.name))
            && error.contains("no control.admin_group is set")
            && error.contains("no control.socket_group is set"),
        "{error}"
    );
    // A clean stop, so that no process of the user is left when it is removed.
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
