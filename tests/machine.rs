//! The check every test makes before it runs an outside program (`common/machine.rs`), against
//! folders made here as `PATH`: a missing program is named with its package, a present one
//! runs, and with `CI` set a skip fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/machine.rs"]
mod machine;
#[path = "common/temp.rs"]
mod temp;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use machine::Machine;
use temp::TempDir;

/// An empty folder of its own, removed on drop, to serve as `PATH`.
struct Folder(TempDir);

impl Folder {
    fn new() -> Folder {
        Folder(TempDir::new("machine"))
    }

    /// A file `name` in this folder with permissions `mode`.
    fn file(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.0.write(name, "#!/bin/sh\n");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A machine whose `PATH` is this folder only, not root.
    fn machine(&self, ci: bool) -> Machine {
        Machine {
            path: Some(self.0.root().as_os_str().to_owned()),
            root: false,
            ci,
        }
    }
}

/// What `machine.require(program, test)` returned and wrote.
fn require(machine: &Machine, program: &str, test: &str) -> (bool, String) {
    let mut log = Vec::new();
    let present = machine.require(program, test, &mut log);
    (present, String::from_utf8(log).unwrap())
}

#[test]
fn a_missing_program_is_skipped_with_one_line_that_names_its_package() {
    let empty = Folder::new();
    let machine = empty.machine(false);
    let cases = [
        ("ping", "iputils-ping"),
        ("iperf3", "iperf3"),
        ("wg", "wireguard-tools"),
        ("wireguard-go", "wireguard-go"),
        ("curl", "curl"),
        ("ip", "iproute2"),
        ("ssh", "openssh-client"),
        ("sshd", "openssh-server"),
        ("python3", "python3"),
    ];
    for (program, package) in cases {
        assert_eq!(
            require(&machine, program, "some_test"),
            (
                false,
                format!("SKIP some_test: needs {program} (apt-get install {package})\n")
            )
        );
    }
    // A path names its program's package too.
    let (present, line) = require(&machine, "/nowhere/sbin/sshd", "some_test");
    assert!(!present);
    assert_eq!(
        line,
        "SKIP some_test: needs /nowhere/sbin/sshd (apt-get install openssh-server)\n"
    );
}

#[test]
#[should_panic(expected = "SKIP some_test: needs ping (apt-get install iputils-ping); CI is set")]
fn with_ci_set_a_missing_program_fails_the_test() {
    let empty = Folder::new();
    require(&empty.machine(true), "ping", "some_test");
}

#[test]
fn a_test_that_needs_root_is_skipped_unless_root() {
    let empty = Folder::new();
    let mut log = Vec::new();
    assert!(!empty.machine(false).require_root("some_test", &mut log));
    assert_eq!(
        String::from_utf8(log).unwrap(),
        "SKIP some_test: needs root (network namespaces, TUN devices: run the tests as root, as CI does)\n"
    );
    let mut log = Vec::new();
    let root = Machine {
        root: true,
        ..empty.machine(true)
    };
    assert!(root.require_root("some_test", &mut log));
    assert!(log.is_empty());
}

#[test]
#[should_panic(expected = "SKIP some_test: needs root (network namespaces, TUN devices")]
fn with_ci_set_a_test_that_needs_root_fails() {
    let empty = Folder::new();
    empty
        .machine(true)
        .require_root("some_test", &mut Vec::new());
}

#[test]
fn a_program_in_the_path_runs_without_a_word_even_under_ci() {
    let folder = Folder::new();
    folder.file("ping", 0o755);
    for ci in [false, true] {
        assert_eq!(
            require(&folder.machine(ci), "ping", "some_test"),
            (true, String::new())
        );
    }
    let path = folder.file("sshd", 0o700);
    let no_path = Machine {
        path: None,
        ..folder.machine(true)
    };
    assert!(no_path.installed(path.to_str().unwrap()));
}

#[test]
fn a_file_that_cannot_be_executed_and_a_folder_are_not_programs() {
    let folder = Folder::new();
    folder.file("ping", 0o644);
    fs::create_dir(folder.0.path("curl")).unwrap();
    let machine = folder.machine(false);
    assert!(!machine.installed("ping"));
    assert!(!machine.installed("curl"));
    assert!(!machine.installed(&folder.0.path("ping").display().to_string()));
}

#[test]
fn no_path_at_all_finds_nothing() {
    let machine = Machine {
        path: None,
        ..Folder::new().machine(false)
    };
    assert_eq!(
        require(&machine, "wg", "some_test"),
        (
            false,
            "SKIP some_test: needs wg (apt-get install wireguard-tools)\n".to_string()
        )
    );
}
