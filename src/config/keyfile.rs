//! The node's identity on disk: the state folder and the private key file (WireGuard base64 and
//! a newline, mode 0600, as `wg genkey > file` writes it with a strict umask).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use skywire_dataplane::SecretKey;

use super::ConfigError;

/// A key file is 45 bytes; anything much longer is not one.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Creates the state folder `dir` (and any missing parents) with mode 0700 if it is missing.
pub fn create_state_dir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |source| ConfigError::StateDir {
        dir: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(fail)
}

/// Reads the private key in `path`, or creates the file with a fresh key (mode 0600) if it does
/// not exist. The file's folder must exist: a missing one is an error naming it, because a
/// mistyped path should not silently give the node a new identity somewhere else.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, ConfigError> {
    if path.exists() {
        return read_key_file(path);
    }
    let folder = path.parent().unwrap_or(Path::new("/"));
    if !folder.is_dir() {
        return Err(ConfigError::KeyFolderMissing {
            file: path.to_path_buf(),
            folder: folder.to_path_buf(),
        });
    }
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Someone else created it in the meantime: theirs wins.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => return read_key_file(path),
        Err(source) => {
            return Err(ConfigError::KeyWrite {
                file: path.to_path_buf(),
                source,
            })
        }
    };
    let key = SecretKey::generate();
    if let Err(source) = write_key(file, &key) {
        // A half-written key file would be refused on the next start: leave none.
        let _ = fs::remove_file(path);
        return Err(ConfigError::KeyWrite {
            file: path.to_path_buf(),
            source,
        });
    }
    log::info!(
        "created the key file {} (public key {})",
        path.display(),
        key.public()
    );
    Ok(key)
}

fn write_key(mut file: File, key: &SecretKey) -> io::Result<()> {
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())?;
    file.sync_all()
}

/// Reads the private key in `path`. A key file that other users can read is accepted with a
/// warning in the log.
pub fn read_key_file(path: &Path) -> Result<SecretKey, ConfigError> {
    let fail = |source| ConfigError::KeyRead {
        file: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(fail)?;
    let metadata = file.metadata().map_err(fail)?;
    if !metadata.is_file() {
        return Err(ConfigError::KeyMalformed {
            file: path.to_path_buf(),
        });
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        log::warn!(
            "the key file {} can be read by other users (mode {mode:03o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_LEN)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    parse_key_file(&bytes).ok_or_else(|| ConfigError::KeyMalformed {
        file: path.to_path_buf(),
    })
}

/// The private key in a key file's contents: WireGuard base64, white space around it ignored.
pub fn parse_key_file(bytes: &[u8]) -> Option<SecretKey> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
