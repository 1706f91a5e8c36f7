//! Linux capabilities as the app launcher needs them: their names (a catalog entry's
//! `capabilities:`), the sets this process holds, and the calls that leave a child, between fork
//! and exec, only the capabilities its entry asks for.

use std::fmt;
use std::io;

use nix::libc;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The capabilities Linux knows, by number (`capabilities(7)`).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `PR_CAP_AMBIENT`'s sub-options, as prctl's integer argument.
const AMBIENT_RAISE: libc::c_ulong = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
const AMBIENT_CLEAR_ALL: libc::c_ulong = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
/// Bounding-set numbers are tried up to here; the kernel answers EINVAL past its last one.
const MAX_CAPABILITY_NUMBER: u8 = 63;

/// One capability, such as `CAP_NET_ADMIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(u8);

impl Capability {
    /// `CAP_NET_ADMIN`: network configuration, TUN devices.
    pub const NET_ADMIN: Capability = Capability(12);
    /// `CAP_SETPCAP`: needed to shrink the bounding set.
    pub const SETPCAP: Capability = Capability(8);

    /// The capability of that name (`CAP_NET_ADMIN`), if Linux has one.
    pub fn from_name(name: &str) -> Option<Capability> {
        let number = NAMES.iter().position(|known| *known == name)?;
        u8::try_from(number).ok().map(Capability)
    }

    /// Its name, such as `CAP_NET_ADMIN`.
    pub fn name(self) -> &'static str {
        NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("CAP_UNKNOWN")
    }

    fn bit(self) -> u64 {
        1 << self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Capability {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Capability, D::Error> {
        let name = String::deserialize(deserializer)?;
        Capability::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{name:?} is not a Linux capability: write its name as capabilities(7) does, such as CAP_NET_ADMIN"
            ))
        })
    }
}

/// A set of capabilities, as the kernel keeps it: one bit per number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilitySet(u64);

impl CapabilitySet {
    /// Whether `capability` is in the set.
    pub fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// Whether every capability of `self` is in `other`.
    pub fn is_subset(self, other: CapabilitySet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, by number.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        (0..=MAX_CAPABILITY_NUMBER)
            .map(Capability)
            .filter(move |capability| self.contains(*capability))
    }

    fn split(self) -> [u32; 2] {
        // The two halves of a 64-bit mask: truncation is the point.
        [self.0 as u32, (self.0 >> 32) as u32]
    }

    fn join(low: u32, high: u32) -> CapabilitySet {
        CapabilitySet(u64::from(low) | u64::from(high) << 32)
    }
}

impl FromIterator<Capability> for CapabilitySet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> CapabilitySet {
        CapabilitySet(iter.into_iter().fold(0, |set, cap| set | cap.bit()))
    }
}

impl fmt::Display for CapabilitySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (index, capability) in self.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(capability.name())?;
        }
        Ok(())
    }
}

/// The capability sets of the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCapabilities {
    /// What it uses now.
    pub effective: CapabilitySet,
    /// What it may use.
    pub permitted: CapabilitySet,
    /// What it may hand on through exec.
    pub inheritable: CapabilitySet,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl HeldCapabilities {
    /// The calling thread's sets (`capget`).
    pub fn current() -> io::Result<HeldCapabilities> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: capget writes two `struct __user_cap_data_struct`s (version 3), which CapData
        // lays out, after reading the header.
        let result = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        let [low, high] = data;
        Ok(HeldCapabilities {
            effective: CapabilitySet::join(low.effective, high.effective),
            permitted: CapabilitySet::join(low.permitted, high.permitted),
            inheritable: CapabilitySet::join(low.inheritable, high.inheritable),
        })
    }
}

/// Why a child cannot be given the capabilities its entry asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    /// The daemon does not hold them itself.
    #[error("it asks for {missing}, which skywired does not hold: run skywired with it (the systemd unit's AmbientCapabilities=) or take it out of the app's `capabilities`")]
    NotHeld {
        /// The capabilities asked for and not held.
        missing: CapabilitySet,
    },
    /// The daemon's own sets cannot be read.
    #[error("cannot read skywired's capabilities: {0}")]
    Unreadable(String),
}

/// What a child is to hold, worked out before the fork so that [`ChildCapabilities::apply`],
/// which runs between fork and exec, only makes system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildCapabilities {
    keep: CapabilitySet,
    held: HeldCapabilities,
    /// The inheritable set to give the child, when it must change.
    inheritable: Option<CapabilitySet>,
    clears_bounding: bool,
}

impl ChildCapabilities {
    /// A child that keeps `keep` and nothing else, started by this thread.
    ///
    /// A program run by a user other than root gets capabilities only from the ambient set
    /// (and from its file's own capabilities), so emptying the ambient set is enough; the
    /// inheritable set changes only when `keep` needs more of it. A program run as root gets its
    /// inheritable and bounding sets as permitted ones: both must shrink to `keep`, and the
    /// bounding set only shrinks with CAP_SETPCAP.
    pub fn new(keep: CapabilitySet) -> Result<ChildCapabilities, CapabilityError> {
        let held = HeldCapabilities::current()
            .map_err(|err| CapabilityError::Unreadable(err.to_string()))?;
        if !keep.is_subset(held.permitted) {
            return Err(CapabilityError::NotHeld {
                missing: CapabilitySet(keep.0 & !held.permitted.0),
            });
        }
        let inheritable = if runs_as_root() {
            Some(keep)
        } else if !keep.is_subset(held.inheritable) {
            Some(CapabilitySet(held.inheritable.0 | keep.0))
        } else {
            None
        };
        Ok(ChildCapabilities {
            keep,
            held,
            inheritable: inheritable.filter(|set| *set != held.inheritable),
            clears_bounding: held.effective.contains(Capability::SETPCAP),
        })
    }

    /// Whether the child's bounding set will hold only what it keeps (this process has
    /// CAP_SETPCAP). When not, a child run as root gets the whole of this process's bounding set.
    pub fn clears_bounding(&self) -> bool {
        self.clears_bounding
    }

    /// Gives the calling process (a child between fork and exec) the sets worked out in
    /// [`ChildCapabilities::new`]. Makes only async-signal-safe system calls (capset, prctl).
    pub fn apply(&self) -> io::Result<()> {
        // The inheritable set first: a capability can join it only while still in the bounding
        // set, and the ambient set only holds what it holds.
        if let Some(inheritable) = self.inheritable {
            let [inheritable_low, inheritable_high] = inheritable.split();
            let [effective_low, effective_high] = self.held.effective.split();
            let [permitted_low, permitted_high] = self.held.permitted.split();
            let mut header = CapHeader {
                version: CAPABILITY_VERSION_3,
                pid: 0,
            };
            let data = [
                CapData {
                    effective: effective_low,
                    permitted: permitted_low,
                    inheritable: inheritable_low,
                },
                CapData {
                    effective: effective_high,
                    permitted: permitted_high,
                    inheritable: inheritable_high,
                },
            ];
            // SAFETY: capset reads the header and two `struct __user_cap_data_struct`s
            // (version 3), which CapHeader and CapData lay out.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_capset,
                    &mut header as *mut CapHeader,
                    data.as_ptr(),
                )
            };
            if result != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if self.clears_bounding {
            for capability in (0..=MAX_CAPABILITY_NUMBER).map(Capability) {
                if self.keep.contains(capability) {
                    continue;
                }
                match prctl(libc::PR_CAPBSET_DROP, capability.0.into(), 0) {
                    Ok(()) => {}
                    // Past the kernel's last capability.
                    Err(err) if err.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(err) => return Err(err),
                }
            }
        }
        prctl(libc::PR_CAP_AMBIENT, AMBIENT_CLEAR_ALL, 0)?;
        for capability in self.keep.iter() {
            prctl(libc::PR_CAP_AMBIENT, AMBIENT_RAISE, capability.0.into())?;
        }
        Ok(())
    }
}

/// Whether this process runs as root (real or effective): then exec hands a program its
/// inheritable and bounding sets as permitted capabilities.
pub fn runs_as_root() -> bool {
    nix::unistd::getuid().is_root() || nix::unistd::geteuid().is_root()
}

/// `prctl(option, argument, detail, 0, 0)`, for the options that take plain integers.
fn prctl(option: libc::c_int, argument: libc::c_ulong, detail: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP and PR_CAP_AMBIENT read their integer arguments and nothing else.
    if unsafe { libc::prctl(option, argument, detail, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree_with_the_kernel() {
        assert_eq!(
            Capability::from_name("CAP_NET_ADMIN"),
            Some(Capability::NET_ADMIN)
        );
        assert_eq!(
            Capability::from_name("CAP_SETPCAP"),
            Some(Capability::SETPCAP)
        );
        assert_eq!(
            Capability::from_name("CAP_CHECKPOINT_RESTORE").unwrap().0,
            40
        );
        assert_eq!(Capability::from_name("cap_net_admin"), None);
        assert_eq!(Capability::from_name("NET_ADMIN"), None);
    }

    #[test]
    fn sets_print_their_names() {
        let set: CapabilitySet = [Capability::NET_ADMIN, Capability::SETPCAP]
            .into_iter()
            .collect();
        assert_eq!(set.to_string(), "CAP_SETPCAP, CAP_NET_ADMIN");
        assert_eq!(CapabilitySet::default().to_string(), "none");
        assert!(set.contains(Capability::NET_ADMIN));
        assert!(CapabilitySet::default().is_subset(set));
        assert!(!set.is_subset(CapabilitySet::default()));
        assert_eq!(CapabilitySet::join(set.split()[0], set.split()[1]), set);
    }

    #[test]
    fn the_status_file_agrees_with_capget() {
        let held = HeldCapabilities::current().unwrap();
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let field = |key: &str| {
            let line = status.lines().find(|line| line.starts_with(key)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(held.effective.0, field("CapEff:"));
        assert_eq!(held.permitted.0, field("CapPrm:"));
        assert_eq!(held.inheritable.0, field("CapInh:"));
    }

    #[test]
    fn capabilities_not_held_are_refused() {
        let held = HeldCapabilities::current().unwrap();
        let missing = (0..=40u8)
            .map(Capability)
            .find(|capability| !held.permitted.contains(*capability));
        // Root in a container may hold every capability: then there is nothing to ask for.
        if let Some(missing) = missing {
            let err = ChildCapabilities::new([missing].into_iter().collect()).unwrap_err();
            assert!(err.to_string().contains(missing.name()), "{err}");
        }
        ChildCapabilities::new(CapabilitySet::default()).unwrap();
    }
}
