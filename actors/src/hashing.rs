//! The hasher pool: a fixed number of plain threads that hash files, fed through a bounded
//! crossbeam channel (a flood of work blocks the producer instead of filling memory) and
//! answering on a bounded tokio channel, so results reach async code without blocking it.

use crate::fs::{hash_file, HashError, Hashed};
use crossbeam_channel::{bounded, Sender};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a file that changes while it is read is tried again before giving up on it
/// for this round (the next scan or poll finds it again).
const ATTEMPTS_ON_CHANGE: u32 = 3;

/// One file to hash; `tag` comes back with the answer.
pub struct HashRequest<T> {
    pub path: PathBuf,
    pub tag: T,
    pub reply: tokio::sync::mpsc::Sender<HashReply<T>>,
}

pub struct HashReply<T> {
    pub tag: T,
    pub result: Result<Hashed, HashError>,
}

/// Counters shared with progress displays and metrics.
#[derive(Debug, Default)]
pub struct HashCounters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct HasherPool<T: Send + 'static> {
    sender: Sender<HashRequest<T>>,
    pub counters: Arc<HashCounters>,
}

impl<T: Send + 'static> HasherPool<T> {
    /// Start `workers` threads (at least one).
    pub fn new(workers: usize) -> HasherPool<T> {
        let workers = workers.max(1);
        let (sender, receiver) = bounded::<HashRequest<T>>(workers * 4);
        let counters = Arc::new(HashCounters::default());
        for index in 0..workers {
            let receiver = receiver.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(format!("hasher-{index}"))
                .spawn(move || {
                    for request in receiver {
                        let result = hash_with_retries(&request.path);
                        if let Ok(hashed) = &result {
                            counters.files.fetch_add(1, Ordering::Relaxed);
                            counters.bytes.fetch_add(hashed.stat.size, Ordering::Relaxed);
                        }
                        // A closed reply channel means the requester gave up; drop the answer.
                        let _ = request.reply.blocking_send(HashReply {
                            tag: request.tag,
                            result,
                        });
                    }
                })
                .expect("spawn hasher thread");
        }
        HasherPool { sender, counters }
    }

    /// A handle for submitting from a blocking context (it blocks while the pool is full).
    pub fn submitter(&self) -> Sender<HashRequest<T>> {
        self.sender.clone()
    }
}

fn hash_with_retries(path: &std::path::Path) -> Result<Hashed, HashError> {
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
