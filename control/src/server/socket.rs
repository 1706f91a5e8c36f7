//! The control socket's file: bound with mode 0666 (each client's credentials decide what it may
//! do), never over a live daemon's socket or over something that is not a socket, a stale one
//! replaced, a missing folder created (mode 0755); removed when the server stops unless another
//! has taken its place.

use std::fs;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use mio::net::{UnixListener, UnixStream};

use super::ControlError;

/// The socket's mode: anyone may connect; who may do what is decided from the peer's
/// credentials. Its folder decides who can reach it at all.
const SOCKET_MODE: u32 = 0o666;
/// The mode of the socket's folder when it has to be created.
const SOCKET_DIR_MODE: u32 = 0o755;

/// Binds the socket at `path`.
pub(super) fn bind(path: &Path) -> Result<(UnixListener, SocketFile), ControlError> {
    prepare_socket_path(path)?;
    let listener = UnixListener::bind(path).map_err(|source| bind_error(path, source))?;
    let file = SocketFile::new(path.to_path_buf());
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|source| {
        ControlError::Permissions {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok((listener, file))
}

/// The socket file this server made; removed on drop unless another has taken its place.
#[derive(Debug)]
pub(super) struct SocketFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: PathBuf) -> SocketFile {
        let identity = fs::symlink_metadata(&path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        SocketFile { path, identity }
    }

    /// The socket's path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let current = fs::symlink_metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if current.is_some() && current == self.identity {
            if let Err(err) = fs::remove_file(&self.path) {
                log::warn!(
                    "cannot remove the control socket {}: {err}; remove it yourself",
                    self.path.display()
                );
            }
        }
    }
}

/// Makes sure the socket can be bound at `path`: refuses when another daemon answers there or the
/// path is not a socket, removes a socket nobody answers on, creates a missing folder.
fn prepare_socket_path(path: &Path) -> Result<(), ControlError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(ControlError::NotASocket {
            path: path.to_path_buf(),
        }),
        Ok(_) => match UnixStream::connect(path) {
            // Non-blocking: a daemon whose backlog is full answers WouldBlock.
            Ok(_) => Err(ControlError::InUse {
                path: path.to_path_buf(),
            }),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Err(ControlError::InUse {
                path: path.to_path_buf(),
            }),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                log::info!(
                    "removing the stale control socket {} (nothing answers on it)",
                    path.display()
                );
                match fs::remove_file(path) {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                        Err(ControlError::PermissionDenied {
                            path: path.to_path_buf(),
                        })
                    }
                    Err(source) => Err(ControlError::Stale {
                        path: path.to_path_buf(),
                        source,
                    }),
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                Err(ControlError::PermissionDenied {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => Err(ControlError::Stale {
                path: path.to_path_buf(),
                source,
            }),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() && !folder.exists() => {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(SOCKET_DIR_MODE)
                        .create(folder)
                        .map_err(|source| bind_error(folder, source))?;
                    log::info!("created the control socket's folder {}", folder.display());
                }
                _ => {}
            }
            Ok(())
        }
        Err(source) => Err(bind_error(path, source)),
    }
}

fn bind_error(path: &Path, source: io::Error) -> ControlError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        ControlError::PermissionDenied {
            path: path.to_path_buf(),
        }
    } else {
        ControlError::Bind {
            path: path.to_path_buf(),
            source,
        }
    }
}
