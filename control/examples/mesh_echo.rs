//! An example app that uses the mesh through its node's app socket: an echo between two
//! nodes. Run it as an app of each node's catalog (`visctl start`), which gives it the socket.
//!
//! ```text
//! skywire-mesh-echo listen PORT [SERVICE]   echo every stream that arrives on PORT, each on a
//!                                           thread of its own (advertised as SERVICE if named)
//! skywire-mesh-echo dial KEY PORT [STREAMS] open STREAMS streams (1 unless given) to PORT on
//!                                           node KEY at once, and check that each echoes
//! ```
//!
//! The dialer sends a line on every stream, reads each echo back while all the streams are
//! open (the last first), then half-closes each and reads it to its end. It prints a line per
//! stream and exits 0, or says what went wrong and exits 1.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use skywire_control::app_socket::{AppSocket, Incoming};
use skywire_dataplane::NodeKey;

const USAGE: &str = "usage: skywire-mesh-echo listen PORT [SERVICE] | dial KEY PORT [STREAMS]";
/// Streams one dial opens at most.
const MAX_STREAMS: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match words.as_slice() {
        ["listen", port] => port_of(port).and_then(|port| listen(port, None)),
        ["listen", port, service] => port_of(port).and_then(|port| listen(port, Some(service))),
        ["dial", key, port] => target(key, port).and_then(|(key, port)| dial(&key, port, 1)),
        ["dial", key, port, streams] => {
            target(key, port).and_then(|(key, port)| match streams.parse::<usize>() {
                Ok(count) if (1..=MAX_STREAMS).contains(&count) => dial(&key, port, count),
                _ => Err(format!(
                    "STREAMS is a number from 1 to {MAX_STREAMS}\n{USAGE}"
                )),
            })
        }
        _ => Err(USAGE.to_owned()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("skywire-mesh-echo: {error}");
            ExitCode::FAILURE
        }
    }
}

fn port_of(word: &str) -> Result<u16, String> {
    word.parse()
        .map_err(|_| format!("`{word}` is not a port\n{USAGE}"))
}

fn target(key: &str, port: &str) -> Result<(NodeKey, u16), String> {
    let key = key
        .parse()
        .map_err(|_| format!("`{key}` is not a node key\n{USAGE}"))?;
    Ok((key, port_of(port)?))
}

/// Echoes every stream that arrives on `port`, until the node closes the listener.
fn listen(port: u16, service: Option<&str>) -> Result<(), String> {
    let socket = AppSocket::from_env().map_err(|error| error.to_string())?;
    let mut listener = socket
        .listen(port, service)
        .map_err(|error| format!("cannot listen on port {port}: {error}"))?;
    match service {
        Some(service) => println!("listening on port {port} as `{service}`"),
        None => println!("listening on port {port}"),
    }
    while let Some(incoming) = listener
        .next_incoming()
        .map_err(|error| format!("the listener failed: {error}"))?
    {
        match listener.accept(&incoming) {
            Ok(stream) => {
                std::thread::spawn(move || echo(stream, &incoming));
            }
            Err(error) => println!("stream {} not accepted: {error}", incoming.id),
        }
    }
    println!("the node closed the listener");
    Ok(())
}

/// Writes back what `stream` brings until its end, then ends this side too.
fn echo(mut stream: UnixStream, incoming: &Incoming) {
    let mut buf = [0u8; 16 * 1024];
    let mut echoed = 0usize;
    let outcome = loop {
        match stream.read(&mut buf) {
            Ok(0) => break stream.shutdown(Shutdown::Write),
            Ok(read) => {
                if let Err(error) = stream.write_all(&buf[..read]) {
                    break Err(error);
                }
                echoed += read;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => break Err(error),
        }
    };
    let Incoming { id, node, port } = incoming;
    match outcome {
        Ok(()) => println!("stream {id} from {node} port {port}: echoed {echoed} bytes"),
        Err(error) => println!("stream {id} from {node} port {port}: {error} after {echoed} bytes"),
    }
}

/// Opens `count` streams to `port` on `node` at once and checks that each echoes.
fn dial(node: &NodeKey, port: u16, count: usize) -> Result<(), String> {
    let socket = AppSocket::from_env().map_err(|error| error.to_string())?;
    let mut streams = Vec::new();
    for number in 1..=count {
        let stream = socket
            .dial(node, port)
            .map_err(|error| format!("stream {number}: {error}"))?;
        let message = format!("stream {number} of {count}, through the mesh and back\n");
        streams.push((number, BufReader::new(stream), message));
    }
    for (number, stream, message) in &mut streams {
        stream
            .get_mut()
            .write_all(message.as_bytes())
            .map_err(|error| format!("stream {number}: {error}"))?;
    }
    // Every echo comes back while every stream is open: the listener serves them at once.
    for (number, stream, message) in streams.iter_mut().rev() {
        let mut line = String::new();
        stream
            .read_line(&mut line)
            .map_err(|error| format!("stream {number}: {error}"))?;
        if line != *message {
            return Err(format!(
                "stream {number}: sent {message:?}, got back {line:?}"
            ));
        }
    }
    for (number, mut stream, message) in streams {
        stream
            .get_mut()
            .shutdown(Shutdown::Write)
            .map_err(|error| format!("stream {number}: {error}"))?;
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .map_err(|error| format!("stream {number}: {error}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "stream {number}: {} bytes more than were sent",
                rest.len()
            ));
        }
        println!("stream {number}: {} bytes echoed intact", message.len());
    }
    println!("{count} stream(s) to {node} port {port} echoed at once");
    Ok(())
}
