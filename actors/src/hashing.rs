//! Hashing threads. Hashing is blocking file I/O and CPU work, so it never runs on an async
//! or actor thread: jobs cross into plain threads over bounded crossbeam channels and the
//! answer comes back on a oneshot channel that async code can await.
//!
//! * [`HashThread`] — one thread with a one-slot job channel; the daemon's hasher actors
//!   each own one (a panic kills only that thread, and its actor is restarted with a new one).
//! * [`HasherPool`] — a fixed set of threads on one shared channel, for the `scan` command.

use crate::catalog::{BatchOutcome, Catalog, CatalogError};
use crate::fs::{hash_file, HashError, Hashed};
use crate::scan::{Batch, ScanSink};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How often a file that changes while it is read is tried again before giving up on it
/// for this round (the next scan or poll finds it again).
const ATTEMPTS_ON_CHANGE: u32 = 3;

/// One file to hash and where the answer goes.
pub struct HashJob {
    pub path: PathBuf,
    pub reply: oneshot::Sender<Result<Hashed, HashError>>,
}

/// Counters shared with progress displays and metrics.
#[derive(Debug, Default)]
pub struct HashCounters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

/// The body of a hashing thread: take jobs until the channel closes.
fn serve(jobs: Receiver<HashJob>, counters: Arc<HashCounters>) {
    for job in jobs {
        crate::hooks::maybe_panic_hashing(&job.path);
        let result = hash_with_retries(&job.path);
        if let Ok(hashed) = &result {
            counters.files.fetch_add(1, Ordering::Relaxed);
            counters.bytes.fetch_add(hashed.stat.size, Ordering::Relaxed);
        }
        // A dropped receiver means the requester gave up; the answer is not needed.
        let _ = job.reply.send(result);
    }
}

/// One hashing thread with room for one waiting job.
/// Dropping it closes the channel: the thread ends after its current file, unjoined, so a
/// restart never waits for a large file to finish.
pub struct HashThread {
    jobs: Sender<HashJob>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HashThread {
    pub fn spawn(name: String, counters: Arc<HashCounters>) -> std::io::Result<HashThread> {
        let (jobs, receiver) = bounded::<HashJob>(1);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || serve(receiver, counters))?;
        Ok(HashThread {
            jobs,
            thread: Some(thread),
        })
    }

    /// Hand a job to the thread without blocking. Fails (giving the job back) when the
    /// thread is busy with a waiting job already, or gone.
    pub fn try_submit(&self, job: HashJob) -> Result<(), HashJob> {
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|thread| !thread.is_finished())
    }
}

/// A fixed pool of hashing threads on one shared channel (the `scan` command's hasher).
pub struct HasherPool {
    sender: Sender<HashJob>,
    workers: usize,
    pub counters: Arc<HashCounters>,
}

/// Jobs the pool's channel holds; scans keep fewer than this in flight, so submitting
/// normally never waits.
const POOL_CHANNEL: usize = 4096;

impl HasherPool {
    /// Start `workers` threads (at least one).
    pub fn new(workers: usize) -> HasherPool {
        let workers = workers.max(1);
        let (sender, receiver) = bounded::<HashJob>(POOL_CHANNEL);
        let counters = Arc::new(HashCounters::default());
        for index in 0..workers {
            let receiver = receiver.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("hasher-{index}"))
                .spawn(move || serve(receiver, counters))
                .expect("spawn hasher thread");
        }
        HasherPool {
            sender,
            workers,
            counters,
        }
    }

    /// Queue a hash at once (so the threads keep working while the caller does something
    /// else); the future resolves with the answer.
    pub fn hash(&self, path: PathBuf) -> impl Future<Output = Result<Hashed, HashError>> + 'static {
        let (reply, answer) = oneshot::channel();
        let job = HashJob { path, reply };
        let queued = match self.sender.try_send(job) {
            Ok(()) => None,
            Err(TrySendError::Full(job)) => {
                // More scans at once than the channel holds: wait for room off the runtime.
                let sender = self.sender.clone();
                Some(tokio::task::spawn_blocking(move || sender.send(job).is_ok()))
            }
            Err(TrySendError::Disconnected(_)) => None,
        };
        async move {
            if let Some(queued) = queued {
                let _ = queued.await;
            }
            answer.await.unwrap_or_else(|_| Err(lost_worker()))
        }
    }
}

/// The answer when a hashing thread died with the job.
pub fn lost_worker() -> HashError {
    HashError::Io(std::io::Error::other("the hashing thread stopped before answering"))
}

/// The `scan` command's sink: its own hashing threads, its own connection.
impl ScanSink for HasherPool {
    fn hash_slots(&self) -> usize {
        self.workers * 4
    }

    fn hash(&self, path: PathBuf) -> impl Future<Output = Result<Hashed, HashError>> {
        HasherPool::hash(self, path)
    }

    async fn write(&self, catalog: &mut Catalog, root: &str, batch: Batch) -> Result<BatchOutcome, CatalogError> {
        catalog
            .write_batch(root, &batch.registrations, &batch.moves, &batch.deletions)
            .await
    }
}

fn hash_with_retries(path: &Path) -> Result<Hashed, HashError> {
    let mut attempt = 1;
    loop {
        match hash_file(path) {
            Err(HashError::Changed) if attempt < ATTEMPTS_ON_CHANGE => {
                std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                attempt += 1;
            }
            other => return other,
        }
    }
}
