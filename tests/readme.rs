//! The README's walk-through works as written: its shell blocks run in order, as one script, in
//! a network namespace of their own (so its fixed ports meet nothing else), and their output
//! shows the route, the pings and the relay's counters. Needs root and `ip` for the namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{can_make_namespaces, Namespaces};
use common::TempDir;

const SECTION: &str = "## Three nodes on one machine";

/// The `sh` blocks of the README's walk-through, in order.
fn walkthrough_script() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(SECTION)
        .expect("the README has the walk-through");
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut script = String::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, line) => {
                script.push_str(line);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(
        script.contains("build_route"),
        "no commands found:\n{script}"
    );
    script
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    if !can_make_namespaces("the_readme_walkthrough_works_as_written") {
        return;
    }
    let script = walkthrough_script();
    let dir = TempDir::new("readme");
    let script_path = dir.write("walkthrough.sh", &script);
    let bin_dir = Path::new(common::SKYWIRED).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let namespace = Namespaces::new("skywire-readme", 1);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &namespace.name(0), "bash", "-e"])
        .arg(&script_path)
        .current_dir(dir.root())
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .env_remove("SKYWIRE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the walk-through did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logs: String = ["a", "b", "c"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path(&format!("mesh/{n}/log"))).unwrap_or_default())
        .collect();
    assert!(
        output.status.success(),
        "the walk-through failed:\n{stdout}\n{stderr}\n--- logs ---\n{logs}"
    );
    assert!(stdout.contains("route to"), "{stdout}");
    assert!(stdout.contains(": 2 hops, cost "), "find_route: {stdout}");
    assert!(stdout.contains("nodes: 3\n"), "list_nodes: {stdout}");
    assert!(stdout.contains("4 sent, 4 received, 0% loss"), "{stdout}");
    assert_eq!(
        stdout.matches("forward").count(),
        2,
        "B's two rules:\n{stdout}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    for n in ["a", "b", "c"] {
        assert!(
            !dir.path(&format!("mesh/{n}/visctl.sock")).exists(),
            "node {n} left its socket"
        );
    }
}
