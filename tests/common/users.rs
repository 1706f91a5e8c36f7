//! Users and groups of a test's own, made with `useradd` and `groupadd` (as root) and removed
//! when dropped, panics included; running a program as one of them (the child drops root
//! before it runs the program); and the built programs copied where such users can run them.

#![allow(dead_code)]

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::unistd::{Gid, Group, Uid, User};

use super::temp::TempDir;
use super::{SKYWIRED, VISCTL};

/// `useradd`, `groupadd` and their removals take a lock on /etc/passwd and /etc/group and fail
/// when another holds it: the tests of one binary take turns.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Runs an account tool, one at a time.
fn account_tool(program: &str, args: &[&str]) -> Output {
    let _turn = ACCOUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"))
}

fn show(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A name no other test (of this or another process) uses: `sky` `label` pid counter, within
/// the 32 characters account names may have.
fn unique_name(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sky{label}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A system group, removed on drop.
#[derive(Debug)]
pub struct TestGroup {
    pub name: String,
    pub gid: Gid,
}

impl TestGroup {
    /// A new group whose name starts with `sky` and `label`.
    pub fn create(label: &str) -> TestGroup {
        let name = unique_name(label);
        let added = account_tool("groupadd", &["--system", &name]);
        assert!(added.status.success(), "groupadd {name}: {}", show(&added));
        let group = Group::from_name(&name).unwrap().unwrap();
        TestGroup {
            name,
            gid: group.gid,
        }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = account_tool("groupdel", &[&self.name]);
    }
}

/// A system user with a group of its own, member of some test groups; removed on drop.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// Its supplementary groups.
    pub groups: Vec<Gid>,
}

impl TestUser {
    /// A new user whose name starts with `sky` and `label`, member of `groups`.
    pub fn create(label: &str, groups: &[&TestGroup]) -> TestUser {
        let name = unique_name(label);
        let names: Vec<&str> = groups.iter().map(|group| group.name.as_str()).collect();
        let mut args = vec![
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ];
        let list = names.join(",");
        if !names.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(&name);
        let added = account_tool("useradd", &args);
        assert!(added.status.success(), "useradd {name}: {}", show(&added));
        let user = User::from_name(&name).unwrap().unwrap();
        TestUser {
            name,
            uid: user.uid,
            gid: user.gid,
            groups: groups.iter().map(|group| group.gid).collect(),
        }
    }

    /// Gives `path` to the user.
    pub fn own(&self, path: &Path) {
        nix::unistd::chown(path, Some(self.uid), Some(self.gid)).unwrap();
    }

    /// Makes `command` run as this user, with its groups and nothing else of root.
    pub fn run(&self, command: &mut Command) {
        let (uid, gid, groups) = (self.uid, self.gid, self.groups.clone());
        // SAFETY: between fork and exec the closure only makes three system calls, which
        // neither allocate nor take locks: the groups, the group, then the user (last, as
        // root is needed for the other two).
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
                nix::unistd::setgid(gid).map_err(io::Error::from)?;
                nix::unistd::setuid(uid).map_err(io::Error::from)?;
                Ok(())
            });
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Even while a process of the user is still exiting (after a failed test).
        let _ = account_tool("userdel", &["--force", &self.name]);
    }
}

/// `skywired` and `visctl`, copied into `dir/bin` (mode 0755, like the folders above them) so
/// that any user can run them: the build's own folder may be closed to others.
pub fn programs_for_everyone(dir: &TempDir) -> (PathBuf, PathBuf) {
    let bin = dir.path("bin");
    fs::create_dir_all(&bin).unwrap();
    for folder in [dir.root(), bin.as_path()] {
        fs::set_permissions(folder, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let copy = |from: &str| {
        let to = bin.join(Path::new(from).file_name().unwrap());
        copy_program(Path::new(from), &to);
        to
    };
    (copy(SKYWIRED), copy(VISCTL))
}

/// Copies the program `from` to `to` with mode 0755, by `install` in a process of its own.
/// Written from this process, the copy would be open for writing here while other test threads
/// spawn children: each child inherits the descriptor and holds it until its own exec, and
/// running a program that any process holds open for writing fails with ETXTBSY ("Text file
/// busy"). `install` forks nothing, so once it has exited no process holds the copy open.
pub fn copy_program(from: &Path, to: &Path) {
    let output = Command::new("install")
        .arg("--mode=0755")
        .arg(from)
        .arg(to)
        .output()
        .unwrap_or_else(|err| panic!("cannot run install: {err}"));
    assert!(
        output.status.success(),
        "install {} {}: {}",
        from.display(),
        to.display(),
        show(&output)
    );
}
