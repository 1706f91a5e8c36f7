//! An example app for skywired's supervisor: a signal client when `SIGNAL_CLIENT=true` (it
//! reports `{"Requests": n, "Ticks": t}` and exits when asked to shut down), a line on stdout
//! every second, and every line of stdin echoed back as `echo: LINE`.
//!
//! Try it by hand with a `visctl start` of a catalog entry whose `path` is this program.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::BufRead as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use skywire_control::signal::SignalClient;

enum Event {
    Line(String),
    InputClosed,
    Shutdown,
}

fn main() {
    let requests = Arc::new(AtomicU64::new(0));
    let ticks = Arc::new(AtomicU64::new(0));
    let (events, inbox) = mpsc::channel();

    let _client = SignalClient::from_env().and_then(|client| {
        let (requests, ticks) = (requests.clone(), ticks.clone());
        let shutdown = events.clone();
        let started = client
            .report(move || {
                serde_json::json!({
                    "Requests": requests.load(Ordering::Relaxed),
                    "Ticks": ticks.load(Ordering::Relaxed),
                })
            })
            .on_shutdown(move || {
                let _ = shutdown.send(Event::Shutdown);
            })
            .start();
        match started {
            Ok(handle) => Some(handle),
            Err(err) => {
                eprintln!("signal_app: cannot start the signal client: {err}");
                None
            }
        }
    });

    let input = events.clone();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else {
                break;
            };
            if input.send(Event::Line(line)).is_err() {
                return;
            }
        }
        let _ = input.send(Event::InputClosed);
    });

    let mut stdin_open = true;
    loop {
        match inbox.recv_timeout(Duration::from_secs(1)) {
            Ok(Event::Line(line)) => {
                requests.fetch_add(1, Ordering::Relaxed);
                println!("echo: {line}");
            }
            Ok(Event::InputClosed) if stdin_open => {
                stdin_open = false;
                println!("stdin closed");
            }
            Ok(Event::InputClosed) => {}
            Ok(Event::Shutdown) => {
                println!("shutting down");
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let tick = ticks.fetch_add(1, Ordering::Relaxed) + 1;
                println!("tick {tick}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}
