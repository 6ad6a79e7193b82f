//! Hashing threads. Hashing is blocking file I/O and CPU work, so it never runs on an async
//! or actor thread: jobs cross into plain threads over bounded crossbeam channels and the
//! answer comes back on a oneshot channel that async code can await.
//!
//! [`HashThread`] is one thread with a small job channel; each hasher actor owns one (a
//! panic kills only that thread, and its actor is restarted with a new one).

use crate::fs::{hash_file_in_parts, HashError, Hashed, PartLayout};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// How often a file that changes while it is read is tried again before giving up on it
/// for this round (the next scan or poll finds it again).
const ATTEMPTS_ON_CHANGE: u32 = 3;

/// One file to hash and where the answer goes.
pub struct ThreadJob {
    pub path: PathBuf,
    /// Its size when it was walked: answers kept before a large file go out before it is
    /// read, not after.
    pub size: u64,
    pub reply: oneshot::Sender<Result<Hashed, HashError>>,
    /// Dropped once the job is answered (or skipped, or lost with the thread): what its
    /// submitter holds for it, such as its place in the thread's queue.
    pub held: Box<dyn Send>,
}

/// Jobs a thread holds at once, answered or not: the file it hashes, those it has answers
/// kept for (up to [`ANSWER_BATCH`]) and as many waiting, so that it goes from one file to
/// the next without waiting for its submitter. [`HashThread::room`] has a permit for each,
/// so a submission with a permit never finds the queue full.
pub const QUEUED_JOBS: usize = 2 * ANSWER_BATCH;

/// Counters shared with progress displays and metrics.
#[derive(Debug, Default)]
pub struct HashCounters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// `metadata.extract`: hashers read each file's content metadata as they hash it.
    pub metadata: AtomicBool,
    /// The store's multipart layout (0: none): hashers take the digest of each part of a
    /// large file in the same read, for its upload (see [`crate::fs::PartDigests`]).
    pub part_threshold: AtomicU64,
    pub part_size: AtomicU64,
}

impl HashCounters {
    /// Set (or clear) the layout the store takes large files in.
    pub fn set_part_layout(&self, layout: Option<PartLayout>) {
        let (threshold, part_size) = layout.map_or((0, 0), |layout| (layout.threshold, layout.part_size));
        self.part_size.store(part_size, Ordering::Relaxed);
        self.part_threshold.store(threshold, Ordering::Relaxed);
    }

    /// The layout in force (a part size read with another threshold does no harm: the
    /// upload uses the digests only if their part size is its own).
    pub fn part_layout(&self) -> Option<PartLayout> {
        let part_size = self.part_size.load(Ordering::Relaxed);
        let threshold = self.part_threshold.load(Ordering::Relaxed);
        (part_size > 0 && threshold > 0).then_some(PartLayout { threshold, part_size })
    }
}

/// Closes the thread's room when the thread ends, however it ends (a panic included): a
/// submitter waiting for room learns at once that the thread is gone.
struct CloseOnExit(Arc<Semaphore>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Answers a thread keeps before it sends them together: each answer sent alone woke the
/// requester's thread (an eventfd write, and usually a switch to it on the spot), about two
/// context switches per small file in a first sync.
const ANSWER_BATCH: usize = 4;
/// A file at least this large takes long enough that the answers kept before it go out
/// before it is read, and its own at once: waking for it costs little against its read.
const ANSWER_AT_ONCE: u64 = 1 << 20;

/// An answer kept, with what its job holds (its place in the queue).
struct Kept {
    reply: oneshot::Sender<Result<Hashed, HashError>>,
    result: Result<Hashed, HashError>,
    held: Box<dyn Send>,
}

/// Answers kept, to be sent together.
#[derive(Default)]
struct Answers(Vec<Kept>);

impl Answers {
    /// Send every kept answer, then release the jobs' places. A dropped receiver means the
    /// requester gave up; the answer is not needed.
    fn send(&mut self) {
        for kept in self.0.drain(..) {
            let _ = kept.reply.send(kept.result);
            drop(kept.held);
        }
    }
}

/// Kept answers go out however the thread ends: a panic on a later file loses only that file.
impl Drop for Answers {
    fn drop(&mut self) {
        self.send();
    }
}

/// The body of a hashing thread: take jobs until the channel closes. `read` counts the bytes
/// read so far, file after file, as they are read. Answers go out in groups of up to
/// [`ANSWER_BATCH`] while more jobs wait, and all at once when none does: a requester waits
/// at most for the few small files queued after its own.
fn serve(jobs: Receiver<ThreadJob>, counters: Arc<HashCounters>, read: Arc<AtomicU64>, room: Arc<Semaphore>) {
    let _close = CloseOnExit(room);
    let mut answers = Answers::default();
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(_) => {
                // Nothing waiting: what was kept goes out before the thread sleeps.
                answers.send();
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        if job.reply.is_closed() {
            // The requester gave up (a scan cut short) while the job waited.
            continue;
        }
        if job.size >= ANSWER_AT_ONCE {
            answers.send();
        }
        crate::hooks::maybe_panic_hashing(&job.path);
        let result = hash_with_retries(
            &job.path,
            &read,
            counters.metadata.load(Ordering::Relaxed),
            counters.part_layout(),
        );
        let mut at_once = true;
        if let Ok(hashed) = &result {
            counters.files.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(hashed.stat.size, Ordering::Relaxed);
            at_once = hashed.stat.size >= ANSWER_AT_ONCE;
        }
        answers.0.push(Kept {
            reply: job.reply,
            result,
            held: job.held,
        });
        if at_once || answers.0.len() >= ANSWER_BATCH {
            answers.send();
        }
    }
}

/// One hashing thread with room for [`QUEUED_JOBS`] waiting jobs, so that it goes from one
/// file to the next without waiting for its actor's thread to hand it the next.
/// Dropping it closes the channel: the thread ends after its current file, unjoined (waiting
/// jobs whose requester is gone are skipped), so a restart never waits for a large file.
pub struct HashThread {
    jobs: Sender<ThreadJob>,
    /// A permit for each job the thread may hold; closed when the thread ends.
    room: Arc<Semaphore>,
    /// Bytes this thread has read, updated per buffer (its progress on a large file).
    pub read: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HashThread {
    pub fn spawn(name: String, counters: Arc<HashCounters>) -> std::io::Result<HashThread> {
        let (jobs, receiver) = bounded::<ThreadJob>(QUEUED_JOBS);
        let room = Arc::new(Semaphore::new(QUEUED_JOBS));
        let read = Arc::new(AtomicU64::new(0));
        let (thread_read, thread_room) = (read.clone(), room.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(receiver, counters, thread_read, thread_room))?;
        Ok(HashThread {
            jobs,
            room,
            read,
            thread: Some(thread),
        })
    }

    /// Hand a job to the thread without blocking. Fails (giving the job back) when its queue
    /// is full, or the thread is gone.
    pub fn try_submit(&self, job: ThreadJob) -> Result<(), ThreadJob> {
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    /// Room for a job: a permit to put in the job (see [`ThreadJob::held`]); an error once
    /// the thread has ended.
    pub fn room(&self) -> Arc<Semaphore> {
        self.room.clone()
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|thread| !thread.is_finished())
    }
}

/// The answer when a hashing thread died with the job.
pub fn lost_worker() -> HashError {
    HashError::Io(std::io::Error::other("the hashing thread stopped before answering"))
}

fn hash_with_retries(
    path: &Path,
    read: &AtomicU64,
    metadata: bool,
    parts: Option<PartLayout>,
) -> Result<Hashed, HashError> {
    let mut attempt = 1;
    loop {
        match hash_file_in_parts(path, &mut || {}, read, metadata, parts) {
            Err(HashError::Changed) if attempt < ATTEMPTS_ON_CHANGE => {
                std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Submit `path` with a place in the thread's room, as the hasher actor does.
    async fn submit(thread: &HashThread, path: PathBuf) -> oneshot::Receiver<Result<Hashed, HashError>> {
        let permit = thread.room().acquire_owned().await.expect("the thread is alive");
        let (reply, answer) = oneshot::channel();
        let job = ThreadJob {
            size: std::fs::metadata(&path).map_or(0, |metadata| metadata.len()),
            path,
            reply,
            held: Box::new(permit),
        };
        assert!(thread.try_submit(job).is_ok(), "a job with a permit finds room");
        answer
    }

    async fn answered(answer: oneshot::Receiver<Result<Hashed, HashError>>) -> Hashed {
        tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .expect("answered, not kept waiting for more jobs")
            .expect("the thread lives")
            .expect("hashed")
    }

    #[tokio::test]
    async fn a_lone_job_is_answered_at_once_and_a_queue_of_them_each_to_its_requester() {
        let dir = tempfile::tempdir().unwrap();
        let counters = Arc::new(HashCounters::default());
        let thread = HashThread::spawn("hash-test".into(), counters.clone()).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        // One job and no other: its answer is not kept for a batch that never fills.
        let lone = write("lone", b"alone");
        let hashed = answered(submit(&thread, lone.clone()).await).await;
        assert_eq!(hashed.sha256, crate::fs::hash_file(&lone).unwrap().sha256);

        // More jobs than a batch, the thread's room kept full: each answer reaches its own
        // requester, and every place in the room is given back.
        let paths: Vec<PathBuf> = (0..3 * QUEUED_JOBS)
            .map(|i| write(&format!("f{i}"), format!("content {i}").as_bytes()))
            .collect();
        let mut answers = Vec::new();
        for path in &paths {
            answers.push((path, submit(&thread, path.clone()).await));
        }
        for (path, answer) in answers {
            let hashed = answered(answer).await;
            assert_eq!(
                hashed.sha256,
                crate::fs::hash_file(path).unwrap().sha256,
                "{}",
                path.display()
            );
        }
        assert_eq!(counters.files.load(Ordering::Relaxed), 1 + paths.len() as u64);
        // The last places come back with the answers that go out when the queue runs dry.
        tokio::time::timeout(Duration::from_secs(30), async {
            while thread.room().available_permits() < QUEUED_JOBS {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every place given back");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_hashed_is_answered_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let thread = HashThread::spawn("hash-test".into(), Arc::new(HashCounters::default())).unwrap();
        let missing = submit(&thread, dir.path().join("missing")).await;
        let result = tokio::time::timeout(Duration::from_secs(30), missing)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(result, Err(HashError::Vanished)), "{result:?}");
    }
}
