//! The life cycle on a clock of its own: no process, no waiting.

#![allow(clippy::unwrap_used)]

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn graces() -> Graces {
    Graces {
        shutdown: 12 * SECOND,
        term: 3 * SECOND,
    }
}

fn backoff() -> Backoff {
    Backoff::new(SECOND, 60 * SECOND, 60 * SECOND)
}

fn request(id: u64) -> RequestId {
    RequestId(id)
}

/// Runs `handle_timeout` at `at`, after checking that it is due then and not a moment before.
fn due_at(life: &mut Lifecycle, at: Instant) -> Option<Due> {
    assert_eq!(life.poll_timeout(false), Some(at));
    assert_eq!(
        life.handle_timeout(at - Duration::from_millis(1), graces(), false),
        None
    );
    life.handle_timeout(at, graces(), false)
}

#[test]
fn a_signal_client_is_asked_then_terminated_then_killed() {
    let start = Instant::now();
    let mut life = Lifecycle::running(false, backoff());
    assert_eq!(life.state(), AppState::Running);
    assert_eq!(life.poll_timeout(false), None);

    let mut asked = false;
    let step = life.stop(
        Some(request(1)),
        || {
            asked = true;
            true
        },
        start,
        graces(),
    );
    assert_eq!((step, asked), (StopStep::Asked, true));
    assert_eq!(life.state(), AppState::Stopping);

    let term_at = start + 12 * SECOND;
    assert_eq!(
        due_at(&mut life, term_at),
        Some(Due::Signal(Signal::SIGTERM))
    );
    let kill_at = term_at + 3 * SECOND;
    assert_eq!(
        due_at(&mut life, kill_at),
        Some(Due::Signal(Signal::SIGKILL))
    );
    // A process stuck in the kernel is complained about now and then, never signalled again.
    let stuck_at = kill_at + KILL_WAIT;
    assert_eq!(due_at(&mut life, stuck_at), Some(Due::Stuck));
    assert_eq!(due_at(&mut life, stuck_at + KILL_WAIT), Some(Due::Stuck));

    let exit = life.handle_exit(stuck_at + KILL_WAIT, SECOND, false);
    assert_eq!(
        exit,
        Some(Exit::Stopped {
            how: StopHow::Sigkill,
            requests: vec![request(1)],
        })
    );
    assert_eq!(life.state(), AppState::Exited);
    assert_eq!(life.exited_at(), Some(stuck_at + KILL_WAIT));
    assert_eq!(life.poll_timeout(false), None);
}

#[test]
fn each_step_names_what_stopped_the_app() {
    let start = Instant::now();
    for (timeouts, how) in [
        (0, StopHow::Signal),
        (1, StopHow::Sigterm),
        (2, StopHow::Sigkill),
    ] {
        let mut life = Lifecycle::running(false, backoff());
        life.stop(None, || true, start, graces());
        let mut now = start;
        for _ in 0..timeouts {
            now = life.poll_timeout(false).unwrap();
            life.handle_timeout(now, graces(), false);
        }
        let Some(Exit::Stopped { how: got, requests }) = life.handle_exit(now, SECOND, false)
        else {
            panic!("not stopped");
        };
        assert_eq!((got, requests), (how, vec![]));
    }
}

#[test]
fn an_app_that_cannot_be_asked_gets_sigterm_at_once() {
    let start = Instant::now();
    let mut life = Lifecycle::running(false, backoff());
    let step = life.stop(Some(request(1)), || false, start, graces());
    assert_eq!(step, StopStep::Terminate);
    assert_eq!(
        due_at(&mut life, start + 3 * SECOND),
        Some(Due::Signal(Signal::SIGKILL))
    );
}

#[test]
fn a_second_stop_joins_the_first_and_is_told_of_the_same_end() {
    let start = Instant::now();
    let mut life = Lifecycle::running(false, backoff());
    life.stop(Some(request(1)), || true, start, graces());
    let step = life.stop(
        Some(request(2)),
        || panic!("asked twice"),
        start + SECOND,
        graces(),
    );
    assert_eq!(step, StopStep::Joined);
    assert_eq!(life.poll_timeout(false), Some(start + 12 * SECOND));
    assert_eq!(
        life.handle_exit(start + 2 * SECOND, SECOND, false),
        Some(Exit::Stopped {
            how: StopHow::Signal,
            requests: vec![request(1), request(2)],
        })
    );
    assert_eq!(
        life.stop(Some(request(3)), || true, start, graces()),
        StopStep::NotRunning
    );
}

#[test]
fn a_daemon_app_restarts_later_each_time_until_it_stays_up() {
    let mut now = Instant::now();
    let mut life = Lifecycle::running(true, backoff());
    let mut delays = Vec::new();
    for _ in 0..8 {
        let Some(Exit::Restart { delay }) = life.handle_exit(now, SECOND, false) else {
            panic!("a daemon app restarts");
        };
        assert_eq!(life.state(), AppState::Restarting);
        assert_eq!(due_at(&mut life, now + delay), Some(Due::Restart));
        life.restarted();
        assert_eq!(life.state(), AppState::Running);
        delays.push(delay.as_secs());
        now += delay;
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    // A minute up starts the back-off over.
    assert_eq!(
        life.handle_exit(now, 61 * SECOND, false),
        Some(Exit::Restart { delay: SECOND })
    );
    // A start that fails waits longer.
    assert_eq!(life.restart_failed(now), 2 * SECOND);
    assert_eq!(life.poll_timeout(false), Some(now + 2 * SECOND));
}

#[test]
fn nothing_restarts_while_every_app_stops() {
    let now = Instant::now();
    let mut life = Lifecycle::running(true, backoff());
    assert_eq!(life.handle_exit(now, SECOND, true), Some(Exit::Ended));
    assert_eq!(life.state(), AppState::Exited);

    let mut life = Lifecycle::running(true, backoff());
    life.handle_exit(now, SECOND, false);
    assert_eq!(life.poll_timeout(true), None);
    assert_eq!(life.handle_timeout(now + 60 * SECOND, graces(), true), None);
}

#[test]
fn a_pending_restart_is_cancelled_by_a_stop() {
    let now = Instant::now();
    let mut life = Lifecycle::running(true, backoff());
    life.handle_exit(now, SECOND, false);
    assert_eq!(
        life.stop(
            Some(request(1)),
            || panic!("no process to ask"),
            now,
            graces()
        ),
        StopStep::Cancelled
    );
    assert_eq!(life.state(), AppState::Exited);
    assert_eq!(life.poll_timeout(false), None);
}

#[test]
fn an_app_that_ends_by_itself_stays_ended() {
    let now = Instant::now();
    let mut life = Lifecycle::running(false, backoff());
    assert_eq!(life.handle_exit(now, SECOND, false), Some(Exit::Ended));
    assert_eq!(
        life.handle_exit(now, SECOND, false),
        None,
        "no process left"
    );
    assert_eq!(life.exited_at(), Some(now));
}

#[test]
fn a_kill_on_the_way_out_ends_a_stop_as_sigkill_and_gives_up_restarts() {
    let now = Instant::now();
    let mut stopping = Lifecycle::running(false, backoff());
    stopping.stop(None, || true, now, graces());
    stopping.killed(now);
    assert!(matches!(
        stopping.handle_exit(now, SECOND, true),
        Some(Exit::Stopped {
            how: StopHow::Sigkill,
            ..
        })
    ));

    let mut restarting = Lifecycle::running(true, backoff());
    restarting.handle_exit(now, SECOND, false);
    restarting.killed(now);
    assert_eq!(restarting.state(), AppState::Exited);
}
