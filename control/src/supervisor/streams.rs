//! The apps' standard streams: their output read into the ring that `logs` shows and handed to
//! attached listeners (lines skipped for one that does not keep up), and lines written to their
//! input.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};

use mio::unix::pipe::{Receiver, Sender};

use super::{
    AppState, AttachEvent, AttachId, OutputLine, Stream, Supervisor, SupervisorError, MAX_INPUT,
    PIPE_READ_BUDGET,
};
use crate::signal::AppId;

/// An app's pipes, and what waits to be written to its input.
#[derive(Debug, Default)]
pub(super) struct Pipes {
    pub(super) stdin: Option<Sender>,
    pub(super) stdout: Option<Receiver>,
    pub(super) stderr: Option<Receiver>,
    pub(super) input: Vec<u8>,
    pub(super) read_pending: [bool; 2],
}

/// One attached listener of an app's output.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) app: AppId,
    queue: VecDeque<AttachEvent>,
    missed: u64,
    ending: bool,
}

impl Listener {
    fn deliver(&mut self, event: AttachEvent, capacity: usize) {
        if self.queue.len() >= capacity.max(2) {
            self.missed += 1;
            return;
        }
        if self.missed > 0 {
            self.queue
                .push_back(AttachEvent::Missed(std::mem::take(&mut self.missed)));
        }
        self.queue.push_back(event);
    }
}

impl Supervisor {
    /// The last `count` output lines of app `id`, oldest first.
    pub fn logs(&self, id: AppId, count: usize) -> Result<Vec<OutputLine>, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        Ok(app.output.last(count))
    }

    /// Attaches a listener to app `id`'s output: what it writes from now on comes out of
    /// [`Supervisor::poll_attached`] until [`Supervisor::detach`] or the app's end.
    pub fn attach(&mut self, id: AppId) -> Result<AttachId, SupervisorError> {
        let app = self.apps.get(&id).ok_or(SupervisorError::NoSuchId(id))?;
        if app.state() == AppState::Exited {
            return Err(app.not_running());
        }
        let attach = AttachId(self.next_attach);
        self.next_attach += 1;
        self.listeners.insert(
            attach,
            Listener {
                app: id,
                queue: VecDeque::new(),
                missed: 0,
                ending: false,
            },
        );
        Ok(attach)
    }

    /// Ends a listener.
    pub fn detach(&mut self, attach: AttachId) {
        self.listeners.remove(&attach);
    }

    /// The app a listener is attached to.
    pub fn attached_app(&self, attach: AttachId) -> Result<AppId, SupervisorError> {
        self.listeners
            .get(&attach)
            .map(|listener| listener.app)
            .ok_or(SupervisorError::NotAttached(attach))
    }

    /// The next event for an attached listener.
    pub fn poll_attached(&mut self) -> Option<(AttachId, AttachEvent)> {
        let (&attach, listener) = self
            .listeners
            .iter_mut()
            .find(|(_, listener)| !listener.queue.is_empty())?;
        let event = listener.queue.pop_front()?;
        if listener.ending && listener.queue.is_empty() {
            self.listeners.remove(&attach);
        }
        Some((attach, event))
    }

    /// Writes `line` and a newline to app `id`'s standard input.
    pub fn send_input(&mut self, id: AppId, line: &str) -> Result<(), SupervisorError> {
        let app = self.running_app(id)?;
        if app.pipes.stdin.is_none() {
            return Err(SupervisorError::InputClosed(id));
        }
        if app.pipes.input.len() + line.len() + 1 > MAX_INPUT {
            return Err(SupervisorError::InputFull(id));
        }
        if let Some(app) = self.apps.get_mut(&id) {
            app.pipes.input.extend_from_slice(line.as_bytes());
            app.pipes.input.push(b'\n');
        }
        self.flush_input(id);
        Ok(())
    }

    pub(super) fn flush_input(&mut self, id: AppId) {
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        let Some(stdin) = app.pipes.stdin.as_mut() else {
            app.pipes.input.clear();
            return;
        };
        let mut written = 0;
        let mut closed = false;
        while written < app.pipes.input.len() {
            match stdin.write(&app.pipes.input[written..]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => written += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::info!("app {id}: its standard input is closed: {err}");
                    closed = true;
                    break;
                }
            }
        }
        app.pipes.input.drain(..written);
        if closed {
            if let Some(mut stdin) = app.pipes.stdin.take() {
                let _ = self.registry.deregister(&mut stdin);
            }
            app.pipes.input.clear();
        }
    }

    pub(super) fn read_pipe(&mut self, id: AppId, stream: Stream) {
        let index = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        let capacity = self.options.attach_queue;
        let Some(app) = self.apps.get_mut(&id) else {
            return;
        };
        app.pipes.read_pending[index] = false;
        let mut buf = [0u8; 8192];
        let mut budget = PIPE_READ_BUDGET;
        let mut lines = Vec::new();
        loop {
            let pipe = match stream {
                Stream::Stdout => app.pipes.stdout.as_mut(),
                Stream::Stderr => app.pipes.stderr.as_mut(),
            };
            let Some(pipe) = pipe else {
                break;
            };
            match pipe.read(&mut buf) {
                Ok(0) => {
                    let _ = self.registry.deregister(pipe);
                    match stream {
                        Stream::Stdout => app.pipes.stdout = None,
                        Stream::Stderr => app.pipes.stderr = None,
                    }
                    lines.extend(app.splitters[index].finish());
                    break;
                }
                Ok(got) => {
                    app.splitters[index].push(&buf[..got], |line| lines.push(line));
                    budget = budget.saturating_sub(got);
                    if budget == 0 {
                        app.pipes.read_pending[index] = true;
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("app {id}: cannot read its {stream:?}: {err}");
                    let _ = self.registry.deregister(pipe);
                    match stream {
                        Stream::Stdout => app.pipes.stdout = None,
                        Stream::Stderr => app.pipes.stderr = None,
                    }
                    break;
                }
            }
        }
        for line in lines {
            let line = OutputLine { stream, line };
            for listener in self.listeners.values_mut() {
                if listener.app == id && !listener.ending {
                    listener.deliver(AttachEvent::Output(line.clone()), capacity);
                }
            }
            app.output.push(line);
        }
    }

    pub(super) fn end_listeners(&mut self, id: AppId, status: String, restarting: bool) {
        let capacity = self.options.attach_queue;
        for listener in self.listeners.values_mut() {
            if listener.app == id && !listener.ending {
                // The last event always gets through, whatever the queue holds.
                listener.deliver(
                    AttachEvent::Exited {
                        status: status.clone(),
                        restarting,
                    },
                    capacity + 2,
                );
                listener.ending = !restarting;
            }
        }
        self.listeners
            .retain(|_, listener| !(listener.ending && listener.queue.is_empty()));
    }
}
