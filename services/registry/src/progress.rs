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

use futures::StreamExt;
use modelops_core::job::JobId;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::RegistryError;
use crate::registry::JobRegistry;

/// The answer a waiting caller gets: the job's counters after its increment was stored.
type Waiter = oneshot::Sender<Result<(i64, i64), RegistryError>>;

#[derive(Debug, Default)]
struct Pending {
    /// Increments already acknowledged to their callers.
    queued: (i64, i64),
    /// Increments whose callers wait for the write.
    waiting: Vec<((i64, i64), Waiter)>,
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
    fn take_all(&self, close: bool) -> HashMap<JobId, Pending> {
        let mut queue = self.lock();
        queue.closed |= close;
        std::mem::take(&mut queue.jobs)
    }
}

/// Writes every queued job's increments, a few jobs at a time; with `close`, it is the last flush.
pub(crate) async fn flush(registry: &JobRegistry, close: bool) {
    let batches = registry.inner.progress.take_all(close);
    futures::stream::iter(batches)
        .for_each_concurrent(16, |(job, pending)| flush_job(registry, job, pending))
        .await;
}

async fn flush_job(registry: &JobRegistry, job: JobId, pending: Pending) {
    // Saturating: increments near i64::MAX must not wrap a counter negative.
    let completed = pending.waiting.iter().fold(pending.queued.0, |sum, ((c, _), _)| sum.saturating_add(*c));
    let total = pending.waiting.iter().fold(pending.queued.1, |sum, ((_, t), _)| sum.saturating_add(*t));
    match registry.apply_progress_delta(&job, completed, total).await {
        Ok(state) => {
            registry.inner.progress.remember(job);
            let counters = (state.tasks_completed(), state.tasks_total());
            for (_, waiter) in pending.waiting {
                let _ = waiter.send(Ok(counters));
            }
        }
        Err(RegistryError::NotFound(id)) => {
            tracing::warn!(job = %id, dropped = pending.queued.0, "progress for an unknown job dropped");
            for (_, waiter) in pending.waiting {
                let _ = waiter.send(Err(RegistryError::NotFound(id.clone())));
            }
        }
        Err(error) => {
            // Waiting callers learn of the failure and resend; queued increments stay queued.
            tracing::warn!(%job, %error, "progress write failed; will retry");
            if pending.queued != (0, 0) && !registry.inner.progress.enqueue(job.clone(), pending.queued.0, pending.queued.1, None) {
                tracing::error!(%job, completed = pending.queued.0, "progress lost: the store failed during the last flush");
            }
            let message = error.to_string();
            let unavailable = matches!(error, RegistryError::Store(crate::store::StoreError::Unavailable(_)));
            for (_, waiter) in pending.waiting {
                let error = if unavailable {
                    RegistryError::Store(crate::store::StoreError::Unavailable(message.clone()))
                } else {
                    RegistryError::Conflict {
                        job: job.to_string(),
                        attempts: 0,
                    }
                };
                let _ = waiter.send(Err(error));
            }
        }
    }
}

/// The flusher: waits for increments, lets more gather for one interval, writes them; on
/// shutdown flushes once more.
pub(crate) async fn run_flusher(registry: JobRegistry, token: CancellationToken) {
    let interval = registry.inner.config.progress_flush_interval;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            () = registry.inner.progress.wake.notified() => {}
        }
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(interval) => {}
        }
        flush(&registry, false).await;
    }
    flush(&registry, true).await;
    tracing::debug!("progress flusher stopped");
}
