//! Who is on the other end of a control connection, and what it may do: its credentials as the
//! kernel recorded them when it connected (`SO_PEERCRED`, its groups from `SO_PEERGROUPS`),
//! whether it is a process of a launched app, and the role that gives it under the configured
//! groups. The socket itself is open to all: these decide.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd};

use nix::libc;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Gid, Group, Uid, User};

use super::ControlError;
use crate::command::Role;
use crate::signal::AppId;
use crate::supervisor::Ancestry;

/// Most supplementary groups a process can have (Linux's `NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;
/// Groups asked for at first; the kernel says how many more there are.
const FIRST_GROUPS: usize = 64;

/// A peer's credentials, as they were when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Credentials {
    /// Its process; `None` when the kernel gave none (a process in another PID namespace).
    pub(super) pid: Option<u32>,
    /// Its effective user.
    pub(super) uid: Uid,
    /// Its effective group.
    pub(super) gid: Gid,
    /// Its supplementary groups.
    pub(super) groups: Vec<Gid>,
}

impl Credentials {
    /// The credentials of the peer of the connected Unix socket `socket`.
    pub(super) fn of(socket: &impl AsFd) -> io::Result<Credentials> {
        let socket = socket.as_fd();
        let credentials = getsockopt(&socket, PeerCredentials)?;
        Ok(Credentials {
            pid: u32::try_from(credentials.pid()).ok().filter(|&pid| pid > 0),
            uid: Uid::from_raw(credentials.uid()),
            gid: Gid::from_raw(credentials.gid()),
            groups: peer_groups(socket)?,
        })
    }

    fn is_member(&self, group: Gid) -> bool {
        self.gid == group || self.groups.contains(&group)
    }
}

/// The supplementary groups of the socket's peer (`SO_PEERGROUPS`, Linux 4.13). nix has no
/// wrapper for it, since its length varies: the kernel fills a `gid_t` array and, when the
/// array is too short, fails with ERANGE and sets the length to what it needs.
fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<Gid>> {
    let gid_size = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; FIRST_GROUPS];
    // Twice at most: the second time with the room the kernel asked for (a third in case the
    // peer's groups grew meanwhile, which they cannot: they are those of its connect()).
    for _ in 0..3 {
        let mut length = libc::socklen_t::try_from(groups.len() * gid_size)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `groups` owns `length` writable bytes, suitably aligned for gid_t; the kernel
        // writes at most `length` bytes there and stores in `length` how many it wrote (or, with
        // ERANGE, how many it needs).
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut length,
            )
        };
        let length = usize::try_from(length).unwrap_or(0);
        if result == 0 {
            groups.truncate(length / gid_size);
            return Ok(groups.into_iter().map(Gid::from_raw).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || length / gid_size > MAX_GROUPS {
            return Err(err);
        }
        groups.resize(length / gid_size, 0);
    }
    Err(io::Error::other(
        "the kernel kept asking for more room for the peer's groups",
    ))
}

/// A group named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedGroup {
    name: String,
    gid: Gid,
    /// The config key that names it.
    key: &'static str,
}

impl NamedGroup {
    fn find(name: Option<&str>, key: &'static str) -> Result<Option<NamedGroup>, ControlError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let unknown = || ControlError::UnknownGroup {
            group: name.to_owned(),
            key,
        };
        let group = Group::from_name(name)
            .map_err(|errno| ControlError::GroupLookup {
                group: name.to_owned(),
                source: io::Error::from(errno),
            })?
            .ok_or_else(unknown)?;
        Ok(Some(NamedGroup {
            name: name.to_owned(),
            gid: group.gid,
            key,
        }))
    }
}

impl fmt::Display for NamedGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group `{}` (control.{})", self.name, self.key)
    }
}

/// Who may use the control socket: root, skywired's own user and `control.admin_group` may
/// run every command; `control.socket_group` and launched apps the read-only ones.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    own_uid: Uid,
    /// skywired's user as messages name it: its name, when it has one, and uid.
    own_user: String,
    admin_group: Option<NamedGroup>,
    socket_group: Option<NamedGroup>,
}

impl Policy {
    /// The policy of a skywired running as this process's effective user, with the groups
    /// named in the config, which must exist.
    pub(super) fn new(
        admin_group: Option<&str>,
        socket_group: Option<&str>,
    ) -> Result<Policy, ControlError> {
        let own_uid = Uid::effective();
        let own_user = match User::from_uid(own_uid) {
            Ok(Some(user)) => format!("`{}` (uid {own_uid})", user.name),
            _ => format!("uid {own_uid}"),
        };
        Ok(Policy {
            own_uid,
            own_user,
            admin_group: NamedGroup::find(admin_group, "admin_group")?,
            socket_group: NamedGroup::find(socket_group, "socket_group")?,
        })
    }

    /// What the peer with `credentials` is, given where its process is in the launched apps'
    /// trees. A launched app runs as skywired's own user, so a process of that user whose tree
    /// could not be followed is taken for an app's.
    pub(super) fn admit(&self, credentials: Credentials, ancestry: Ancestry) -> Peer {
        let member = |group: &Option<NamedGroup>| {
            group
                .as_ref()
                .is_some_and(|group| credentials.is_member(group.gid))
        };
        let standing = match ancestry {
            Ancestry::App(app) => Standing::App(app),
            Ancestry::Unknown if credentials.uid == self.own_uid => Standing::Untraced,
            _ if credentials.uid.is_root() => Standing::Root,
            _ if credentials.uid == self.own_uid => Standing::OwnUser,
            _ if member(&self.admin_group) => Standing::AdminGroup,
            _ if member(&self.socket_group) => Standing::SocketGroup,
            _ => Standing::Stranger,
        };
        Peer {
            credentials,
            standing,
        }
    }

    /// Whether `peer` may run `command` (its name) with the role it needs (`None`: the command
    /// table gives it none).
    pub(super) fn check<'a>(
        &'a self,
        peer: &'a Peer,
        command: &'a str,
        needed: Option<Role>,
    ) -> Result<(), Denied<'a>> {
        let Some(needed) = needed else {
            return Err(Denied::NoRole { command });
        };
        match peer.role() {
            Some(role) if role.allows(needed) => Ok(()),
            Some(_) => Err(Denied::ReadOnly {
                command,
                peer,
                policy: self,
            }),
            None => Err(Denied::Connection { peer, policy: self }),
        }
    }

    /// Why `peer` may not connect at all; `None` when it may.
    pub(super) fn refusal<'a>(&'a self, peer: &'a Peer) -> Option<Denied<'a>> {
        peer.role()
            .is_none()
            .then_some(Denied::Connection { peer, policy: self })
    }
}

/// Who may do what, as refusals say it.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = if self.own_uid.is_root() {
            "root (skywired's own user)".to_owned()
        } else {
            format!("root, skywired's own user {}", self.own_user)
        };
        match &self.admin_group {
            Some(group) => write!(
                f,
                "{users} and the members of {group} may run every command"
            )?,
            None => write!(
                f,
                "{users} may run every command (no control.admin_group is set)"
            )?,
        }
        match &self.socket_group {
            Some(group) => write!(
                f,
                "; the members of {group} and launched apps, the read-only ones"
            ),
            None => write!(
                f,
                "; launched apps, the read-only ones (no control.socket_group is set)"
            ),
        }
    }
}

/// Why a peer has the role it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Standing {
    /// uid 0.
    Root,
    /// skywired's own user.
    OwnUser,
    /// A member of `control.admin_group`.
    AdminGroup,
    /// A member of `control.socket_group`.
    SocketGroup,
    /// A process of a launched app, or of one of its descendants.
    App(AppId),
    /// A process of skywired's own user whose tree could not be followed through /proc (it
    /// exited, or is in another PID namespace), so it may be an app's.
    Untraced,
    /// None of the above.
    Stranger,
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Standing::Root => f.write_str("root"),
            Standing::OwnUser => f.write_str("skywired's own user"),
            Standing::AdminGroup => f.write_str("a member of control.admin_group"),
            Standing::SocketGroup => f.write_str("a member of control.socket_group"),
            Standing::App(app) => write!(f, "a process of launched app {app}"),
            Standing::Untraced => f.write_str(
                "a process of skywired's own user whose process tree cannot be followed in /proc, which may be a launched app's",
            ),
            Standing::Stranger => f.write_str("neither root, nor skywired's user, nor a member of its groups"),
        }
    }
}

/// The peer of one control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    credentials: Credentials,
    standing: Standing,
}

impl Peer {
    /// What it may do; `None`: nothing.
    pub(super) fn role(&self) -> Option<Role> {
        match self.standing {
            Standing::Root | Standing::OwnUser | Standing::AdminGroup => Some(Role::Admin),
            Standing::SocketGroup | Standing::App(_) | Standing::Untraced => Some(Role::ReadOnly),
            Standing::Stranger => None,
        }
    }

    /// Why it has that role.
    pub(super) fn standing(&self) -> Standing {
        self.standing
    }
}

/// `uid 1001, pid 4242`.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {}", self.credentials.uid)?;
        if let Some(pid) = self.credentials.pid {
            write!(f, ", pid {pid}")?;
        }
        Ok(())
    }
}

/// Why a peer may not do what it asked. Each message names who may.
#[derive(Debug, thiserror::Error)]
pub(super) enum Denied<'a> {
    /// The peer may not use the socket at all.
    #[error(
        "permission denied: this client ({peer}) may not use skywired's control socket: {policy}"
    )]
    Connection {
        /// The peer.
        peer: &'a Peer,
        /// Who may.
        policy: &'a Policy,
    },
    /// The peer may run only the read-only commands.
    #[error("permission denied: `{command}` needs an administrator, and this client ({peer}) may run only the read-only commands, as {}: {policy}", .peer.standing)]
    ReadOnly {
        /// The command's name.
        command: &'a str,
        /// The peer.
        peer: &'a Peer,
        /// Who may.
        policy: &'a Policy,
    },
    /// The command table gives this use of the command no role.
    #[error("permission denied: the command table gives this use of `{command}` no role, so nobody may run it")]
    NoRole {
        /// The command's name.
        command: &'a str,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const OWN: Uid = Uid::from_raw(990);
    const ADMINS: Gid = Gid::from_raw(2001);
    const READERS: Gid = Gid::from_raw(2002);

    fn policy_with(admin: bool, readers: bool) -> Policy {
        let group = |name: &str, gid, key| NamedGroup {
            name: name.to_owned(),
            gid,
            key,
        };
        Policy {
            own_uid: OWN,
            own_user: "`skyd` (uid 990)".to_owned(),
            admin_group: admin.then(|| group("skyadm", ADMINS, "admin_group")),
            socket_group: readers.then(|| group("skyread", READERS, "socket_group")),
        }
    }

    fn credentials(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            pid: Some(4242),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            groups: groups.iter().copied().map(Gid::from_raw).collect(),
        }
    }

    #[test]
    fn roles_follow_the_user_its_groups_and_its_process_tree() {
        let policy = policy_with(true, true);
        let cases = [
            (credentials(0, 0, &[]), Ancestry::NoApp, Standing::Root),
            (
                credentials(990, 990, &[]),
                Ancestry::NoApp,
                Standing::OwnUser,
            ),
            (
                credentials(1001, 1001, &[7, 2001]),
                Ancestry::NoApp,
                Standing::AdminGroup,
            ),
            // The primary group counts as well as the supplementary ones.
            (
                credentials(1001, 2001, &[]),
                Ancestry::NoApp,
                Standing::AdminGroup,
            ),
            (
                credentials(1002, 1002, &[2002]),
                Ancestry::NoApp,
                Standing::SocketGroup,
            ),
            (
                credentials(1003, 1003, &[7]),
                Ancestry::NoApp,
                Standing::Stranger,
            ),
            // Apps run as skywired's user (or root): their tree decides, not the user.
            (
                credentials(990, 990, &[]),
                Ancestry::App(3),
                Standing::App(3),
            ),
            (
                credentials(0, 0, &[2001]),
                Ancestry::App(4),
                Standing::App(4),
            ),
            (
                credentials(990, 990, &[]),
                Ancestry::Unknown,
                Standing::Untraced,
            ),
            // Another user's process need not be visible: apps do not run as other users.
            (credentials(0, 0, &[]), Ancestry::Unknown, Standing::Root),
            (
                credentials(1001, 1001, &[2001]),
                Ancestry::Unknown,
                Standing::AdminGroup,
            ),
        ];
        for (credentials, ancestry, standing) in cases {
            let peer = policy.admit(credentials.clone(), ancestry);
            assert_eq!(peer.standing(), standing, "{credentials:?} {ancestry:?}");
        }
        let role = |uid, groups: &[u32]| {
            policy
                .admit(credentials(uid, uid, groups), Ancestry::NoApp)
                .role()
        };
        assert_eq!(role(0, &[]), Some(Role::Admin));
        assert_eq!(role(1002, &[2002]), Some(Role::ReadOnly));
        assert_eq!(role(1003, &[]), None);
        // Without the groups, only root and skywired's user are left.
        let bare = Policy {
            admin_group: None,
            socket_group: None,
            ..policy.clone()
        };
        let peer = bare.admit(credentials(1001, 1001, &[2001, 2002]), Ancestry::NoApp);
        assert_eq!(peer.role(), None);
    }

    #[test]
    fn refusals_name_the_groups() {
        let policy = policy_with(true, true);
        let stranger = policy.admit(credentials(1003, 1003, &[]), Ancestry::NoApp);
        let refusal = policy.refusal(&stranger).unwrap().to_string();
        assert_eq!(
            refusal,
            "permission denied: this client (uid 1003, pid 4242) may not use skywired's control \
             socket: root, skywired's own user `skyd` (uid 990) and the members of group `skyadm` \
             (control.admin_group) may run every command; the members of group `skyread` \
             (control.socket_group) and launched apps, the read-only ones"
        );
        assert!(policy
            .check(&stranger, "status", Some(Role::ReadOnly))
            .is_err());

        let reader = policy.admit(credentials(1002, 1002, &[2002]), Ancestry::NoApp);
        assert!(policy.refusal(&reader).is_none());
        assert!(policy
            .check(&reader, "status", Some(Role::ReadOnly))
            .is_ok());
        let denied = policy
            .check(&reader, "start", Some(Role::Admin))
            .unwrap_err()
            .to_string();
        assert!(
            denied.starts_with(
                "permission denied: `start` needs an administrator, and this client (uid 1002, \
                 pid 4242) may run only the read-only commands, as a member of \
                 control.socket_group: root, "
            ),
            "{denied}"
        );
        assert!(
            denied.contains("group `skyadm` (control.admin_group)"),
            "{denied}"
        );
        let app = policy.admit(credentials(990, 990, &[]), Ancestry::App(7));
        let denied = policy
            .check(&app, "shutdown", Some(Role::Admin))
            .unwrap_err()
            .to_string();
        assert!(
            denied.contains("as a process of launched app 7"),
            "{denied}"
        );

        let admin = policy.admit(credentials(0, 0, &[]), Ancestry::NoApp);
        assert!(policy.check(&admin, "start", Some(Role::Admin)).is_ok());
        let nobody = policy.check(&admin, "vpn", None).unwrap_err().to_string();
        assert!(
            nobody.contains("gives this use of `vpn` no role"),
            "{nobody}"
        );

        let bare = policy_with(false, false).to_string();
        assert!(
            bare.contains("(no control.admin_group is set)")
                && bare.contains("(no control.socket_group is set)"),
            "{bare}"
        );
        let as_root = Policy {
            own_uid: Uid::from_raw(0),
            ..policy_with(true, false)
        }
        .to_string();
        assert!(
            as_root.starts_with("root (skywired's own user) and the members of group `skyadm`"),
            "{as_root}"
        );
    }

    #[test]
    fn a_socket_pair_reports_this_process() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let credentials = Credentials::of(&ours).unwrap();
        assert_eq!(credentials.pid, Some(std::process::id()));
        assert_eq!(credentials.uid, Uid::effective());
        assert_eq!(credentials.gid, Gid::effective());
        let raw = |groups: &[Gid]| {
            let mut raw: Vec<u32> = groups.iter().map(|gid| gid.as_raw()).collect();
            raw.sort_unstable();
            raw
        };
        assert_eq!(
            raw(&credentials.groups),
            raw(&nix::unistd::getgroups().unwrap())
        );
    }

    #[test]
    fn a_peer_with_many_groups_is_read_in_full() {
        // More groups than the first buffer holds, when this process may set its groups.
        let made = std::thread::spawn(|| {
            let many: Vec<libc::gid_t> = (50_000..50_000 + 3 * FIRST_GROUPS as u32).collect();
            // In this thread only: setgroups is per thread at the system call (the C library's
            // wrapper would change every thread of the test process).
            // SAFETY: a raw setgroups on the calling thread, with a valid array of gid_t.
            let result = unsafe { libc::syscall(libc::SYS_setgroups, many.len(), many.as_ptr()) };
            if result != 0 {
                assert!(!Uid::effective().is_root(), "root cannot set its groups");
                return None;
            }
            let (ours, theirs) = UnixStream::pair().unwrap();
            Some((ours, theirs, many))
        })
        .join()
        .unwrap();
        let Some((ours, _theirs, many)) = made else {
            // Not root: nothing to check.
            return;
        };
        let credentials = Credentials::of(&ours).unwrap();
        let groups: Vec<libc::gid_t> = credentials.groups.iter().map(|gid| gid.as_raw()).collect();
        assert_eq!(groups, many);
    }
}
