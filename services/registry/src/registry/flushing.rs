//! Writing coalesced progress: the flusher that writes each job's queued increments
//! ([`crate::progress::ProgressQueue`]) once per interval, and once more on shutdown.

use futures::StreamExt;
use modelops_core::job::JobId;
use tokio_util::sync::CancellationToken;

use super::JobRegistry;
use crate::error::RegistryError;
use crate::progress::Pending;

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
            () = registry.inner.progress.queued() => {}
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
