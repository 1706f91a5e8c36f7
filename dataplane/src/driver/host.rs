//! The host thread: the VPN apps' slow changes to the host, off the dataplane thread. It runs
//! iproute2's `ip` (addresses, MTU, link, routes and rules), and reads and writes the lease
//! file, one change at a time in the order asked, and sends each answer back through a
//! channel, waking the loop. It starts by removing what a killed daemon's VPN client left, as
//! far as it is the client's own.

use std::io::{self, Read as _, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use super::routes::{self, ClientRoutes};
use crate::service::{HostOp, HostResult};
use crate::vpn::pool::MAX_LEASE_FILE;
use crate::vpn::{TunError, TunName};

/// How much of `ip`'s standard error an error message quotes.
const MAX_STDERR: usize = 512;

/// The host thread's queue and answers.
#[derive(Debug)]
pub(super) struct HostThread {
    jobs: Option<Sender<HostOp>>,
    answers: Receiver<HostResult>,
    thread: Option<JoinHandle<()>>,
}

impl HostThread {
    /// Starts the thread; `state_dir` holds the undo file of the VPN client's routes, and
    /// `client_device` is the client's TUN device, when one is configured: a killed daemon's
    /// leftovers are removed only when they are the client's own.
    pub(super) fn start(
        state_dir: PathBuf,
        client_device: Option<TunName>,
        waker: Arc<Waker>,
    ) -> io::Result<HostThread> {
        let (jobs, job_rx) = mpsc::channel::<HostOp>();
        let (answer_tx, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("skywire-host".to_owned())
            .spawn(move || {
                routes::clear_leftovers(&state_dir, client_device.as_ref());
                run(&state_dir, &job_rx, &answer_tx, &waker);
            })?;
        Ok(HostThread {
            jobs: Some(jobs),
            answers,
            thread: Some(thread),
        })
    }

    /// Queues a change; when the thread has gone, the change fails at once and its answer
    /// says so.
    pub(super) fn submit(&self, op: HostOp) -> Option<HostResult> {
        let op = match &self.jobs {
            Some(jobs) => match jobs.send(op) {
                Ok(()) => return None,
                Err(unsent) => unsent.0,
            },
            None => op,
        };
        log::error!("the host thread has gone: cannot make a VPN change");
        unanswered(op)
    }

    /// The next answer, if one is waiting.
    pub(super) fn poll_answer(&self) -> Option<HostResult> {
        self.answers.try_recv().ok()
    }

    /// Lets the thread finish what is queued, and waits for it.
    pub(super) fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the host thread panicked");
            }
        }
    }
}

impl Drop for HostThread {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(state_dir: &Path, jobs: &Receiver<HostOp>, answers: &Sender<HostResult>, waker: &Waker) {
    // The client's routes while they are installed; dropping them removes them.
    let mut client_routes: Option<ClientRoutes> = None;
    while let Ok(op) = jobs.recv() {
        let answer = match op {
            HostOp::ConfigureTun {
                app,
                name,
                addresses,
                mtu,
                replace,
            } => HostResult::TunConfigured {
                app,
                result: configure(&name, &addresses, mtu, replace),
            },
            HostOp::InstallRoutes {
                name,
                routes,
                ipv4,
                ipv6,
            } => {
                drop(client_routes.take());
                match ClientRoutes::install(state_dir, &name, &routes, ipv4, ipv6) {
                    Ok(routes) => {
                        client_routes = Some(routes);
                        HostResult::RoutesInstalled(Ok(()))
                    }
                    Err(error) => HostResult::RoutesInstalled(Err(error)),
                }
            }
            HostOp::RemoveRoutes => {
                drop(client_routes.take());
                HostResult::RoutesRemoved
            }
            HostOp::LoadLeases { file } => {
                let text = read_lease_file(&file);
                HostResult::LeasesLoaded { file, text }
            }
            HostOp::SaveLeases { file, text } => {
                let result = write_atomically(&file, text.as_bytes());
                HostResult::LeasesSaved { file, result }
            }
            // The dataplane thread does these itself.
            HostOp::OpenTun { .. } | HostOp::CloseTun { .. } | HostOp::MarkDatagrams(_) => continue,
        };
        if answers.send(answer).is_err() {
            break;
        }
        let _ = waker.wake();
    }
    // Dropping `client_routes` removes what a client that is still up installed.
}

/// The answer to a change that could not be made: the host thread has gone.
fn unanswered(op: HostOp) -> Option<HostResult> {
    let gone = || TunError::Command {
        args: "(none run)".to_owned(),
        problem: "the host thread has gone; restart skywired".to_owned(),
    };
    let io_gone = || io::Error::other("the host thread has gone; restart skywired");
    Some(match op {
        HostOp::ConfigureTun { app, .. } => HostResult::TunConfigured {
            app,
            result: Err(gone()),
        },
        HostOp::InstallRoutes { .. } => HostResult::RoutesInstalled(Err(gone())),
        HostOp::RemoveRoutes => HostResult::RoutesRemoved,
        HostOp::LoadLeases { file } => HostResult::LeasesLoaded {
            file,
            text: Err(io_gone()),
        },
        HostOp::SaveLeases { file, .. } => HostResult::LeasesSaved {
            file,
            result: Err(io_gone()),
        },
        HostOp::OpenTun { .. } | HostOp::CloseTun { .. } | HostOp::MarkDatagrams(_) => return None,
    })
}

/// Sets the MTU, adds `address/len` (after removing the device's addresses, when `replace`)
/// and brings the link up.
fn configure(
    name: &TunName,
    addresses: &[(IpAddr, u8)],
    mtu: u16,
    replace: bool,
) -> Result<(), TunError> {
    let name = name.as_str();
    if replace {
        ip(&["address", "flush", "dev", name])?;
    }
    let mtu = mtu.to_string();
    ip(&["link", "set", "dev", name, "mtu", &mtu])?;
    for (address, len) in addresses {
        let cidr = format!("{address}/{len}");
        match address {
            IpAddr::V4(_) => ip(&["-4", "address", "replace", &cidr, "dev", name])?,
            // `nodad`: a tentative address cannot be used for a second or two.
            IpAddr::V6(_) => ip(&["-6", "address", "replace", &cidr, "dev", name, "nodad"])?,
        };
    }
    ip(&["link", "set", "dev", name, "up"])?;
    Ok(())
}

/// The lease file's contents; `None` when there is no file.
fn read_lease_file(file: &Path) -> io::Result<Option<String>> {
    let handle = match std::fs::File::open(file) {
        Ok(handle) => handle,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut text = String::new();
    handle.take(MAX_LEASE_FILE).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// Runs `ip ARGS`, returning its standard output, or an error quoting its standard error.
pub(super) fn ip(args: &[&str]) -> Result<String, TunError> {
    let fail = |problem: String| TunError::Command {
        args: args.join(" "),
        problem,
    };
    let output = Command::new("ip").args(args).output().map_err(|error| {
        fail(format!(
            "{error} (iproute2's `ip` must be installed and on PATH)"
        ))
    })?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.len() > MAX_STDERR {
            let mut cut = MAX_STDERR;
            while !stderr.is_char_boundary(cut) {
                cut -= 1;
            }
            stderr.truncate(cut);
        }
        return Err(fail(format!("{} ({stderr})", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Writes `file` so that a crash leaves either the old contents or the new, never a mix.
pub(super) fn write_atomically(file: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut handle = std::fs::File::create(&temporary)?;
    handle.write_all(bytes)?;
    handle.sync_all()?;
    drop(handle);
    std::fs::rename(&temporary, file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn ip_errors_quote_the_command_and_what_it_said() {
        let error = ip(&["link", "show", "dev", "no-such-dev-xyz"]).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("ip link show dev no-such-dev-xyz"), "{text}");
    }

    #[test]
    fn the_lease_file_is_written_whole_and_read_back_through_the_thread() {
        let dir = std::env::temp_dir().join(format!("skywire-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let mut host = HostThread::start(dir.clone(), None, waker).unwrap();
        let file = dir.join("leases.yaml");
        host.submit(HostOp::LoadLeases { file: file.clone() });
        host.submit(HostOp::SaveLeases {
            file: file.clone(),
            text: "version: 1\n".to_owned(),
        });
        host.submit(HostOp::LoadLeases { file: file.clone() });
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.len() < 3 && Instant::now() < deadline {
            match host.poll_answer() {
                Some(answer) => answers.push(answer),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        host.finish();
        assert!(matches!(
            &answers[0],
            HostResult::LeasesLoaded { text: Ok(None), .. }
        ));
        assert!(matches!(
            &answers[1],
            HostResult::LeasesSaved { result: Ok(()), .. }
        ));
        assert!(matches!(
            &answers[2],
            HostResult::LeasesLoaded { text: Ok(Some(text)), .. } if text == "version: 1\n"
        ));
        assert!(!dir.join("leases.yaml.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
