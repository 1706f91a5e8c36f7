//! What tests need from the machine — outside programs and root — and the one way a test skips
//! the part it cannot run here: a line `SKIP <test>: needs ping (apt-get install iputils-ping)`
//! written straight to standard error, so that it shows even when the test passes. With `CI`
//! set in the environment nothing is skipped: the test fails instead. Tests of every crate
//! include this file, so it uses only std.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// What a test that needs root says it needs.
const ROOT: &str = "root (network namespaces, TUN devices: run the tests as root, as CI does)";

/// Whether `test` may run the part that needs `program` (a name looked up in `PATH`, or a
/// path); when it is missing, skips that part (see [`Machine::skip`]) and returns false.
pub fn require(program: &str, test: &str) -> bool {
    Machine::current().require(program, test, &mut std::io::stderr())
}

/// Whether `test` may run the part that needs root; when this process is not root, skips that
/// part (see [`Machine::skip`]) and returns false.
pub fn require_root(test: &str) -> bool {
    Machine::current().require_root(test, &mut std::io::stderr())
}

/// Runs `command` with `input` on its standard input and returns what it printed and how it
/// ended.
pub fn output_with_input(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Whether `program` can be run here, without a word when it cannot.
pub fn installed(program: &str) -> bool {
    Machine::current().installed(program)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
}

/// The Debian package that installs `program` (its file name, when it is a path).
pub fn package(program: &str) -> &'static str {
    let name = Path::new(program)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or(program);
    match name {
        "ip" => "iproute2",
        "ping" => "iputils-ping",
        "iperf3" => "iperf3",
        "wg" => "wireguard-tools",
        "wireguard-go" => "wireguard-go",
        "curl" => "curl",
        "ssh" | "ssh-keygen" => "openssh-client",
        "sshd" => "openssh-server",
        "python3" => "python3",
        "systemd-analyze" | "systemd-sysusers" | "systemd-tmpfiles" => "systemd",
        "setpriv" => "util-linux",
        "useradd" => "passwd",
        other => panic!("no package is known for `{other}`: add it to machine::package"),
    }
}

/// Where a test runs, as far as skipping goes: the folders programs are looked up in, whether
/// it runs as root, and whether every test must run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `PATH`: folders separated by `:`.
    pub path: Option<OsString>,
    pub root: bool,
    /// `CI` is set (to anything but the empty string): a skip fails the test.
    pub ci: bool,
}

impl Machine {
    /// This process's: `PATH` and `CI` from its environment, and whether it runs as root.
    pub fn current() -> Machine {
        Machine {
            path: std::env::var_os("PATH"),
            root: is_root(),
            ci: std::env::var_os("CI").is_some_and(|value| !value.is_empty()),
        }
    }

    /// Whether `program` is an executable file: the path itself when it holds a `/`, else in a
    /// folder of `PATH`.
    pub fn installed(&self, program: &str) -> bool {
        let executable = |path: &Path| {
            std::fs::metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        };
        if program.contains('/') {
            return executable(Path::new(program));
        }
        self.path.as_deref().is_some_and(|path| {
            std::env::split_paths(path)
                .filter(|dir| !dir.as_os_str().is_empty())
                .any(|dir| executable(&dir.join(program)))
        })
    }

    /// Whether `test` may run the part that needs `program`; when it is missing, skips that
    /// part, naming the package to install, and returns false.
    pub fn require(&self, program: &str, test: &str, log: &mut dyn Write) -> bool {
        if self.installed(program) {
            return true;
        }
        let needs = format!("{program} (apt-get install {})", package(program));
        self.skip(test, &needs, log);
        false
    }

    /// Whether `test` may run the part that needs root; when it may not, skips that part and
    /// returns false.
    pub fn require_root(&self, test: &str, log: &mut dyn Write) -> bool {
        if self.root {
            return true;
        }
        self.skip(test, ROOT, log);
        false
    }

    /// Skips the part of `test` that needs `needs`: writes `SKIP <test>: needs <needs>` to
    /// `log`, or, with [`Machine::ci`], fails the test with that line.
    pub fn skip(&self, test: &str, needs: &str, log: &mut dyn Write) {
        let line = format!("SKIP {test}: needs {needs}");
        assert!(
            !self.ci,
            "{line}; CI is set, so no test may skip: install what it needs (or unset CI)"
        );
        // A failed write to standard error leaves nothing to tell.
        let _ = log.write_all(format!("{line}\n").as_bytes());
    }
}
