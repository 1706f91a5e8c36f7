//! The VPN server's address pools: one IPv4 and one IPv6 prefix, the server's own addresses
//! first, then one lease per client key, kept in the state folder (YAML, written to a
//! temporary file and renamed) so that a client keeps its addresses across reconnects and
//! restarts.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
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
const MAX_LEASE_FILE: u64 = 16 << 20;

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
    file: PathBuf,
}

impl Pool {
    /// Pools over `pool4` and `pool6` with the leases kept in `state_dir`; leases that fall
    /// outside the pools (the pools changed) are forgotten.
    pub fn open(
        pool4: Option<Prefix>,
        pool6: Option<Prefix>,
        state_dir: &Path,
    ) -> Result<Pool, PoolError> {
        let mut pool = Pool::empty(pool4, pool6, state_dir.join(LEASE_FILE))?;
        if let Some(text) = pool.read_file()? {
            pool.load(&text)?;
        }
        Ok(pool)
    }

    /// Pools over `pool4` and `pool6` with no leases yet, to be kept in `file`.
    pub(crate) fn empty(
        pool4: Option<Prefix>,
        pool6: Option<Prefix>,
        file: PathBuf,
    ) -> Result<Pool, PoolError> {
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
            file,
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

    /// The lease of `key`: the one it had, or new addresses, saved before they are returned.
    pub fn lease(&mut self, key: NodeKey) -> Result<Lease, PoolError> {
        if let Some(lease) = self.leases.get(&key) {
            return Ok(*lease);
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
        if let Err(error) = self.save() {
            self.leases.remove(&key);
            return Err(error);
        }
        Ok(lease)
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

    /// The lease file's text; `None` when there is no lease file yet.
    fn read_file(&self) -> Result<Option<String>, PoolError> {
        let file_error = |source| PoolError::File {
            file: self.file.clone(),
            source,
        };
        match std::fs::File::open(&self.file) {
            Ok(file) => {
                let mut text = String::new();
                io::Read::read_to_string(&mut io::Read::take(file, MAX_LEASE_FILE), &mut text)
                    .map_err(file_error)?;
                Ok(Some(text))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(file_error(error)),
        }
    }

    /// Takes the leases of `text`, the lease file's contents, that still fit the pools.
    pub(crate) fn load(&mut self, text: &str) -> Result<(), PoolError> {
        let damaged = |problem: String| PoolError::Damaged {
            file: self.file.clone(),
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

    fn save(&self) -> Result<(), PoolError> {
        let file_error = |source| PoolError::File {
            file: self.file.clone(),
            source,
        };
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
        let text = yaml_serde::to_string(&contents)
            .map_err(|e| file_error(io::Error::other(e.to_string())))?;
        write_atomically(&self.file, text.as_bytes()).map_err(file_error)
    }
}

/// Writes `file` so that a crash leaves either the old contents or the new, never a mix.
pub(crate) fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut handle = std::fs::File::create(&temporary)?;
    handle.write_all(bytes)?;
    handle.sync_all()?;
    drop(handle);
    std::fs::rename(&temporary, file)
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

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skywire-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn pools() -> (Option<Prefix>, Option<Prefix>) {
        (
            Some("10.77.0.0/24".parse().unwrap()),
            Some("fd77::/64".parse().unwrap()),
        )
    }

    #[test]
    fn server_first_then_clients_stable_across_restarts() {
        let dir = temp_dir("pool-stable");
        let (pool4, pool6) = pools();
        let (a, b) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let mut pool = Pool::open(pool4, pool6, &dir).unwrap();
        assert_eq!(pool.server().ipv4, Some("10.77.0.1".parse().unwrap()));
        assert_eq!(pool.server().ipv6, Some("fd77::1".parse().unwrap()));
        let lease_a = pool.lease(a).unwrap();
        let lease_b = pool.lease(b).unwrap();
        assert_eq!(lease_a.ipv4, Some("10.77.0.2".parse().unwrap()));
        assert_eq!(lease_b.ipv6, Some("fd77::3".parse().unwrap()));
        assert_eq!(
            pool.lease(a).unwrap(),
            lease_a,
            "a reconnect keeps the lease"
        );
        drop(pool);
        let mut pool = Pool::open(pool4, pool6, &dir).unwrap();
        assert_eq!(
            pool.lease_of(&b),
            Some(lease_b),
            "a restart keeps the lease"
        );
        assert_eq!(pool.lease(a).unwrap(), lease_a);
        assert!(!dir.join("vpn-leases.yaml.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn small_pools_run_out_and_say_so() {
        let dir = temp_dir("pool-small");
        let mut pool = Pool::open(Some("10.0.0.0/30".parse().unwrap()), None, &dir).unwrap();
        let lease = pool.lease(SecretKey::generate().public()).unwrap();
        assert_eq!(lease.ipv4, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(lease.ipv6, None);
        let error = pool.lease(SecretKey::generate().public()).unwrap_err();
        assert!(matches!(error, PoolError::Exhausted(_)), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_pools_and_damaged_files_are_refused() {
        let dir = temp_dir("pool-bad");
        assert!(matches!(
            Pool::open(None, None, &dir),
            Err(PoolError::NoPool)
        ));
        let v6: Prefix = "fd00::/64".parse().unwrap();
        assert!(matches!(
            Pool::open(Some(v6), None, &dir),
            Err(PoolError::BadPrefix { .. })
        ));
        let tiny: Prefix = "10.0.0.0/31".parse().unwrap();
        assert!(matches!(
            Pool::open(Some(tiny), None, &dir),
            Err(PoolError::BadPrefix { .. })
        ));
        std::fs::write(dir.join(LEASE_FILE), "version: 1\nleases: [{key: nope}]\n").unwrap();
        let (pool4, pool6) = pools();
        let error = Pool::open(pool4, pool6, &dir).unwrap_err();
        assert!(error.to_string().contains("move it away"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn leases_outside_changed_pools_are_forgotten() {
        let dir = temp_dir("pool-changed");
        let key = SecretKey::generate().public();
        let (pool4, pool6) = pools();
        Pool::open(pool4, pool6, &dir).unwrap().lease(key).unwrap();
        let mut pool = Pool::open(Some("10.88.0.0/24".parse().unwrap()), pool6, &dir).unwrap();
        assert_eq!(pool.lease_of(&key), None);
        let lease = pool.lease(key).unwrap();
        assert_eq!(lease.ipv4, Some("10.88.0.2".parse().unwrap()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
