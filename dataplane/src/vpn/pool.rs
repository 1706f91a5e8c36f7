//! The VPN server's address pools: one IPv4 and one IPv6 prefix, the server's own addresses
//! first, then one lease per client key, kept in a lease file in the state folder (YAML) so
//! that a client keeps its addresses across reconnects and restarts. The pool reads and writes
//! the file's text; the driver reads and writes the file.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::prefix::Prefix;
use crate::identity::NodeKey;

/// The lease file's name in the state folder.
pub const LEASE_FILE: &str = "vpn-leases.yaml";
/// The lease file's format version.
const LEASE_FILE_VERSION: u32 = 1;
/// A lease file larger than this is not read (a file of leases for every allowed key stays
/// far below).
pub const MAX_LEASE_FILE: u64 = 16 << 20;

/// The addresses leased to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its IPv4 address, when the server has an IPv4 pool.
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address, when the server has an IPv6 pool.
    pub ipv6: Option<Ipv6Addr>,
}

impl Lease {
    /// Whether `address` is one of this lease's.
    pub fn holds(&self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(v4) => self.ipv4 == Some(v4),
            IpAddr::V6(v6) => self.ipv6 == Some(v6),
        }
    }
}

/// Why the pool could not be set up or could not lease.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Neither an IPv4 nor an IPv6 pool was given.
    #[error(
        "the VPN server needs an address pool: set vpn.server.pool4 or vpn.server.pool6 (or both)"
    )]
    NoPool,
    /// A pool prefix is of the wrong family or leaves no room for clients.
    #[error("the VPN pool {prefix} {why}")]
    BadPrefix {
        /// The prefix.
        prefix: Prefix,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Every address of a pool is leased.
    #[error("the VPN pool {0} has no free address left: widen it, or remove stale leases from the lease file")]
    Exhausted(Prefix),
    /// The lease file could not be read or written.
    #[error("VPN lease file {}: {source}; check that the state folder is writable", .file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The lease file does not hold leases.
    #[error("VPN lease file {} is damaged ({problem}): move it away to start with fresh leases", .file.display())]
    Damaged {
        /// The file.
        file: PathBuf,
        /// What the parser said.
        problem: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    version: u32,
    #[serde(default)]
    leases: Vec<LeaseEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseEntry {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ipv6: Option<Ipv6Addr>,
}

/// The pools and their leases.
#[derive(Debug)]
pub struct Pool {
    pool4: Option<Prefix>,
    pool6: Option<Prefix>,
    leases: BTreeMap<NodeKey, Lease>,
}

impl Pool {
    /// Pools over `pool4` and `pool6`, with no lease yet ([`Pool::load`] adds the stored ones).
    pub fn new(pool4: Option<Prefix>, pool6: Option<Prefix>) -> Result<Pool, PoolError> {
        if pool4.is_none() && pool6.is_none() {
            return Err(PoolError::NoPool);
        }
        for (prefix, v4) in [(pool4, true), (pool6, false)] {
            let Some(prefix) = prefix else { continue };
            if prefix.is_ipv4() != v4 {
                return Err(PoolError::BadPrefix {
                    prefix,
                    why: if v4 {
                        "is not IPv4 (pool4 takes an IPv4 prefix)"
                    } else {
                        "is not IPv6 (pool6 takes an IPv6 prefix)"
                    },
                });
            }
            // The network address, the server's, one client, and IPv4's broadcast.
            if prefix.host_bits() < 2 {
                return Err(PoolError::BadPrefix {
                    prefix,
                    why: "leaves no room for clients: give it at least 2 host bits (/30 or /126)",
                });
            }
        }
        Ok(Pool {
            pool4,
            pool6,
            leases: BTreeMap::new(),
        })
    }

    /// The server's own addresses: the first of each pool.
    pub fn server(&self) -> Lease {
        Lease {
            ipv4: self.pool4.and_then(|p| p.nth(1)).and_then(as_v4),
            ipv6: self.pool6.and_then(|p| p.nth(1)).and_then(as_v6),
        }
    }

    /// The IPv4 pool.
    pub fn pool4(&self) -> Option<Prefix> {
        self.pool4
    }

    /// The IPv6 pool.
    pub fn pool6(&self) -> Option<Prefix> {
        self.pool6
    }

    /// Every lease.
    pub fn leases(&self) -> impl Iterator<Item = (&NodeKey, &Lease)> {
        self.leases.iter()
    }

    /// The lease of `key`, if it has one.
    pub fn lease_of(&self, key: &NodeKey) -> Option<Lease> {
        self.leases.get(key).copied()
    }

    /// The lease of `key`: the one it had, or new addresses. A new lease (`true`) must be
    /// saved ([`Pool::to_text`]) before it is given, and forgotten ([`Pool::forget`]) if it
    /// cannot be.
    pub fn lease(&mut self, key: NodeKey) -> Result<(Lease, bool), PoolError> {
        if let Some(lease) = self.leases.get(&key) {
            return Ok((*lease, false));
        }
        let lease = Lease {
            ipv4: match self.pool4 {
                Some(prefix) => Some(
                    self.free(prefix)
                        .and_then(as_v4)
                        .ok_or(PoolError::Exhausted(prefix))?,
                ),
                None => None,
            },
            ipv6: match self.pool6 {
                Some(prefix) => Some(
                    self.free(prefix)
                        .and_then(as_v6)
                        .ok_or(PoolError::Exhausted(prefix))?,
                ),
                None => None,
            },
        };
        self.leases.insert(key, lease);
        Ok((lease, true))
    }

    /// Drops the lease of `key` (one that could not be saved).
    pub fn forget(&mut self, key: &NodeKey) {
        self.leases.remove(key);
    }

    /// The first address of `prefix` that is neither the network's, the server's, IPv4's
    /// broadcast, nor leased.
    fn free(&self, prefix: Prefix) -> Option<IpAddr> {
        let last = if prefix.host_bits() >= 128 {
            u128::MAX
        } else {
            (1u128 << prefix.host_bits()) - 1
        };
        let end = if prefix.is_ipv4() {
            last
        } else {
            last.saturating_add(1)
        };
        // Leases are few (one per allowed key), so the scan ends after at most that many steps.
        (2..end)
            .filter_map(|offset| prefix.nth(offset))
            .find(|address| !self.leases.values().any(|lease| lease.holds(*address)))
    }

    /// Takes the leases stored in the lease file `file`, whose contents are `text`; leases
    /// that fall outside the pools (the pools changed) are forgotten.
    pub fn load(&mut self, file: &Path, text: &str) -> Result<(), PoolError> {
        let damaged = |problem: String| PoolError::Damaged {
            file: file.to_path_buf(),
            problem,
        };
        let parsed: LeaseFile = yaml_serde::from_str(text).map_err(|e| damaged(e.to_string()))?;
        if parsed.version != LEASE_FILE_VERSION {
            return Err(damaged(format!(
                "version {} where {LEASE_FILE_VERSION} was expected",
                parsed.version
            )));
        }
        for entry in parsed.leases {
            let key: NodeKey = entry
                .key
                .parse()
                .map_err(|e| damaged(format!("key {:?}: {e}", entry.key)))?;
            let lease = Lease {
                ipv4: entry.ipv4.filter(|a| self.fits(self.pool4, IpAddr::V4(*a))),
                ipv6: entry.ipv6.filter(|a| self.fits(self.pool6, IpAddr::V6(*a))),
            };
            let complete = lease.ipv4.is_some() == self.pool4.is_some()
                && lease.ipv6.is_some() == self.pool6.is_some();
            let taken = self.leases.values().any(|other| {
                lease.ipv4.is_some_and(|a| other.holds(a.into()))
                    || lease.ipv6.is_some_and(|a| other.holds(a.into()))
            });
            if complete && !taken {
                self.leases.insert(key, lease);
            } else {
                log::info!(
                    "VPN lease of {key} does not fit the pools any more: it gets new addresses"
                );
            }
        }
        Ok(())
    }

    /// Whether a stored address may still be leased from `pool`.
    fn fits(&self, pool: Option<Prefix>, address: IpAddr) -> bool {
        let Some(pool) = pool else { return false };
        let Some(offset) = pool.offset_of(address) else {
            return false;
        };
        let broadcast = pool.is_ipv4() && offset == (1u128 << pool.host_bits()) - 1;
        offset >= 2 && !broadcast
    }

    /// The lease file's contents.
    pub fn to_text(&self) -> String {
        let contents = LeaseFile {
            version: LEASE_FILE_VERSION,
            leases: self
                .leases
                .iter()
                .map(|(key, lease)| LeaseEntry {
                    key: key.to_string(),
                    ipv4: lease.ipv4,
                    ipv6: lease.ipv6,
                })
                .collect(),
        };
        // Keys, addresses and a number: nothing that YAML cannot write.
        yaml_serde::to_string(&contents).unwrap_or_default()
    }
}

fn as_v4(address: IpAddr) -> Option<Ipv4Addr> {
    match address {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

fn as_v6(address: IpAddr) -> Option<Ipv6Addr> {
    match address {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn pools() -> (Option<Prefix>, Option<Prefix>) {
        (
            Some("10.77.0.0/24".parse().unwrap()),
            Some("fd77::/64".parse().unwrap()),
        )
    }

    fn file() -> PathBuf {
        PathBuf::from("state").join(LEASE_FILE)
    }

    #[test]
    fn server_first_then_clients_stable_across_restarts() {
        let (pool4, pool6) = pools();
        let (a, b) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let mut pool = Pool::new(pool4, pool6).unwrap();
        assert_eq!(pool.server().ipv4, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(pool.server().ipv6, Some("fd77::1".parse().unwrap()));
        let (lease_a, new) = pool.lease(a).unwrap();
        assert!(new);
        let (lease_b, _) = pool.lease(b).unwrap();
        assert_eq!(lease_a.ipv4, Some("10.77.0.2".parse().unwrap()));
        assert_eq!(lease_b.ipv6, Some("fd77::3".parse().unwrap()));
        assert_eq!(
            pool.lease(a).unwrap(),
            (lease_a, false),
            "a reconnect keeps the lease"
        );
        let text = pool.to_text();
        let mut pool = Pool::new(pool4, pool6).unwrap();
        pool.load(&file(), &text).unwrap();
        assert_eq!(
            pool.lease_of(&b),
            Some(lease_b),
            "a restart keeps the lease"
        );
        assert_eq!(pool.lease(a).unwrap(), (lease_a, false));
    }

    #[test]
    fn small_pools_run_out_and_say_so() {
        let mut pool = Pool::new(Some("10.0.0.0/30".parse().unwrap()), None).unwrap();
        let (lease, _) = pool.lease(SecretKey::generate().public()).unwrap();
        assert_eq!(lease.ipv4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(lease.ipv6, None);
        let error = pool.lease(SecretKey::generate().public()).unwrap_err();
        assert!(matches!(error, PoolError::Exhausted(_)), "{error}");
    }

    #[test]
    fn a_lease_that_could_not_be_saved_is_forgotten() {
        let mut pool = Pool::new(Some("10.0.0.0/30".parse().unwrap()), None).unwrap();
        let key = SecretKey::generate().public();
        pool.lease(key).unwrap();
        pool.forget(&key);
        assert_eq!(pool.lease_of(&key), None);
        assert!(
            pool.lease(SecretKey::generate().public()).is_ok(),
            "its address is free"
        );
    }

    #[test]
    fn bad_pools_and_damaged_files_are_refused() {
        assert!(matches!(Pool::new(None, None), Err(PoolError::NoPool)));
        let v6: Prefix = "fd00::/64".parse().unwrap();
        assert!(matches!(
            Pool::new(Some(v6), None),
            Err(PoolError::BadPrefix { .. })
        ));
        let tiny: Prefix = "10.0.0.0/31".parse().unwrap();
        assert!(matches!(
            Pool::new(Some(tiny), None),
            Err(PoolError::BadPrefix { .. })
        ));
        let (pool4, pool6) = pools();
        let mut pool = Pool::new(pool4, pool6).unwrap();
        let error = pool
            .load(&file(), "version: 1\nleases: [{key: nope}]\n")
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("move it away") && text.contains(LEASE_FILE),
            "{text}"
        );
        let error = pool.load(&file(), "version: 2\n").unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }

    #[test]
    fn leases_outside_changed_pools_are_forgotten() {
        let key = SecretKey::generate().public();
        let (pool4, pool6) = pools();
        let mut pool = Pool::new(pool4, pool6).unwrap();
        pool.lease(key).unwrap();
        let text = pool.to_text();
        let mut pool = Pool::new(Some("10.88.0.0/24".parse().unwrap()), pool6).unwrap();
        pool.load(&file(), &text).unwrap();
        assert_eq!(pool.lease_of(&key), None);
        let (lease, _) = pool.lease(key).unwrap();
        assert_eq!(lease.ipv4, Some("10.88.0.2".parse().unwrap()));
    }
}
