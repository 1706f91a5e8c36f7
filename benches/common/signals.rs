//! Cleaning up when a bench is interrupted: SIGINT, SIGTERM and SIGHUP go to one thread that
//! runs the bench's cleanup and exits, while the programs the bench starts get them as usual.

use std::os::unix::process::CommandExt as _;
use std::process::Command;

use nix::sys::signal::{SigSet, Signal};

fn interrupting() -> SigSet {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals
}

/// From now on SIGINT, SIGTERM and SIGHUP go to one thread, which runs `cleanup` and exits with
/// 130. Call it before any other thread starts, so that they all leave these signals to it, and
/// start programs through [`with_signals`].
pub fn clean_up_on_signal(cleanup: fn()) {
    let signals = interrupting();
    signals
        .thread_block()
        .expect("cannot block SIGINT, SIGTERM and SIGHUP");
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            println!("\n{signal}: cleaning up");
            // What fails from here on, such as a download whose proxy was just killed, fails
            // because of the cleanup: not worth a panic message.
            std::panic::set_hook(Box::new(|_| {}));
            cleanup();
            std::process::exit(130);
        }
    });
}

/// `command`, whose program will get SIGINT, SIGTERM and SIGHUP: a child inherits the signal
/// mask, and without this a program started here would ignore Ctrl-C and `kill`.
pub fn with_signals(command: &mut Command) -> &mut Command {
    // SAFETY: pthread_sigmask is async-signal-safe, as code run between fork and exec must be,
    // and the closure touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            interrupting()
                .thread_unblock()
                .map_err(std::io::Error::from)
        })
    }
}
