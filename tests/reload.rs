//! A running `skywired` changed without a restart, through the binaries on 127.0.0.1: a SIGHUP
//! that adds a neighbour brings its transport up while a SOCKS download over a route elsewhere
//! runs on, whole; a config file that fails its checks changes nothing (SIGHUP logs why,
//! `visctl reload` prints it and exits 1); a changed `listen` is refused by name while the rest
//! of the change applies; `add_neighbour` and `rm_neighbour` through `visctl`, undone by the
//! next reload; a new SOCKS section restarts the SOCKS client alone, launched apps running on;
//! and a changed messenger section is logged by what changed, the messenger running on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::http::{self, HttpServer};
use common::socks::{socks_connect, target_name};
use common::{json, three_nodes_with, wait_until, Daemon, Keys, Neighbour, TempDir};
use nix::sys::signal::{kill, Signal};
use sha2::{Digest as _, Sha256};
use skywire_dataplane::{NodeKey, SecretKey};

const WAIT: Duration = Duration::from_secs(20);

/// Replaces `from` with `to` in `daemon`'s config file, which must hold it.
fn edit_config(daemon: &Daemon, from: &str, to: &str) {
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    std::fs::write(&daemon.config, text.replacen(from, to, 1)).unwrap();
}

/// A neighbour entry as the config lists it.
fn neighbour_entry(key: &NodeKey, endpoint: Option<SocketAddr>) -> String {
    let mut entry = format!("  - key: {key}\n");
    if let Some(endpoint) = endpoint {
        entry.push_str(&format!("    endpoint: \"{endpoint}\"\n"));
    }
    entry
}

/// The link state of `key`'s transport at `daemon`, `None` when it has none.
fn link_to(daemon: &Daemon, key: &NodeKey) -> Option<String> {
    let transports = daemon.ask(&["list_transports"])["result"]["transports"].clone();
    transports
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["key"] == key.to_string())
        .map(|row| row["link"].as_str().unwrap().to_owned())
}

/// `visctl ARGS` that must fail: its standard error.
fn refused(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.visctl(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "visctl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `visctl ARGS` that must succeed: its standard output.
fn done(daemon: &Daemon, args: &[&str]) -> String {
    let output = daemon.visctl(args);
    assert!(
        output.status.success(),
        "visctl {args:?}: {}{}\n--- log ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sighup(daemon: &Daemon) {
    kill(daemon.pid(), Signal::SIGHUP).unwrap();
}

#[test]
fn a_sighup_that_adds_a_neighbour_leaves_a_running_socks_download_whole() {
    let dir = TempDir::new("reload-socks");
    let http = HttpServer::start();
    // A's SOCKS port leaves from C, through B.
    let socks = |name: &str, keys: &Keys| match name {
        "a" => format!(
            "socks:\n  client:\n    listen: \"127.0.0.1:0\"\n    exit: {}\n    path: [{}]\n",
            keys.c, keys.b
        ),
        "c" => format!(
            "socks:\n  server:\n    allow: [{}]\n    allow_targets: [\"127.0.0.1/32\"]\n",
            keys.a
        ),
        _ => String::new(),
    };
    let (a, _b, _c) = three_nodes_with(&dir, socks);
    let client = |a: &Daemon| a.ask(&["socks", "status"])["result"]["client"].clone();
    wait_until("A's route to the exit", WAIT, || {
        client(&a)["route"] == "ready"
    });
    let proxy: SocketAddr = client(&a)["listen"].as_str().unwrap().parse().unwrap();

    // The download's first half, then it waits (its reader stops) while A reloads.
    let (size, seed) = (16u64 << 20, 7);
    let mut stream = socks_connect(proxy, &target_name("localhost", http.address.port()));
    http::http_get(&mut stream, &format!("/bytes/{size}/{seed}"));
    let head = http::read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < size / 2 {
        let count = stream.read(&mut buf).unwrap();
        assert!(count > 0, "the download ended at {got} bytes");
        hasher.update(&buf[..count]);
        got += count as u64;
    }

    // D waits for A to call; A's config gains D, with its endpoint.
    let d_key = SecretKey::generate();
    let d = Daemon::start(&dir, "d", &d_key, &[a.as_neighbour(false)]);
    assert_eq!(link_to(&a, &d.key), None);
    edit_config(
        &a,
        "neighbours:\n",
        &format!(
            "neighbours:\n{}",
            neighbour_entry(&d.key, Some(d.endpoint()))
        ),
    );
    sighup(&a);
    wait_until("A's transport to D up", WAIT, || {
        link_to(&a, &d.key).as_deref() == Some("up")
    });
    assert!(
        a.log().contains(&format!("neighbour {} added", d.key)),
        "{}",
        a.log()
    );

    // The rest of the download, over the route through B that the reload left alone.
    loop {
        let count = stream.read(&mut buf).unwrap();
        if count == 0 {
            break;
        }
        hasher.update(&buf[..count]);
        got += count as u64;
    }
    assert_eq!(got, size);
    let sha: [u8; 32] = hasher.finalize().into();
    assert!(
        sha == http::content_sha256(seed, size),
        "the download differs"
    );
    assert_eq!(client(&a)["failed"], 0);
}

#[test]
fn a_config_that_fails_its_checks_changes_nothing_and_listen_is_refused_by_name() {
    let dir = TempDir::new("reload-checks");
    let (a_key, b_key) = (SecretKey::generate(), SecretKey::generate());
    let b = Daemon::start(&dir, "b", &b_key, &[]);
    let a = Daemon::start(&dir, "a", &a_key, &[b.as_neighbour(true)]);
    let good = std::fs::read_to_string(&a.config).unwrap();

    // Not YAML: SIGHUP logs why, `visctl reload` prints it, and B stays A's neighbour.
    std::fs::write(&a.config, format!("{good}neighbours: [\n")).unwrap();
    sighup(&a);
    wait_until("the SIGHUP's refusal in the log", WAIT, || {
        a.log().contains("reload refused: ")
    });
    let error = refused(&a, &["reload"]);
    let file = a.config.display().to_string();
    assert!(
        error.contains(&file)
            && error.contains("not valid YAML")
            && error.contains("nothing was changed"),
        "{error}"
    );
    // Valid YAML that fails a check: the node's own key as a neighbour.
    let own = neighbour_entry(&a.key, None);
    std::fs::write(
        &a.config,
        good.replacen("neighbours:\n", &format!("neighbours:\n{own}"), 1),
    )
    .unwrap();
    let error = refused(&a, &["reload"]);
    assert!(
        error.contains("`neighbours[0].key`") && error.contains("the node's own public key"),
        "{error}"
    );
    assert!(link_to(&a, &b.key).is_some(), "the running config stayed");
    assert_eq!(link_to(&a, &a.key), None);

    // A new `listen` is refused by name; the rest of the change applies.
    let c = Daemon::start(&dir, "c", &SecretKey::generate(), &[]);
    let changed = good
        .replacen("listen: \"[::]:0\"", "listen: \"[::]:1\"", 1)
        .replacen(
            "neighbours:\n",
            &format!(
                "neighbours:\n{}",
                neighbour_entry(&c.key, Some(c.endpoint()))
            ),
            1,
        );
    assert_ne!(changed, good);
    std::fs::write(&a.config, changed).unwrap();
    let error = refused(&a, &["reload"]);
    assert!(
        error.contains("restart to change listen")
            && error.contains(&format!("neighbour {} added", c.key)),
        "{error}"
    );
    assert!(link_to(&a, &c.key).is_some(), "the neighbour was added");
    assert_eq!(
        a.ask(&["status"])["result"]["listen"].as_str().unwrap(),
        format!("[::]:{}", a.port),
        "the socket stayed"
    );
    // The next reload refuses `listen` again, and has nothing else to do.
    let error = refused(&a, &["reload"]);
    assert!(
        error.contains("nothing that can change while the node runs")
            && error.contains("restart to change listen"),
        "{error}"
    );
}

#[test]
fn add_neighbour_and_rm_neighbour_change_the_running_node_until_a_reload() {
    let dir = TempDir::new("reload-neighbours");
    let (a_key, b_key) = (SecretKey::generate(), SecretKey::generate());
    let a = Daemon::start(&dir, "a", &a_key, &[]);
    let b = Daemon::start(&dir, "b", &b_key, &[a.as_neighbour(false)]);

    let endpoint = b.endpoint().to_string();
    let added = done(&a, &["add_neighbour", &b.key.to_string(), &endpoint]);
    assert_eq!(
        added.trim(),
        format!(
            "neighbour {} added (endpoint {endpoint})\n\
             this change is not in the config file: the next reload or restart undoes it",
            b.key
        )
    );
    wait_until("A's transport to B up", WAIT, || {
        link_to(&a, &b.key).as_deref() == Some("up")
    });
    let again = refused(&a, &["add_neighbour", &b.key.to_string()]);
    assert!(again.contains("is a neighbour already"), "{again}");

    let removed = a.ask(&["rm_neighbour", &b.key.to_string()]);
    assert_eq!(removed["result"]["change"], "removed");
    assert!(removed["text"]
        .as_str()
        .unwrap()
        .contains("not in the config file"));
    assert_eq!(link_to(&a, &b.key), None);
    let unknown = refused(&a, &["rm_neighbour", &b.key.to_string()]);
    assert!(
        unknown.contains("is not a neighbour of this node"),
        "{unknown}"
    );
    let error = refused(&a, &["add_neighbour", &b.key.to_string(), "localhost:7777"]);
    assert!(
        error.contains("`localhost:7777` is not an endpoint"),
        "{error}"
    );

    // Added again at runtime, and the unchanged file's reload takes it away.
    done(&a, &["add_neighbour", &b.key.to_string(), &endpoint]);
    let reloaded = done(&a, &["reload"]);
    assert!(
        reloaded.contains(&format!("neighbour {} removed", b.key)),
        "{reloaded}"
    );
    assert_eq!(link_to(&a, &b.key), None);
}

#[test]
fn a_new_socks_section_restarts_the_socks_client_alone() {
    let dir = TempDir::new("reload-apps");
    let exit = SecretKey::generate().public();
    let section = |listen: &str| {
        format!(
            "socks:\n  client:\n    listen: \"{listen}\"\n    exit: {exit}\n\
             apps:\n  sleeper:\n    path: sleep\n    default_args: [\"600\"]\n"
        )
    };
    let a = Daemon::start_with(
        &dir,
        "a",
        &SecretKey::generate(),
        &[Neighbour {
            key: exit,
            endpoint: None,
        }],
        &section("127.0.0.1:0"),
    );
    let started = a.ask(&["start", "sleeper"]);
    let pid = started["result"]["started"]["pid"].clone();
    let listen = |a: &Daemon| {
        a.ask(&["socks", "status"])["result"]["client"]["listen"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
    };
    let before = listen(&a);

    // A port of its own for the client: bound and released, so it is free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    edit_config(
        &a,
        "    listen: \"127.0.0.1:0\"\n",
        &format!("    listen: \"{port}\"\n"),
    );
    let reloaded = a.ask(&["reload"]);
    assert_eq!(
        reloaded["result"]["applied"],
        serde_json::json!(["the SOCKS client restarted with its new section"])
    );
    assert_eq!(listen(&a), port);
    assert_ne!(listen(&a), before);
    let apps = a.ask(&["list_apps"])["result"]["apps"].clone();
    assert_eq!(apps[0]["pid"], pid, "the launched app runs on: {apps}");
    assert_eq!(apps.as_array().unwrap().len(), 1);

    // The catalog goes with a reload too; the running app still runs on.
    edit_config(&a, "  sleeper:\n", "  napper:\n");
    let reloaded = a.ask(&["reload"]);
    assert_eq!(
        reloaded["result"]["applied"],
        serde_json::json!(["the apps catalog: 1 app(s)"])
    );
    let catalog = json(&a.visctl(&["--json", "apps"]));
    assert!(
        catalog["text"].as_str().unwrap().contains("napper"),
        "{catalog}"
    );
    assert_eq!(a.ask(&["list_apps"])["result"]["apps"][0]["pid"], pid);
    let output = a.visctl(&["start", "sleeper"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "sleeper is gone from the catalog"
    );
}

#[test]
fn a_changed_messenger_section_logs_what_changed_and_the_messenger_runs_on() {
    let dir = TempDir::new("reload-messenger");
    let (b, c) = (
        SecretKey::generate().public(),
        SecretKey::generate().public(),
    );
    let a = Daemon::start_with(
        &dir,
        "a",
        &SecretKey::generate(),
        &[],
        &format!("messenger:\n  allow: [{b}, {c}]\n"),
    );
    let started = "messenger on mesh port 100";
    wait_until("A's messenger to listen", WAIT, || {
        a.log().contains(started)
    });

    // The same nodes in another order: the section differs, its settings do not.
    edit_config(&a, &format!("[{b}, {c}]"), &format!("[{c}, {b}]"));
    done(&a, &["reload"]);
    // A change: the log names what changed, and only that.
    edit_config(
        &a,
        &format!("  allow: [{c}, {b}]\n"),
        &format!("  allow: [{c}]\n  max_text_bytes: 8192\n"),
    );
    done(&a, &["reload"]);
    let changed = format!("messenger settings changed: allow → {c}, max_text_bytes 4096 → 8192");
    wait_until("A to log the messenger's change", WAIT, || {
        a.log().contains(&changed)
    });
    let log = a.log();
    assert_eq!(
        log.matches("messenger settings changed").count(),
        1,
        "the reordered allow changed nothing:\n{log}"
    );
    assert_eq!(
        log.matches(started).count(),
        1,
        "the messenger started once:\n{log}"
    );
    assert!(!log.contains("messenger stopped"), "{log}");
    done(&a, &["msg", "inbox"]);
}
