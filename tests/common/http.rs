//! A small HTTP/1.1 server on 127.0.0.1 for the SOCKS tests and the benchmark, serving
//! deterministic content (so every download can be checked against its SHA-256) without
//! keeping it in memory or on disk, and the client-side checks that go with it. Tests of every
//! crate include this file, so it uses only std and sha2.

#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// The bytes all content is cut from, cyclically: an odd length so misplaced chunks show.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..1_048_583)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    })
}

/// Where in the pattern content number `seed` begins.
fn first_offset(seed: u64) -> usize {
    (seed.wrapping_mul(104_729) % pattern().len() as u64) as usize
}

/// Calls `each` with the slices that make up `len` bytes of content number `seed`.
pub fn for_each_chunk(seed: u64, len: u64, mut each: impl FnMut(&[u8])) {
    let _ = try_each_chunk(seed, len, &mut |chunk| {
        each(chunk);
        Ok(())
    });
}

fn try_each_chunk(
    seed: u64,
    mut len: u64,
    each: &mut impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let pattern = pattern();
    let mut offset = first_offset(seed);
    while len > 0 {
        let take = (pattern.len() - offset).min(usize::try_from(len).unwrap_or(usize::MAX));
        let take = take.min(64 * 1024);
        each(&pattern[offset..offset + take])?;
        offset = (offset + take) % pattern.len();
        len -= take as u64;
    }
    Ok(())
}

/// The SHA-256 of `len` bytes of content number `seed`.
pub fn content_sha256(seed: u64, len: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for_each_chunk(seed, len, |chunk| hasher.update(chunk));
    hasher.finalize().into()
}

/// The SHA-256 and the length of a file.
pub fn file_sha256(path: &Path) -> ([u8; 32], u64) {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return (hasher.finalize().into(), total);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Reads exactly `len` bytes from `stream` and checks them against content number `seed`.
pub fn read_content(stream: &mut impl Read, seed: u64, len: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    for_each_chunk(seed, len, |expected| {
        let got = &mut buf[..expected.len()];
        stream.read_exact(got).unwrap_or_else(|e| {
            panic!("content {seed}: the stream ended at byte {at} of {len}: {e}")
        });
        assert!(got == expected, "content {seed}: bytes differ near {at}");
        at += expected.len() as u64;
    });
}

/// Reads content number `seed` to the end of the stream, checking every byte; returns how
/// many came.
pub fn read_content_to_end(stream: &mut impl Read, seed: u64) -> u64 {
    let pattern = pattern();
    let mut offset = first_offset(seed);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let count = stream.read(&mut buf).unwrap();
        if count == 0 {
            return total;
        }
        let mut got = &buf[..count];
        while !got.is_empty() {
            let take = got.len().min(pattern.len() - offset);
            assert!(
                got[..take] == pattern[offset..offset + take],
                "content {seed}: bytes differ near {total}"
            );
            got = &got[take..];
            offset = (offset + take) % pattern.len();
            total += take as u64;
        }
    }
}

/// Sends a `GET` of `path`.
pub fn http_get(stream: &mut impl Write, path: &str) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
}

/// Reads an HTTP response's head (up to the blank line) and returns it as text.
pub fn read_head(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the response ended early"
        );
        head.push(byte[0]);
        assert!(head.len() < 8192, "no end to the response head");
    }
    String::from_utf8(head).unwrap()
}

/// The server. Paths:
/// - `GET /bytes/LEN/SEED`: LEN bytes of content SEED, then it closes.
/// - `GET /hold/LEN/SEED`: the same, then it keeps the connection open until the client closes.
/// - `GET /endless`: content until the client goes, counted in `endless_sent`.
/// - `POST /count/LEN`: reads the request to its end (the client's FIN), then answers how many
///   bytes came (`X-Received`) and LEN bytes of content 0.
#[derive(Debug)]
pub struct HttpServer {
    pub address: SocketAddr,
    /// Bytes `/endless` responses have written so far.
    pub endless_sent: Arc<AtomicU64>,
    /// `/endless` responses still writing (blocked in a write counts).
    pub endless_writers: Arc<AtomicUsize>,
}

#[derive(Debug, Clone)]
struct Counters {
    endless_sent: Arc<AtomicU64>,
    endless_writers: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Starts the server on a port of its own; its threads end with the process.
    pub fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let counters = Counters {
            endless_sent: Arc::new(AtomicU64::new(0)),
            endless_writers: Arc::new(AtomicUsize::new(0)),
        };
        let server = HttpServer {
            address,
            endless_sent: counters.endless_sent.clone(),
            endless_writers: counters.endless_writers.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counters = counters.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &counters);
                });
            }
        });
        server
    }

    /// The URL of `path` under the name `localhost` (for `--socks5-hostname`).
    pub fn url(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.address.port())
    }
}

fn write_content(stream: &mut TcpStream, seed: u64, len: u64) -> io::Result<()> {
    try_each_chunk(seed, len, &mut |chunk| stream.write_all(chunk))
}

fn numbers(rest: &str) -> (u64, u64) {
    let mut parts = rest.split('/').map(|part| part.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn serve(mut stream: TcpStream, counters: &Counters) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if let Some(rest) = path.strip_prefix("/bytes/") {
        let (len, seed) = numbers(rest);
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )?;
        write_content(&mut stream, seed, len)?;
    } else if let Some(rest) = path.strip_prefix("/hold/") {
        let (len, seed) = numbers(rest);
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n")?;
        write_content(&mut stream, seed, len)?;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf)? > 0 {}
    } else if path == "/endless" {
        counters.endless_writers.fetch_add(1, Ordering::SeqCst);
        let result = (|| {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            try_each_chunk(0, u64::MAX, &mut |chunk| {
                stream.write_all(chunk)?;
                counters
                    .endless_sent
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                Ok(())
            })
        })();
        counters.endless_writers.fetch_sub(1, Ordering::SeqCst);
        return result;
    } else if let Some(rest) = path.strip_prefix("/count/") {
        let (len, _) = numbers(rest);
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf)? {
                0 => break,
                n => received += n as u64,
            }
        }
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nX-Received: {received}\r\nContent-Length: {len}\r\n\r\n"
        )?;
        write_content(&mut stream, 0, len)?;
    } else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
    }
    stream.shutdown(Shutdown::Write)
}
