//! Name resolution off the event loop: a few threads call the system resolver (`getaddrinfo`
//! through std's `ToSocketAddrs`) and send the answers back through a channel, waking the
//! dataplane's poll. The job queue is bounded; a full one is refused at once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use mio::Waker;

/// Resolver threads: enough that one slow name does not hold up the others.
const THREADS: usize = 4;
/// Names waiting at most.
const QUEUE: usize = 256;
/// Addresses kept per name: the exit tries them in turn.
const MAX_ADDRESSES: usize = 4;

/// A name to resolve for connection `conn`, whose `serial` tells a reused slot apart.
#[derive(Debug)]
pub(super) struct Job {
    pub conn: usize,
    pub serial: u64,
    pub name: String,
    pub port: u16,
}

/// A job's answer: the addresses, empty when the name did not resolve.
#[derive(Debug)]
pub(super) struct Resolved {
    pub conn: usize,
    pub serial: u64,
    pub addresses: Vec<SocketAddr>,
}

/// The resolver threads' queue and answers.
#[derive(Debug)]
pub(super) struct Resolver {
    jobs: SyncSender<Job>,
    answers: Receiver<Resolved>,
}

impl Resolver {
    /// Starts the threads; they end when the resolver is dropped (after their current name).
    pub fn new(waker: Arc<Waker>) -> std::io::Result<Resolver> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(QUEUE);
        let (answer_tx, answers) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        for index in 0..THREADS {
            let job_rx = job_rx.clone();
            let answer_tx = answer_tx.clone();
            let waker = waker.clone();
            std::thread::Builder::new()
                .name(format!("socks-resolver-{index}"))
                .spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else {
                        return;
                    };
                    let addresses = match (job.name.as_str(), job.port).to_socket_addrs() {
                        Ok(addresses) => addresses.take(MAX_ADDRESSES).collect(),
                        Err(error) => {
                            log::debug!("SOCKS: cannot resolve {}: {error}", job.name);
                            Vec::new()
                        }
                    };
                    let answer = Resolved {
                        conn: job.conn,
                        serial: job.serial,
                        addresses,
                    };
                    if answer_tx.send(answer).is_err() {
                        return;
                    }
                    let _ = waker.wake();
                })?;
        }
        Ok(Resolver { jobs, answers })
    }

    /// Queues a name; false when the queue is full or the threads are gone.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.try_send(job).is_ok()
    }

    /// The next answer, if one is waiting.
    pub fn poll_answer(&self) -> Option<Resolved> {
        self.answers.try_recv().ok()
    }
}
