//! Only the driver does I/O: no file under `dataplane/src` outside `driver.rs` and `driver/`
//! names an API that starts a process, opens a socket or a file, or spawns a thread.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// What only the driver may use.
const IO: [&str; 12] = [
    "std::fs",
    "fs::File",
    "std::process",
    "Command::new",
    "std::thread",
    "thread::spawn",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "std::net::UdpSocket",
    "mio::net",
    "mio::Registry",
    "libc::ioctl",
];

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_the_driver_does_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let driver = src.join("driver");
    let outside: Vec<PathBuf> = files
        .into_iter()
        .filter(|path| !path.starts_with(&driver) && *path != src.join("driver.rs"))
        .collect();
    assert!(
        outside.iter().any(|path| path.ends_with("service/mod.rs")),
        "the service's sources are among those checked"
    );
    let mut uses = Vec::new();
    for path in &outside {
        let text = std::fs::read_to_string(path).unwrap();
        for (number, line) in text.lines().enumerate() {
            for api in IO {
                if line.contains(api) {
                    uses.push(format!("{}:{}: {api}", path.display(), number + 1));
                }
            }
        }
    }
    assert!(
        uses.is_empty(),
        "I/O outside the driver:\n{}",
        uses.join("\n")
    );
}
