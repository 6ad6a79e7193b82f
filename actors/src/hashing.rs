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
    pub reply: oneshot::Sender<Result<Hashed, HashError>>,
    /// Dropped once the job is answered (or skipped, or lost with the thread): what its
    /// submitter holds for it, such as its place in the thread's queue.
    pub held: Box<dyn Send>,
}

/// Jobs a thread holds at once: the file it hashes and the next one, so that it goes from
/// one file to the next without waiting for its submitter. [`HashThread::room`] has a permit
/// for each, so a submission with a permit never finds the queue full.
pub const QUEUED_JOBS: usize = 2;

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

/// The body of a hashing thread: take jobs until the channel closes. `read` counts the bytes
/// read so far, file after file, as they are read.
fn serve(jobs: Receiver<ThreadJob>, counters: Arc<HashCounters>, read: Arc<AtomicU64>, room: Arc<Semaphore>) {
    let _close = CloseOnExit(room);
    for job in jobs {
        if job.reply.is_closed() {
            // The requester gave up (a scan cut short) while the job waited.
            continue;
        }
        crate::hooks::maybe_panic_hashing(&job.path);
        let result = hash_with_retries(
            &job.path,
            &read,
            counters.metadata.load(Ordering::Relaxed),
            counters.part_layout(),
        );
        if let Ok(hashed) = &result {
            counters.files.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(hashed.stat.size, Ordering::Relaxed);
        }
        // A dropped receiver means the requester gave up; the answer is not needed.
        let _ = job.reply.send(result);
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
