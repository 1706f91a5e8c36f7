//! The messenger end to end: four `skywired` processes on 127.0.0.1 in a line A–B–C–D, no
//! path given anywhere (routes come from the adverts). A message from A is seen by `msg watch`
//! at D, listed in D's inbox and A's outbox; one acknowledged right before D is killed
//! (SIGKILL) is in D's inbox when D comes back; a message sent while D is down gets a clear
//! error; and D's inbox survives a clean restart too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{wait_until, Daemon, Guard, Neighbour, TempDir, VISCTL};
use skywire_dataplane::SecretKey;

/// How long A tries to deliver before it says why it could not: enough for A's node to find
/// that its route to a restarted D leads nowhere and to repair it.
const SEND_TIMEOUT: Duration = Duration::from_secs(6);

fn messenger_section(send_timeout: Duration) -> String {
    format!(
        "messenger:\n  send_timeout_ms: {}\n",
        send_timeout.as_millis()
    )
}

/// D's messages as its inbox lists them: (sender, text).
fn inbox(d: &Daemon) -> Vec<(String, String)> {
    let reply = d.ask(&["msg", "inbox"]);
    assert_eq!(reply["result"]["mailbox"], "inbox", "{reply}");
    reply["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| {
            (
                message["peer"].as_str().unwrap().to_owned(),
                message["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn messages_reach_d_by_key_and_survive_its_restarts() {
    let dir = TempDir::new("messenger");
    let secrets: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let key = |i: usize| secrets[i].public();
    let unknown = |i: usize| Neighbour {
        key: key(i),
        endpoint: None,
    };
    let section = messenger_section(SEND_TIMEOUT);
    let a = Daemon::start_with(&dir, "a", &secrets[0], &[unknown(1)], &section);
    let b = Daemon::start_with(
        &dir,
        "b",
        &secrets[1],
        &[a.as_neighbour(true), unknown(2)],
        &section,
    );
    let c = Daemon::start_with(
        &dir,
        "c",
        &secrets[2],
        &[b.as_neighbour(true), unknown(3)],
        &section,
    );
    let start_d = || Daemon::start_with(&dir, "d", &secrets[3], &[c.as_neighbour(true)], &section);
    let mut d = start_d();
    for (node, links) in [(&a, 1), (&b, 2), (&c, 2), (&d, 1)] {
        wait_until(
            &format!("{}'s links to come up", node.name),
            Duration::from_secs(20),
            || node.ask(&["status"])["result"]["links_up"] == links,
        );
    }
    let d_key = key(3).to_string();
    let a_key = key(0).to_string();

    // D watches its inbox; A's message shows up there.
    let mut watch = Command::new(VISCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["msg", "watch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Guard)
        .unwrap();
    let seen = lines_of(watch.0.stdout.take().unwrap());
    let notes = lines_of(watch.0.stderr.take().unwrap());
    // Its first line (a note, on standard error) says the watch has begun.
    let note = notes.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(note.contains("watching the inbox"), "{note}");
    let sent = send_until_delivered(&a, &d_key, "hello D, from A");
    assert!(sent.contains("delivered to"), "{sent}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("hello D, from A") => break line,
            Ok(_) => {}
            Err(_) => panic!("msg watch at D showed no message from A\n{}", d.log()),
        }
    };
    assert!(
        line.contains(&a_key),
        "the watch line names the sender: {line}"
    );
    // The end of its input ends the watch.
    drop(watch.0.stdin.take());
    let status = watch.wait_for("msg watch", Duration::from_secs(10));
    assert!(status.success(), "msg watch ended with {status}");

    assert_eq!(inbox(&d), [(a_key.clone(), "hello D, from A".to_owned())]);
    let outbox = a.ask(&["msg", "outbox"]);
    assert_eq!(outbox["result"]["messages"][0]["peer"], d_key.as_str());
    assert_eq!(outbox["result"]["messages"][0]["text"], "hello D, from A");

    // Acknowledged, then D is killed at once: the message is on its disk.
    let output = a.visctl(&[
        "msg",
        "send",
        &d_key,
        "acknowledged",
        "right",
        "before",
        "SIGKILL",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    d.kill();

    // D is down: A says so, within its send timeout, and queues nothing.
    let started = Instant::now();
    let output = a.visctl(&["msg", "send", &d_key, "while D is down"]);
    let elapsed = started.elapsed();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(
        error.contains("not delivered") && error.contains(&d_key),
        "{error}"
    );
    assert!(
        error.contains("no route to") || error.contains("no answer from"),
        "{error}"
    );
    assert!(
        elapsed < SEND_TIMEOUT + Duration::from_secs(5),
        "{elapsed:?}"
    );

    d = start_d();
    let mut expected = vec![
        (a_key.clone(), "hello D, from A".to_owned()),
        (
            a_key.clone(),
            "acknowledged right before SIGKILL".to_owned(),
        ),
    ];
    assert_eq!(inbox(&d), expected, "after SIGKILL and a restart");
    let wait_for_link = |d: &Daemon| {
        wait_until("D's link to come up", Duration::from_secs(20), || {
            d.ask(&["status"])["result"]["links_up"] == 1
        });
    };
    wait_for_link(&d);
    let sent = send_until_delivered(&a, &d_key, "welcome back");
    assert!(sent.contains("delivered to"), "{sent}");
    expected.push((a_key.clone(), "welcome back".to_owned()));

    let logged_before = a.log().len();
    assert!(d.terminate().success());
    d = start_d();
    assert_eq!(inbox(&d), expected, "after a clean restart");
    // D was back before its link was found dead: A's route to it looks ready but leads
    // nowhere (D forgot it). The message's first packet shows A's node so, which repairs the
    // route; the message rides the repaired route.
    wait_for_link(&d);
    let sent = send_until_delivered(&a, &d_key, "after a clean restart");
    assert!(sent.contains("delivered to"), "{sent}");
    let log = a.log();
    let since = log.get(logged_before..).unwrap_or_default();
    assert!(
        since.contains("no longer knows the route (it restarted)): repairing")
            && since.contains(&format!("route to {d_key} repaired")),
        "{since}"
    );
    expected.push((a_key.clone(), "after a clean restart".to_owned()));
    assert_eq!(inbox(&d), expected);
    assert_eq!(
        a.ask(&["msg", "outbox"])["result"]["total"],
        4,
        "A's outbox holds what D acknowledged"
    );
}

/// Sends `text` from `from` to `to`, again while the answer is that no route came up (the
/// adverts may not have spread yet; the message never left), and returns the reply's text.
fn send_until_delivered(from: &Daemon, to: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = from.visctl(&["msg", "send", to, text]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return stdout;
        }
        assert!(
            stderr.contains("no route to") && Instant::now() < deadline,
            "not delivered: {stderr}"
        );
    }
}

/// The lines a child writes to `pipe`, as they come.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    seen
}
