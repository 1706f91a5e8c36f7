//! curl downloads through a SOCKS5 port (`--socks5-hostname`, so that names are resolved at
//! the exit), as a user runs them.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Guard;

/// Starts `curl --socks5-hostname PROXY URL -o OUT`.
pub fn download(proxy: SocketAddr, url: &str, out: &Path) -> Guard {
    download_within(proxy, url, out, Duration::from_secs(240))
}

/// As [`download`], with curl giving up (and failing) after `limit`.
pub fn download_within(proxy: SocketAddr, url: &str, out: &Path, limit: Duration) -> Guard {
    let child = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time"])
        .arg(limit.as_secs().to_string())
        .arg("--socks5-hostname")
        .arg(proxy.to_string())
        .arg(url)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Guard(child)
}

/// Waits for a download started by [`download`] (with its default limit) and fails with
/// curl's message unless it succeeded.
pub fn finish(mut curl: Guard, what: &str) {
    let status = curl.wait_for(what, Duration::from_secs(250));
    let mut stderr = String::new();
    if let Some(pipe) = curl.0.stderr.as_mut() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(status.success(), "{what}: curl {status}: {stderr}");
}
