//! Coalesced progress. Thousands of runners each report "one more task done"; writing each
//! increment would be one compare-and-swap per task and a storm of conflicts on one key. Instead
//! increments queue per job and a flusher writes each job's sum once per interval, so a job
//! costs at most one state write per interval however many reporters it has.
//!
//! No increment is lost: callers that wait are answered only after their increment is stored
//! (or told it failed, so they can resend); increments acknowledged on queueing are re-queued
//! when a write fails, and flushed one last time on shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use modelops_core::job::JobId;
use tokio::sync::{Notify, oneshot};

use crate::error::RegistryError;

/// The answer a waiting caller gets: the job's counters after its increment was stored.
type Waiter = oneshot::Sender<Result<(i64, i64), RegistryError>>;

/// One job's increments waiting for the next flush.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Increments already acknowledged to their callers.
    pub(crate) queued: (i64, i64),
    /// Increments whose callers wait for the write.
    pub(crate) waiting: Vec<((i64, i64), Waiter)>,
}

/// The per-job queue of increments.
#[derive(Debug, Default)]
struct Queue {
    jobs: HashMap<JobId, Pending>,
    /// Set by the last flush on shutdown; later increments are refused.
    closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ProgressQueue {
    pending: Mutex<Queue>,
    known_jobs: Mutex<HashSet<JobId>>,
    wake: Notify,
}

impl ProgressQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until something is queued.
    pub(crate) async fn queued(&self) {
        self.wake.notified().await;
    }

    pub(crate) fn is_known(&self, job: &JobId) -> bool {
        self.known_jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(job)
    }

    pub(crate) fn remember(&self, job: JobId) {
        self.known_jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(job);
    }

    /// Queues an increment; `waiter` is answered after it is written. Refused (`false`) once the
    /// queue is closed for shutdown.
    pub(crate) fn enqueue(&self, job: JobId, completed: i64, total: i64, waiter: Option<Waiter>) -> bool {
        {
            let mut queue = self.lock();
            if queue.closed {
                return false;
            }
            let entry = queue.jobs.entry(job).or_default();
            match waiter {
                Some(waiter) => entry.waiting.push(((completed, total), waiter)),
                None => {
                    entry.queued.0 = entry.queued.0.saturating_add(completed);
                    entry.queued.1 = entry.queued.1.saturating_add(total);
                }
            }
        }
        self.wake.notify_one();
        true
    }

    /// Takes everything queued; with `close`, also refuses anything queued later.
    pub(crate) fn take_all(&self, close: bool) -> HashMap<JobId, Pending> {
        let mut queue = self.lock();
        queue.closed |= close;
        std::mem::take(&mut queue.jobs)
    }
}
