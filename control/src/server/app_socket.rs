//! The app socket: a Unix socket in the node's state folder (mode 0600: launched apps run as
//! skywired's user), named to every launched app as `SKYWIRE_APP_SOCKET`, through which apps use
//! the mesh. The control thread accepts its connections, lets through only the processes of
//! launched apps and their descendants (the peer's pid from `SO_PEERCRED`, followed up the
//! supervisor's process trees), and hands each connection to the dataplane, which owns and
//! serves it from then on. Anyone else gets one refusal line and is closed.

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;

use mio::net::{UnixListener, UnixStream};
use skywire_dataplane::api::app_socket::{AppConnection, AppId};

use super::peer::Credentials;
use super::socket::SocketFile;
use super::ControlError;
use crate::supervisor::{Ancestry, Supervisor};

/// The socket's mode: skywired's user only, which its apps run as.
const SOCKET_MODE: u32 = 0o600;

/// The bound socket, removed when this is dropped.
#[derive(Debug)]
pub(super) struct AppSocket {
    listener: UnixListener,
    _file: SocketFile,
}

/// Why a connection is not handed over.
#[derive(Debug, thiserror::Error)]
enum Refused {
    /// Its credentials could not be read.
    #[error("skywired cannot read this process's credentials ({0}), so it cannot tell whether it is a launched app's")]
    Credentials(io::Error),
    /// It is no launched app's process.
    #[error("only the apps that skywired launched, and the processes they start, may use the app socket; this process{} is not one", .pid.map_or_else(String::new, |pid| format!(" (pid {pid})")))]
    NotLaunched {
        /// Its process, when the kernel gave one.
        pid: Option<u32>,
    },
}

impl AppSocket {
    /// Binds the socket at `path`, in place of a stale one; refuses when a running skywired
    /// answers there (two nodes cannot share a state folder).
    pub(super) fn bind(path: &Path) -> Result<AppSocket, ControlError> {
        let error = |source: io::Error| ControlError::AppSocket {
            path: path.to_path_buf(),
            source,
        };
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(ControlError::AppSocketInUse {
                    path: path.to_path_buf(),
                })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // Nobody answers: left by an earlier run, if it is a socket.
            Err(_) => match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => {
                    fs::remove_file(path).map_err(error)?;
                }
                Ok(_) => {
                    return Err(error(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "something that is not a socket is in its place",
                    )))
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(error(err)),
            },
        }
        let listener = UnixListener::bind(path).map_err(error)?;
        let file = SocketFile::new(path.to_path_buf());
        fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(error)?;
        Ok(AppSocket {
            listener,
            _file: file,
        })
    }

    /// The listener, to register with the poll.
    pub(super) fn listener(&mut self) -> &mut UnixListener {
        &mut self.listener
    }

    /// Accepts the connections that wait: those of launched apps' processes, for the
    /// dataplane; any other gets its refusal and is closed.
    pub(super) fn accept(&self, supervisor: &Supervisor) -> Vec<AppConnection> {
        let mut accepted = Vec::new();
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    log::warn!("cannot accept an app socket connection: {err}");
                    return accepted;
                }
            };
            match launched_app(&stream, supervisor) {
                Ok(app) => {
                    log::debug!("app {app}: a connection to the app socket");
                    accepted.push(AppConnection {
                        app,
                        stream: OwnedFd::from(stream),
                    });
                }
                Err(refused) => {
                    log::info!("refused an app socket connection: {refused}");
                    // Best effort: a fresh socket's buffer takes one short line.
                    let _ = stream.write_all(format!("error not allowed: {refused}\n").as_bytes());
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
            }
        }
    }
}

/// The launched app whose process tree the peer of `stream` is in.
fn launched_app(stream: &UnixStream, supervisor: &Supervisor) -> Result<AppId, Refused> {
    let credentials = Credentials::of(stream).map_err(Refused::Credentials)?;
    match supervisor.ancestry(credentials.pid) {
        Ancestry::App(app) => Ok(app),
        Ancestry::NoApp | Ancestry::Unknown => Err(Refused::NotLaunched {
            pid: credentials.pid,
        }),
    }
}
