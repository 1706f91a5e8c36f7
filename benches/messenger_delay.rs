//! The messenger's delivery delay as a user sees it: `skywired` processes on 127.0.0.1 in a
//! line A–B–C (release daemons, no path given), `msg watch` running at the recipient, and
//! `msg send` at A; for each message, the time from the send request to the watch line at the
//! recipient (its inbox fsync done) and to the reply at A (the recipient's acknowledgement,
//! then A's own outbox fsync), one hop (A → B) and two (A → B → C). The baselines in the same
//! run are the route's own round trip (`ping_node` over it) and one append with fdatasync to a
//! file in the daemons' folder.
//!
//! `cargo bench --bench messenger_delay`; `MSG_BENCH_COUNT` sets the messages per path
//! (default 50; a value that is not a whole number stops the bench, naming the variable and its
//! value). The daemons and their folder go at the end and on a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bench_common::env_number;
use common::{Daemon, Neighbour, TempDir};
use skywire_control::ControlClient;
use skywire_dataplane::SecretKey;

/// The daemons log as a service would by default.
const SECTIONS: &str = "log_level: info\nmessenger: {}\n";

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("messenger_delay: run it with `cargo bench --bench messenger_delay`");
        return;
    }
    let count: usize = env_number("MSG_BENCH_COUNT", 50).max(1);
    let dir = TempDir::new("messenger-bench");
    let [a, b, c] = [(); 3].map(|()| SecretKey::generate());
    let unknown = |key: &SecretKey| Neighbour {
        key: key.public(),
        endpoint: None,
    };
    let node_a = Daemon::start_with(&dir, "a", &a, &[unknown(&b)], SECTIONS);
    let node_b = Daemon::start_with(
        &dir,
        "b",
        &b,
        &[node_a.as_neighbour(true), unknown(&c)],
        SECTIONS,
    );
    let node_c = Daemon::start_with(&dir, "c", &c, &[node_b.as_neighbour(true)], SECTIONS);
    println!(
        "{count} messages per path, release daemons on loopback; times in ms (median / p90 / max)"
    );
    println!(
        "an append and fdatasync in their folder  {}",
        summary(fsync_times(&dir, count))
    );
    for (label, recipient) in [("A → B    ", &node_b), ("A → B → C", &node_c)] {
        let result = measure(&node_a, recipient, count);
        println!(
            "{label}  watch line {}  reply {}  (route round trip {:.2})",
            summary(result.watched),
            summary(result.replied),
            result.round_trip
        );
    }
}

struct Delays {
    watched: Vec<f64>,
    replied: Vec<f64>,
    round_trip: f64,
}

fn measure(sender: &Daemon, recipient: &Daemon, count: usize) -> Delays {
    let key = recipient.key.to_string();
    let mut watch = ControlClient::connect(&recipient.socket).unwrap();
    let first = watch.command("msg watch").unwrap();
    assert!(first.ok, "{}", first.raw);
    let shown = watch_lines(watch);
    let mut client = ControlClient::connect(&sender.socket).unwrap();
    // The first message finds the path and builds the route; it is not counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = client.command(&format!("msg send {key} warm-up")).unwrap();
        if answer.ok {
            break;
        }
        assert!(Instant::now() < deadline, "{}", answer.raw);
    }
    shown_at(&shown, "warm-up");
    let ping = client.command(&format!("ping_node {key} 10")).unwrap();
    assert!(ping.ok, "{}", ping.raw);
    let mut round_trips: Vec<f64> = ping.result.unwrap()["rtt_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|rtt| rtt.as_f64())
        .collect();
    round_trips.sort_by(f64::total_cmp);
    let round_trip = round_trips[round_trips.len() / 2];
    let mut watched = Vec::with_capacity(count);
    let mut replied = Vec::with_capacity(count);
    for index in 0..count {
        let text = format!("message-{index}");
        let started = Instant::now();
        let answer = client.command(&format!("msg send {key} {text}")).unwrap();
        assert!(answer.ok, "{}", answer.raw);
        replied.push(started.elapsed().as_secs_f64() * 1000.0);
        let at = shown_at(&shown, &text);
        watched.push(at.saturating_duration_since(started).as_secs_f64() * 1000.0);
    }
    Delays {
        watched,
        replied,
        round_trip,
    }
}

/// How long appending a record and fdatasync take in the daemons' folder.
fn fsync_times(dir: &TempDir, count: usize) -> Vec<f64> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path("fsync-probe.log"))
        .unwrap();
    (0..count)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&[0x55; 128]).unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// The texts of the messages a watch shows, each with when its line came, read on a thread of
/// its own.
fn watch_lines(mut watch: ControlClient) -> mpsc::Receiver<(String, Instant)> {
    let (lines, shown) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(answer) = watch.read_answer() {
            let at = Instant::now();
            let text = answer
                .result
                .as_ref()
                .and_then(|result| result["message"]["text"].as_str())
                .map(str::to_owned);
            if let Some(text) = text {
                if lines.send((text, at)).is_err() {
                    return;
                }
            }
        }
    });
    shown
}

/// When the watch showed the message `text`.
fn shown_at(shown: &mpsc::Receiver<(String, Instant)>, text: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match shown.recv_timeout(left) {
            Ok((shown, at)) if shown == text => return at,
            Ok(_) => {}
            Err(_) => panic!("the watch did not show {text}"),
        }
    }
}

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let at = |share: f64| values[((values.len() - 1) as f64 * share).round() as usize];
    format!("{:.2} / {:.2} / {:.2}", at(0.5), at(0.9), at(1.0))
}
