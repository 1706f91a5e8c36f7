//! The store thread: the messenger's logs, off the dataplane thread, which must not wait on
//! the disk. It reads a log, cutting off a torn tail, and appends records, one at a time in
//! the order asked: each is written and fsynced (and a new file's folder too) before its
//! answer goes back through a channel, waking the loop. So the messenger acknowledges a
//! message only once it is on the disk. Its own thread, not the host thread's, so that an
//! acknowledgement never waits behind the VPN's `ip` commands.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use mio::Waker;

use crate::api::messenger::MessageRow;
use crate::messenger::records;
use crate::service::{StoreOp, StoreResult};

/// The store thread's queue and answers.
#[derive(Debug)]
pub(super) struct StoreThread {
    jobs: Option<Sender<StoreOp>>,
    answers: Receiver<StoreResult>,
    thread: Option<JoinHandle<()>>,
}

impl StoreThread {
    /// Starts the thread.
    pub(super) fn start(waker: Arc<Waker>) -> io::Result<StoreThread> {
        let (jobs, job_rx) = mpsc::channel::<StoreOp>();
        let (answer_tx, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("skywire-store".to_owned())
            .spawn(move || run(&job_rx, &answer_tx, &waker))?;
        Ok(StoreThread {
            jobs: Some(jobs),
            answers,
            thread: Some(thread),
        })
    }

    /// Queues an operation; when the thread has gone, it fails at once and its answer says so.
    pub(super) fn submit(&self, op: StoreOp) -> Option<StoreResult> {
        let op = match &self.jobs {
            Some(jobs) => match jobs.send(op) {
                Ok(()) => return None,
                Err(unsent) => unsent.0,
            },
            None => op,
        };
        log::error!("the store thread has gone: cannot read or write the messenger's logs");
        let gone = || io::Error::other("the store thread has gone; restart skywired");
        Some(match op {
            StoreOp::Load { mailbox, .. } => StoreResult::Loaded {
                mailbox,
                result: Err(gone()),
            },
            StoreOp::Append {
                mailbox, message, ..
            } => StoreResult::Appended {
                mailbox,
                peer: message.peer,
                id: message.id,
                result: Err(gone()),
            },
        })
    }

    /// The next answer, if one is waiting.
    pub(super) fn poll_answer(&self) -> Option<StoreResult> {
        self.answers.try_recv().ok()
    }

    /// Lets the thread finish what is queued, and waits for it.
    pub(super) fn finish(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the store thread panicked");
            }
        }
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A log open for appending, and its length: a failed append is cut back to it.
struct OpenLog {
    file: File,
    len: u64,
}

fn run(jobs: &Receiver<StoreOp>, answers: &Sender<StoreResult>, waker: &Waker) {
    let mut open: HashMap<PathBuf, OpenLog> = HashMap::new();
    while let Ok(op) = jobs.recv() {
        let answer = match op {
            StoreOp::Load { mailbox, file } => {
                open.remove(&file);
                StoreResult::Loaded {
                    mailbox,
                    result: load(&file),
                }
            }
            StoreOp::Append {
                mailbox,
                file,
                mut message,
            } => {
                message.at_ms = wall_clock_ms();
                let (peer, id) = (message.peer, message.id);
                let result = append(&mut open, &file, &message).map(|()| message);
                StoreResult::Appended {
                    mailbox,
                    peer,
                    id,
                    result,
                }
            }
        };
        if answers.send(answer).is_err() {
            break;
        }
        let _ = waker.wake();
    }
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A log's records, and how many bytes of torn tail were cut off. More than one record's
/// worth of bytes that do not read is damage, not a torn write: the file is left alone and
/// the error says where.
fn load(file: &Path) -> io::Result<(Vec<MessageRow>, usize)> {
    let mut bytes = Vec::new();
    match File::open(file) {
        Ok(mut handle) => handle.read_to_end(&mut bytes)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(error) => return Err(error),
    };
    let parsed = records::read_log(&bytes)
        .map_err(|damaged| io::Error::new(io::ErrorKind::InvalidData, damaged))?;
    let cut = bytes.len() - parsed.valid_len;
    if cut > 0 {
        let handle = OpenOptions::new().write(true).open(file)?;
        handle.set_len(parsed.valid_len as u64)?;
        handle.sync_all()?;
    }
    Ok((parsed.records, cut))
}

/// Appends `message`'s record to `file` and waits until it is on the disk; a failure leaves
/// the file as it was (as far as the file system lets it be cut back).
fn append(
    open: &mut HashMap<PathBuf, OpenLog>,
    file: &Path,
    message: &MessageRow,
) -> io::Result<()> {
    if !open.contains_key(file) {
        let existed = file.exists();
        let handle = OpenOptions::new()
            .create(true)
            .append(true)
            // Messages are private.
            .mode(0o600)
            .open(file)?;
        if !existed {
            // The new file's name must survive a crash too.
            if let Some(folder) = file.parent() {
                File::open(folder)?.sync_all()?;
            }
        }
        let len = handle.metadata()?.len();
        open.insert(file.to_path_buf(), OpenLog { file: handle, len });
    }
    let Some(log) = open.get_mut(file) else {
        return Err(io::Error::other("the log is not open"));
    };
    let record = records::encode(message);
    let written = log
        .file
        .write_all(&record)
        .and_then(|()| log.file.sync_data());
    match written {
        Ok(()) => {
            log.len += record.len() as u64;
            Ok(())
        }
        Err(error) => {
            if log.file.set_len(log.len).is_err() {
                // Not cut back: opened anew next time, at its real length.
                open.remove(file);
            }
            Err(error)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::messenger::MessageId;
    use crate::messenger::records::MAX_RECORD_LEN;
    use crate::SecretKey;
    use std::os::unix::fs::PermissionsExt as _;

    fn message(seed: u8, text: &str) -> MessageRow {
        MessageRow {
            id: MessageId([seed; 16]),
            peer: SecretKey::from([seed; 32]).public(),
            at_ms: 0,
            text: text.to_owned(),
        }
    }

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skywire-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn appended_records_load_back_and_a_torn_tail_is_cut() {
        let dir = folder("torn");
        let file = dir.join("messenger-inbox.log");
        assert_eq!(load(&file).unwrap(), (Vec::new(), 0), "no file: empty");
        let mut open = HashMap::new();
        append(&mut open, &file, &message(1, "first")).unwrap();
        append(&mut open, &file, &message(2, "second")).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A crash in the middle of the third write.
        let third = records::encode(&message(3, "third, never acknowledged"));
        let whole = std::fs::metadata(&file).unwrap().len();
        let mut handle = OpenOptions::new().append(true).open(&file).unwrap();
        handle.write_all(&third[..third.len() / 2]).unwrap();
        drop(handle);
        drop(open);
        let (records, cut) = load(&file).unwrap();
        assert_eq!(records, [message(1, "first"), message(2, "second")]);
        assert_eq!(cut, third.len() / 2);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), whole, "cut back");
        // Appends go on after the cut, and all of it reads back.
        let mut open = HashMap::new();
        append(&mut open, &file, &message(4, "fourth")).unwrap();
        let (records, cut) = load(&file).unwrap();
        assert_eq!(cut, 0);
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], message(4, "fourth"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn damage_beyond_a_torn_write_is_not_cut() {
        let dir = folder("damaged");
        let file = dir.join("messenger-inbox.log");
        let mut open = HashMap::new();
        append(&mut open, &file, &message(1, "kept")).unwrap();
        let mut handle = OpenOptions::new().append(true).open(&file).unwrap();
        handle.write_all(&vec![0xff; MAX_RECORD_LEN + 1]).unwrap();
        drop(handle);
        let len = std::fs::metadata(&file).unwrap().len();
        let error = load(&file).unwrap_err();
        assert!(error.to_string().contains("damaged"), "{error}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len, "left alone");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
