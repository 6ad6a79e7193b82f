//! HasherActor: one hashing thread each. The actor never blocks its arbiter: the file is read
//! on its own thread, which holds the next jobs while it hashes one, so it goes from file to
//! file without waiting for the actor; the answers go straight to their requesters on oneshot
//! channels, a few at a time (see [`crate::hashing`]). If the thread dies (a panic while
//! hashing), the answers it kept are sent, those of the file it was on and of the files
//! waiting are dropped, these files are given to another hasher by [`Hashers`], and the actor
//! fails (at once when a job finds the thread gone, else within a second); the Supervisor
//! starts a new one with a new thread, so the pool never shrinks for good.

use super::supervisor::Liveness;
use super::supervisor::{take_panic, ChildGuard, StopChild};
use super::Slot;
use crate::fs::{HashError, Hashed};
use crate::hashing::{lost_worker, HashCounters, HashThread, ThreadJob, QUEUED_JOBS};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// Hash one file. The answer comes on the receiver once the hashing thread has done it (a
/// dropped sender: the thread died with it). `Err(WorkerLost)`: this hasher has no thread
/// any more. Either way, try another.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<Hashed, HashError>>, WorkerLost>")]
pub struct HashFile {
    pub path: PathBuf,
    /// Its size when it was walked (see [`ThreadJob::size`]).
    pub size: u64,
}

#[derive(Debug)]
pub struct WorkerLost;

/// Messages a hasher holds besides the one it is handing to its thread (which holds
/// [`QUEUED_JOBS`]); further files wait in the senders' `send().await`.
const MAILBOX: usize = 2;

pub struct HasherActor {
    guard: ChildGuard,
    thread: Option<HashThread>,
    thread_name: String,
    counters: Arc<HashCounters>,
}

/// A job's work ends when its thread drops it: answered, skipped, or lost with the thread.
struct JobInHand(Arc<Liveness>);

impl Drop for JobInHand {
    fn drop(&mut self) {
        self.0.end();
    }
}

impl HasherActor {
    pub fn new(guard: ChildGuard, counters: Arc<HashCounters>) -> HasherActor {
        let thread_name = format!("{}.{}", guard.name(), guard.generation());
        HasherActor {
            guard,
            thread: None,
            thread_name,
            counters,
        }
    }

    fn thread_failed(&mut self, ctx: &mut Context<Self>) {
        let panic = take_panic(Some(&self.thread_name)).unwrap_or_else(|| "no message".into());
        self.guard.fail(format!("hashing thread panicked: {panic}"));
        ctx.stop();
    }
}

impl Actor for HasherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        match HashThread::spawn(self.thread_name.clone(), self.counters.clone()) {
            Ok(thread) => {
                self.thread = Some(thread);
                self.guard.ready();
            }
            Err(error) => {
                self.guard.fail(format!("cannot start a hashing thread: {error}"));
                ctx.stop();
            }
        }
        // A thread that dies between files is noticed too, not only with a job in hand; the
        // bytes it reads of a large file are progress for the stall watchdog.
        let mut read = 0;
        ctx.run_interval(Duration::from_secs(1), move |actor, ctx| {
            let Some(thread) = actor.thread.as_ref().filter(|thread| thread.is_alive()) else {
                actor.thread_failed(ctx);
                return;
            };
            let now = thread.read.load(Ordering::Relaxed);
            if now != read {
                read = now;
                actor.guard.liveness().step();
            }
        });
    }
}

impl Handler<HashFile> for HasherActor {
    type Result = AtomicResponse<Self, Result<oneshot::Receiver<Result<Hashed, HashError>>, WorkerLost>>;

    fn handle(&mut self, message: HashFile, _ctx: &mut Context<Self>) -> Self::Result {
        let room = self.thread.as_ref().map(HashThread::room);
        // One hand-over at a time (AtomicResponse): the next message waits in the mailbox
        // until the thread has room for its job. A thread that ended closed its room.
        let permit = async move {
            match room {
                Some(room) => room.acquire_owned().await.ok(),
                None => None,
            }
        };
        AtomicResponse::new(Box::pin(permit.into_actor(self).map(move |permit, actor, ctx| {
            let Some(permit) = permit else {
                actor.thread_failed(ctx);
                return Err(WorkerLost);
            };
            let (reply, answer) = oneshot::channel();
            let liveness = actor.guard.liveness();
            liveness.begin();
            let job = ThreadJob {
                path: message.path,
                size: message.size,
                reply,
                held: Box::new((permit, JobInHand(liveness))),
            };
            match actor.thread.as_ref().map(|thread| thread.try_submit(job)) {
                Some(Ok(())) => Ok(answer),
                _ => {
                    actor.thread_failed(ctx);
                    Err(WorkerLost)
                }
            }
        })))
    }
}

impl Handler<StopChild> for HasherActor {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        self.guard.stop_cleanly();
        ctx.stop();
    }
}

/// The hasher pool as the scans see it: round robin over the current instances, and a
/// file whose hasher died (or was removed by a smaller `hash.workers`) is given to the next
/// one. The set of slots grows and shrinks with the configuration.
#[derive(Clone, Default)]
pub struct Hashers {
    slots: Arc<RwLock<Vec<Slot<HasherActor>>>>,
    next: Arc<AtomicUsize>,
}

/// How long a file waits for any hasher to be up before it counts as unreadable this round.
const NO_HASHER_TIMEOUT: Duration = Duration::from_secs(120);

impl Hashers {
    pub fn len(&self) -> usize {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a slot for a new hasher.
    pub fn push(&self, slot: Slot<HasherActor>) {
        self.slots.write().unwrap_or_else(|e| e.into_inner()).push(slot);
    }

    /// Drop the slots past `len` (their hashers are being stopped).
    pub fn truncate(&self, len: usize) {
        self.slots.write().unwrap_or_else(|e| e.into_inner()).truncate(len);
    }

    /// Requests to keep in flight: enough to fill every hashing thread's queue (which keeps
    /// a few answers to send them together) and have the next one at hand.
    pub fn slots(&self) -> usize {
        self.len().max(1) * (QUEUED_JOBS + 1)
    }

    /// The hasher for the `n`th try of a file, if one is up.
    fn pick(&self, n: usize) -> Option<Addr<HasherActor>> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        if slots.is_empty() {
            return None;
        }
        slots[n % slots.len()].get()
    }

    pub async fn hash(&self, path: PathBuf, size: u64) -> Result<Hashed, HashError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + NO_HASHER_TIMEOUT;
        let mut attempt = 0;
        while tokio::time::Instant::now() < deadline {
            let hasher = self.pick(start + attempt);
            attempt += 1;
            if let Some(hasher) = hasher {
                // Otherwise the hasher died with the file (or was restarting): try the next.
                if let Ok(Ok(answer)) = hasher
                    .send(HashFile {
                        path: path.clone(),
                        size,
                    })
                    .await
                {
                    if let Ok(result) = answer.await {
                        return result;
                    }
                }
            }
            if attempt % self.len().max(1) == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(lost_worker())
    }
}
