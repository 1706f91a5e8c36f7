//! Name resolution off the event loop: a few threads, started at the first lookup, call the
//! system resolver (`getaddrinfo` through std's `ToSocketAddrs`) and send the answers back
//! through a channel, waking the loop. The job queue is bounded; a lookup that finds it full
//! is answered at once, with no address.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::service::{Lookup, LookupId};

/// Resolver threads: enough that one slow name does not hold up the others.
const THREADS: usize = 4;
/// Names waiting at most.
const QUEUE: usize = 256;

/// The resolver threads' queue and answers.
#[derive(Debug)]
pub(super) struct Resolver {
    waker: Arc<Waker>,
    jobs: Option<SyncSender<Lookup>>,
    answers: Receiver<(LookupId, Vec<SocketAddr>)>,
    answer_tx: Sender<(LookupId, Vec<SocketAddr>)>,
}

impl Resolver {
    /// The resolver; its threads start with the first lookup and end when it is dropped
    /// (after their current name).
    pub(super) fn new(waker: Arc<Waker>) -> Resolver {
        let (answer_tx, answers) = mpsc::channel();
        Resolver {
            waker,
            jobs: None,
            answers,
            answer_tx,
        }
    }

    fn start_threads(&mut self) -> Option<&SyncSender<Lookup>> {
        if self.jobs.is_none() {
            let (jobs, job_rx) = mpsc::sync_channel::<Lookup>(QUEUE);
            let job_rx = Arc::new(Mutex::new(job_rx));
            for index in 0..THREADS {
                let job_rx = job_rx.clone();
                let answer_tx = self.answer_tx.clone();
                let waker = self.waker.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("skywire-resolver-{index}"))
                    .spawn(move || resolve(&job_rx, &answer_tx, &waker));
                if let Err(error) = spawned {
                    log::error!("cannot start a resolver thread: {error}");
                    if index == 0 {
                        return None;
                    }
                }
            }
            self.jobs = Some(jobs);
        }
        self.jobs.as_ref()
    }

    /// Queues a lookup; one that cannot be queued is answered with no address.
    pub(super) fn submit(&mut self, lookup: Lookup) {
        let id = lookup.id;
        let queued = self
            .start_threads()
            .is_some_and(|jobs| jobs.try_send(lookup).is_ok());
        if !queued {
            log::warn!("the resolver is busy or gone: a name lookup is answered with nothing");
            let _ = self.answer_tx.send((id, Vec::new()));
        }
    }

    /// The next answer, if one is waiting.
    pub(super) fn poll_answer(&self) -> Option<(LookupId, Vec<SocketAddr>)> {
        self.answers.try_recv().ok()
    }
}

fn resolve(
    jobs: &Mutex<Receiver<Lookup>>,
    answers: &Sender<(LookupId, Vec<SocketAddr>)>,
    waker: &Waker,
) {
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(lookup) = job else {
            return;
        };
        let addresses = match (lookup.name.as_str(), lookup.port).to_socket_addrs() {
            Ok(addresses) => addresses.collect(),
            Err(error) => {
                log::debug!("cannot resolve {}: {error}", lookup.name);
                Vec::new()
            }
        };
        if answers.send((lookup.id, addresses)).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}
