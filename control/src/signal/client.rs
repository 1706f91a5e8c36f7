//! The signal client library, for an app that a skywired (or Viscript) launches: a background
//! thread connects to `SIGNAL_SERVER_ADDRESS`, registers with `SIGNAL_CLIENT_ID`, answers ping,
//! resource usage and shutdown, sends keepalive PINGs and reconnects when the connection drops.

use std::env;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::frame::{encode_data, Decoder, Frame, MAX_BODY};
use super::message::{split_body, Register, Request, ShutdownAck, OP_REGISTER, REPLY};
use super::{AppId, ENV_CLIENT, ENV_CLIENT_ID, ENV_SERVER_ADDRESS};

/// How often the client thread looks up from a quiet connection (keepalives, stop requests).
const TICK: Duration = Duration::from_millis(200);
/// How long a connect or a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the client connects and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The app id to register with (`SIGNAL_CLIENT_ID`).
    pub id: AppId,
    /// The server (`SIGNAL_SERVER_ADDRESS`).
    pub server: SocketAddr,
    /// Time between keepalive PINGs.
    pub keepalive: Duration,
    /// Time between connection attempts while disconnected (Viscript's client: 30 s).
    pub reconnect_every: Duration,
    /// After a shutdown callback returns, how long the app has to exit by itself before the
    /// library ends the process (Viscript's library: 10 s).
    pub exit_grace: Duration,
}

/// Why the environment does not describe a signal client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A variable is missing or unreadable.
    #[error("{ENV_CLIENT} is set but {var} is {problem}; the launcher must set {ENV_CLIENT_ID} (a number) and {ENV_SERVER_ADDRESS} (like 127.0.0.1:7999)")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ClientConfig {
    /// A client of `server` registering as `id`, with Viscript's timings.
    pub fn new(id: AppId, server: SocketAddr) -> ClientConfig {
        ClientConfig {
            id,
            server,
            keepalive: Duration::from_secs(5),
            reconnect_every: Duration::from_secs(30),
            exit_grace: Duration::from_secs(10),
        }
    }

    /// The client the launcher asked for: `None` unless `SIGNAL_CLIENT` is `true`.
    pub fn from_env() -> Result<Option<ClientConfig>, ClientError> {
        ClientConfig::from_vars(|var| env::var(var).ok())
    }

    /// As [`ClientConfig::from_env`], reading variables through `var`.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ClientConfig>, ClientError> {
        if var(ENV_CLIENT).as_deref().map(str::trim) != Some("true") {
            return Ok(None);
        }
        let read = |name: &'static str| {
            var(name).ok_or(ClientError::Env {
                var: name,
                problem: "not set".to_owned(),
            })
        };
        let id_text = read(ENV_CLIENT_ID)?;
        let id = id_text.trim().parse().map_err(|_| ClientError::Env {
            var: ENV_CLIENT_ID,
            problem: format!("{id_text:?}, not a number"),
        })?;
        let server_text = read(ENV_SERVER_ADDRESS)?;
        let server = server_text.trim().parse().map_err(|_| ClientError::Env {
            var: ENV_SERVER_ADDRESS,
            problem: format!("{server_text:?}, not an IP address and port"),
        })?;
        Ok(Some(ClientConfig::new(id, server)))
    }
}

type Report = Box<dyn FnMut() -> serde_json::Value + Send>;
type OnShutdown = Box<dyn FnOnce() + Send>;

/// A signal client before it starts: its configuration and what it answers with.
pub struct SignalClient {
    config: ClientConfig,
    report: Report,
    on_shutdown: Option<OnShutdown>,
}

impl std::fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalClient")
            .field("config", &self.config)
            .field("on_shutdown", &self.on_shutdown.is_some())
            .finish_non_exhaustive()
    }
}

impl SignalClient {
    /// A client with `config` that reports an empty object and exits at once on shutdown.
    pub fn new(config: ClientConfig) -> SignalClient {
        SignalClient {
            config,
            report: Box::new(|| serde_json::json!({})),
            on_shutdown: None,
        }
    }

    /// The client the launcher asked for, or `None` when `SIGNAL_CLIENT` is not `true`; bad
    /// variables are logged and give `None` too (the app then runs unmanaged).
    pub fn from_env() -> Option<SignalClient> {
        match ClientConfig::from_env() {
            Ok(config) => config.map(SignalClient::new),
            Err(err) => {
                log::warn!("not starting the signal client: {err}");
                None
            }
        }
    }

    /// The configuration, to adjust before [`SignalClient::start`].
    pub fn config_mut(&mut self) -> &mut ClientConfig {
        &mut self.config
    }

    /// What the app reports when asked for its resource usage: a JSON object (the server
    /// adds its own figures from /proc).
    pub fn report(mut self, report: impl FnMut() -> serde_json::Value + Send + 'static) -> Self {
        self.report = Box::new(report);
        self
    }

    /// Called once when the server asks the app to shut down, after the answer is sent; the
    /// app should then exit. If it has not after [`ClientConfig::exit_grace`], the library
    /// exits the process with status 0. Without it the process exits at once.
    pub fn on_shutdown(mut self, on_shutdown: impl FnOnce() + Send + 'static) -> Self {
        self.on_shutdown = Some(Box::new(on_shutdown));
        self
    }

    /// Starts the client thread; it connects, registers and keeps doing so.
    pub fn start(self) -> io::Result<SignalClientHandle> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name("signal-client".to_owned())
            .spawn(move || run(self, &thread_shared))?;
        Ok(SignalClientHandle {
            shared,
            thread: Some(thread),
        })
    }
}

#[derive(Debug, Default)]
struct Shared {
    registered: AtomicBool,
    stop: AtomicBool,
}

/// A running signal client.
#[derive(Debug)]
pub struct SignalClientHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SignalClientHandle {
    /// Whether the server has accepted the registration on the current connection.
    pub fn is_registered(&self) -> bool {
        self.shared.registered.load(Ordering::Relaxed)
    }

    /// Closes the connection and ends the client thread.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(mut client: SignalClient, shared: &Shared) {
    let config = client.config.clone();
    while !shared.stop.load(Ordering::Relaxed) {
        match TcpStream::connect_timeout(&config.server, IO_TIMEOUT) {
            Ok(stream) => {
                let outcome = Session::new(stream, &mut client, shared).and_then(Session::run);
                shared.registered.store(false, Ordering::Relaxed);
                match outcome {
                    Ok(()) => log::info!("signal: disconnected from {}", config.server),
                    Err(err) => log::warn!("signal: connection to {} lost: {err}", config.server),
                }
            }
            Err(err) => log::warn!("signal: cannot connect to {}: {err}", config.server),
        }
        let wake = Instant::now() + config.reconnect_every;
        while !shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= wake {
                break;
            }
            thread::park_timeout(wake - now);
        }
    }
}

struct Session<'c> {
    stream: TcpStream,
    client: &'c mut SignalClient,
    shared: &'c Shared,
    decoder: Decoder,
    next_seq: u32,
    out: Vec<u8>,
}

impl<'c> Session<'c> {
    fn new(
        stream: TcpStream,
        client: &'c mut SignalClient,
        shared: &'c Shared,
    ) -> io::Result<Session<'c>> {
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Session {
            stream,
            client,
            shared,
            decoder: Decoder::new(),
            next_seq: 1,
            out: Vec::new(),
        })
    }

    fn send(&mut self, op: u8, json: &[u8]) -> io::Result<()> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        encode_data(seq, &[&[op], json], &mut self.out)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        self.flush()
    }

    fn send_frame(&mut self, frame: &Frame) -> io::Result<()> {
        frame
            .encode(&mut self.out)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        let outcome = self.stream.write_all(&self.out);
        self.out.clear();
        outcome
    }

    fn run(mut self) -> io::Result<()> {
        let register = serde_json::to_vec(&Register {
            id: self.client.config.id,
        })
        .map_err(io::Error::other)?;
        self.send(OP_REGISTER, &register)?;
        let mut next_keepalive = Instant::now() + self.client.config.keepalive;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if Instant::now() >= next_keepalive {
                self.send_frame(&Frame::Ping { ms: unix_ms() })?;
                next_keepalive = Instant::now() + self.client.config.keepalive;
            }
            let space = self.decoder.space();
            match self.decoder.read_from(&mut ReadHalf(&self.stream)) {
                Ok(0) if space > 0 => return Ok(()),
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => return Err(err),
            }
            while let Some(frame) = self
                .decoder
                .next_frame()
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?
            {
                self.handle(frame)?;
            }
        }
    }

    fn handle(&mut self, frame: Frame) -> io::Result<()> {
        match frame {
            Frame::Ping { ms } => self.send_frame(&Frame::Pong { ms }),
            Frame::Ack { .. } | Frame::Pong { .. } => Ok(()),
            Frame::Data { seq, body } => {
                self.send_frame(&Frame::Ack { seq })?;
                match split_body(&body) {
                    Some((op, _)) if op == OP_REGISTER | REPLY => {
                        log::info!("signal: registered as app {}", self.client.config.id);
                        self.shared.registered.store(true, Ordering::Relaxed);
                        Ok(())
                    }
                    Some((op, _)) => match Request::from_op(op) {
                        Some(request) => self.answer(request),
                        None => {
                            log::debug!("signal: ignoring op {op:#04x}");
                            Ok(())
                        }
                    },
                    None => Ok(()),
                }
            }
        }
    }

    fn answer(&mut self, request: Request) -> io::Result<()> {
        let op = request.op() | REPLY;
        match request {
            Request::Ping => self.send(op, b"null"),
            Request::ResourceUsage => {
                let mut json = serde_json::to_vec(&(self.client.report)()).unwrap_or_default();
                if json.len() >= MAX_BODY {
                    json = br#"{"Error":"report too large"}"#.to_vec();
                }
                self.send(op, &json)
            }
            Request::Shutdown => {
                let ack = ShutdownAck {
                    pid: std::process::id(),
                };
                let json = serde_json::to_vec(&ack).map_err(io::Error::other)?;
                self.send(op, &json)?;
                log::info!("signal: shutdown requested");
                if let Some(on_shutdown) = self.client.on_shutdown.take() {
                    on_shutdown();
                    thread::sleep(self.client.config.exit_grace);
                    log::warn!("signal: the app did not exit after shutdown; exiting now");
                }
                std::process::exit(0);
            }
        }
    }
}

/// Reads through a shared reference (`&TcpStream` implements `Read`).
struct ReadHalf<'s>(&'s TcpStream);

impl io::Read for ReadHalf<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut stream = self.0;
        stream.read(buf)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn from_vars() {
        assert_eq!(ClientConfig::from_vars(vars(&[])), Ok(None));
        assert_eq!(
            ClientConfig::from_vars(vars(&[(ENV_CLIENT, "false"), (ENV_CLIENT_ID, "3")])),
            Ok(None)
        );
        let config = ClientConfig::from_vars(vars(&[
            (ENV_CLIENT, "true"),
            (ENV_CLIENT_ID, "3"),
            (ENV_SERVER_ADDRESS, "127.0.0.1:7999"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.id, 3);
        assert_eq!(config.server, "127.0.0.1:7999".parse().unwrap());
        let missing = ClientConfig::from_vars(vars(&[(ENV_CLIENT, "true"), (ENV_CLIENT_ID, "3")]))
            .unwrap_err();
        assert!(
            missing.to_string().contains(ENV_SERVER_ADDRESS),
            "{missing}"
        );
        let bad = ClientConfig::from_vars(vars(&[
            (ENV_CLIENT, "true"),
            (ENV_CLIENT_ID, "x"),
            (ENV_SERVER_ADDRESS, "127.0.0.1:7999"),
        ]))
        .unwrap_err();
        assert!(bad.to_string().contains("not a number"), "{bad}");
    }
}
