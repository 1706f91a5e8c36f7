//! End-to-end tests of the `skywired` and `visctl` command lines: keys, configuration checks and
//! the first start, each in a temporary folder of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::machine::{output_with_input, require};
use common::{TempDir, SKYWIRED, VISCTL};

/// Runs `program` with `args`, `stdin` on its standard input, in `dir`.
fn run(program: &str, args: &[&str], stdin: &str, dir: &Path) -> Output {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).env_remove("RUST_LOG");
    output_with_input(&mut command, stdin)
}

/// Starts `skywired --config config.yaml` in `dir`, waits (with a deadline) until its control
/// socket `state/visctl.sock` appears, stops it with SIGTERM and returns how it went.
fn run_until_ready_then_stop(dir: &TempDir) -> Output {
    let child = Command::new(SKYWIRED)
        .args(["--config", "config.yaml"])
        .current_dir(dir.root())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.path("state/visctl.sock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "skywired did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait_with_output().unwrap()
}

fn skywired(args: &[&str], dir: &Path) -> Output {
    run(SKYWIRED, args, "", dir)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_fails(output: &Output, words: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    for word in words {
        assert!(err.contains(word), "{word:?} missing in stderr: {err}");
    }
}

#[test]
fn keygen_and_pubkey_agree_with_wg() {
    let dir = TempDir::new("cli");
    let generated = skywired(&["keygen"], dir.root());
    assert!(generated.status.success(), "{}", stderr(&generated));
    let private = stdout(&generated);
    assert_eq!(private.len(), 45, "{private:?}");
    assert!(private.ends_with('\n'));

    let derived = run(SKYWIRED, &["pubkey"], &private, dir.root());
    assert!(derived.status.success(), "{}", stderr(&derived));
    let public = stdout(&derived);
    assert_eq!(public.len(), 45, "{public:?}");
    assert_ne!(public, private);

    if require("wg", "keygen_and_pubkey_agree_with_wg") {
        let wg = run("wg", &["pubkey"], &private, dir.root());
        assert!(wg.status.success(), "{}", stderr(&wg));
        assert_eq!(stdout(&wg), public);
    }
}

#[test]
fn pubkey_refuses_what_is_not_a_private_key() {
    let dir = TempDir::new("cli");
    for garbage in [
        "hello\n",
        "",
        "bXUUn8rnDmS0N1kOIlm7s5rHiYSMQbi/IZ9mu4aaBw==\n",
    ] {
        let output = run(SKYWIRED, &["pubkey"], garbage, dir.root());
        assert_fails(
            &output,
            &[
                "standard input does not hold a private key",
                "44 characters",
            ],
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn check_config_passes_the_repositorys_config() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let dir = TempDir::new("cli");
    let output = skywired(
        &["check-config", "--config", config.to_str().unwrap()],
        dir.root(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(&format!("config OK: {}\n", config.display())),
        "{}",
        stdout(&output)
    );
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let dir = TempDir::new("cli");
    let config = dir.write(
        "config.yaml",
        "listen: \"127.0.0.1:0\"\nliveness:\n  probe_interval_ms: 2000\n  dead_afer_ms: 10000\n",
    );
    let output = skywired(
        &["check-config", "--config", config.to_str().unwrap()],
        dir.root(),
    );
    assert_fails(
        &output,
        &[
            "liveness.dead_afer_ms",
            "line 4",
            "unknown field",
            "dead_after_ms",
            "config.yaml",
        ],
    );
    // The same for a start, which creates nothing.
    let output = skywired(&["--config", config.to_str().unwrap()], dir.root());
    assert_fails(&output, &["liveness.dead_afer_ms", "line 4"]);
    assert!(!dir.path("state").exists());
}

#[test]
fn a_socks_port_open_to_other_hosts_is_refused_unless_allowed() {
    let dir = TempDir::new("cli");
    let exit = "I4FR+rr1zIyZWbjd9gOo7X2a7qb5E//mkO91Ziu0RkU=";
    let open = format!(
        "listen: \"127.0.0.1:0\"\nsocks:\n  client:\n    exit: {exit}\n    listen: \"0.0.0.0:0\"\n"
    );
    let config = dir.write("config.yaml", &open);
    let output = skywired(&["--config", config.to_str().unwrap()], dir.root());
    assert_fails(
        &output,
        &[
            "socks.client.listen",
            "line 5",
            "open proxy",
            "socks.client.allow_remote_clients: true",
        ],
    );
    assert!(!dir.path("state").exists(), "nothing was started");
    let allowed = format!("{open}    allow_remote_clients: true\n");
    let config = dir.write("config.yaml", &allowed);
    let output = skywired(
        &["check-config", "--config", config.to_str().unwrap()],
        dir.root(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn a_missing_key_file_folder_is_named() {
    let dir = TempDir::new("cli");
    let config = dir.write(
        "config.yaml",
        "listen: \"127.0.0.1:0\"\nnode:\n  key_file: keys/node.key\ncontrol:\n  socket: state/visctl.sock\n",
    );
    let folder = dir.path("keys").display().to_string();
    let output = skywired(&["check-config", "--config", "config.yaml"], dir.root());
    assert_fails(&output, &[&folder, "does not exist"]);
    let output = skywired(&["--config", config.to_str().unwrap()], dir.root());
    assert_fails(&output, &[&folder, "does not exist"]);
    assert!(!dir.path("keys").exists());
}

#[test]
fn a_bad_key_file_is_named() {
    let dir = TempDir::new("cli");
    let config = dir.write(
        "config.yaml",
        "listen: \"127.0.0.1:0\"\ncontrol:\n  socket: visctl.sock\n",
    );
    fs::create_dir(dir.path("state")).unwrap();
    let key_file = dir.write("state/node.key", "not a key\n");
    for args in [
        &["check-config", "--config", "config.yaml"][..],
        &["--config", config.to_str().unwrap()],
    ] {
        let output = skywired(args, dir.root());
        assert_fails(&output, &[&key_file.display().to_string(), "wg genkey"]);
    }
    assert_eq!(fs::read_to_string(&key_file).unwrap(), "not a key\n");
}

#[test]
fn a_start_creates_the_key_file_once() {
    let dir = TempDir::new("cli");
    dir.write(
        "config.yaml",
        "listen: \"127.0.0.1:0\"\ncontrol:\n  socket: state/visctl.sock\n  signal_port: 0\n",
    );
    let key_file = dir.path("state/node.key");

    let first = run_until_ready_then_stop(&dir);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(dir.path("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let private = fs::read_to_string(&key_file).unwrap();
    let public = stdout(&run(SKYWIRED, &["pubkey"], &private, dir.root()));
    let public = public.trim();
    assert!(stderr(&first).contains(public), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("mesh address fd"),
        "{}",
        stderr(&first)
    );

    let second = run_until_ready_then_stop(&dir);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(fs::read_to_string(&key_file).unwrap(), private);
    assert!(stderr(&second).contains(public), "{}", stderr(&second));

    let checked = skywired(&["check-config", "--config", "config.yaml"], dir.root());
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(
        stdout(&checked).contains(&format!("public key: {public}")),
        "{}",
        stdout(&checked)
    );
}

#[test]
fn every_command_has_help() {
    let dir = TempDir::new("cli");
    for args in [
        &["--help"][..],
        &["keygen", "--help"],
        &["pubkey", "--help"],
        &["check-config", "--help"],
    ] {
        let output = skywired(args, dir.root());
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert!(
            stdout(&output).contains("Usage: skywired"),
            "{args:?}: {}",
            stdout(&output)
        );
    }
    let output = run(VISCTL, &["--help"], "", dir.root());
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("Usage: visctl"),
        "{}",
        stdout(&output)
    );
    // Without --config or a command, skywired shows how it is used.
    let output = skywired(&[], dir.root());
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--config"), "{}", stderr(&output));
}

#[test]
fn the_systemd_units_config_passes_check_config() {
    let dir = TempDir::new("cli");
    let unit_config = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/config.yaml"),
    )
    .unwrap();
    // The unit's folders, moved into the test's own.
    let root = dir.root().display().to_string();
    let config = unit_config
        .replace("/var/lib/skywire", &root)
        .replace("/run/skywire", &root);
    dir.write("config.yaml", &config);
    let output = skywired(&["check-config", "--config", "config.yaml"], dir.root());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("config OK"));
}
