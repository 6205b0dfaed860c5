//! Following changes: the watch a caller of `WatchJobs` (or a service in this process) gets from
//! the change hub ([`crate::watch::ChangeHub`]), and the followers that publish to the hub what
//! every process writes: from the store's revision-ordered feed (etcd, embedded), or from its
//! polled change feed (object stores).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use modelops_core::job::{JobId, JobState};
use modelops_core::paths;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{JOBS_PREFIX, JobRegistry};
use crate::error::RegistryError;
use crate::store::{ChangeFeedItem, RevisionFeedItem, StoreError};
use crate::watch::JobEvent;

impl JobRegistry {
    /// Follows job changes: first, with `replay_current`, the current state of every job (marked
    /// replayed, at the position the live events continue from), then the retained events after
    /// `after` (0: none), then live ones until `shutdown` or until the stream is dropped. A
    /// watcher that falls behind the live channel is served from the backlog; one that fell
    /// behind the backlog too gets an OUT_OF_RANGE error and the stream ends (re-watch with
    /// `replay_current`). What `WatchJobs` serves, and what services in this process follow.
    pub async fn watch(
        &self,
        after: u64,
        replay_current: bool,
        shutdown: CancellationToken,
    ) -> Result<futures::stream::BoxStream<'static, Result<JobEvent, RegistryError>>, RegistryError> {
        let hub = self.hub();
        // A replica that has just started resumes a position once its store feed runs.
        if after > 0 && !hub.until_running(Duration::from_secs(10)).await {
            tracing::debug!(after, "the store feed is not running yet");
        }
        // Read first: a reset after it ends this watch, at worst once too many.
        let resets = hub.resets();
        let (backlog, mut live) = hub.subscribe(after)?;
        // The replay's position is read before the listing: every change at or before it is in
        // the listing, every later one comes live (and again to a watch resumed from it).
        let replay_seq = hub.last_seq();
        let replay = if replay_current { self.all_jobs().await? } else { Vec::new() };
        // On the store's clock, what changed since the position is asked of the store.
        let by_clock = hub.resumes_by_store_clock();
        let changed = if by_clock && after > 0 { self.changed_since(after).await? } else { Vec::new() };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<JobEvent, RegistryError>>(64);
        let registry = self.clone();
        tokio::spawn(async move {
            for state in replay {
                let event = JobEvent {
                    seq: replay_seq,
                    state: Arc::new(state),
                    previous: None,
                    replayed: true,
                    traceparent: None,
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            // What a resume on the store's clock sent, per job: older live events are dropped.
            let mut sent = SentStates::default();
            if !sent.send_changed(&tx, changed, after, replay_seq).await {
                return;
            }
            let mut last = after;
            for event in backlog {
                last = event.seq;
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let received = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    received = live.recv() => received,
                };
                if registry.hub().resets() != resets {
                    // The store's history between `last` and now is gone: the watcher re-lists.
                    let _ = tx.send(Err(RegistryError::WatchTooOld { requested: last, oldest: registry.hub().last_seq() })).await;
                    return;
                }
                let events = match received {
                    Ok(event) if by_clock => {
                        if sent.is_older(&event) {
                            continue;
                        }
                        vec![event]
                    }
                    Ok(event) if event.seq > last => vec![event],
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) if by_clock => {
                        // Ask the store again what changed since the last position sent (or
                        // since this watch began, from now).
                        let position = registry.hub().last_seq();
                        let since = if last == 0 { replay_seq } else { last };
                        match registry.changed_since(since).await {
                            Ok(changed) => {
                                if !sent.send_changed(&tx, changed, since, position).await {
                                    return;
                                }
                                last = since.max(position);
                                continue;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => match registry.hub().since(last) {
                        Ok(events) => events,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for event in events {
                    last = event.seq;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }
}

/// The job states a watch resumed on the store's clock has sent, so that a live event older than
/// one of them (published before the store was asked, received after) is not sent after it.
#[derive(Default)]
struct SentStates(HashMap<JobId, (u64, String)>);

impl SentStates {
    /// Sends `changed`, the states written since `from`, and remembers them; false when the
    /// watcher has gone. Until the last is sent they carry `from` (a watcher that leaves midway
    /// resumes there and is sent them again); the last carries `then` when later, the position
    /// the live events continue from.
    async fn send_changed(&mut self, tx: &tokio::sync::mpsc::Sender<Result<JobEvent, RegistryError>>, changed: Vec<JobState>, from: u64, then: u64) -> bool {
        let count = changed.len();
        for (n, state) in changed.into_iter().enumerate() {
            self.0.insert(state.job_id().clone(), (state.revision(), state.updated_at().to_owned()));
            let event = JobEvent {
                seq: if n + 1 == count { then.max(from) } else { from },
                state: Arc::new(state),
                previous: None,
                replayed: false,
                traceparent: None,
            };
            if tx.send(Ok(event)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Whether `event` is a state of its job at or before the one sent.
    fn is_older(&self, event: &JobEvent) -> bool {
        self.0.get(event.state.job_id()).is_some_and(|(revision, updated_at)| {
            let event_revision = event.state.revision();
            if *revision > 0 && event_revision > 0 {
                event_revision <= *revision
            } else {
                event.state.updated_at() <= updated_at.as_str()
            }
        })
    }
}

impl JobRegistry {
    /// The current state of every job whose state was written at or after `position` (a time on
    /// the store's clock, in microseconds), read a few at a time.
    async fn changed_since(&self, position: u64) -> Result<Vec<JobState>, RegistryError> {
        let since = std::time::UNIX_EPOCH + Duration::from_micros(position);
        let keys = self.inner.store.modified_since(JOBS_PREFIX, since).await?.unwrap_or_default();
        let jobs: Vec<JobId> = keys.iter().filter_map(|key| paths::job_state_key_id(key)).filter_map(|job| JobId::new(job).ok()).collect();
        let read: Vec<Result<Option<JobState>, RegistryError>> = futures::stream::iter(jobs).map(|job| async move { self.get(&job).await }).buffered(16).collect().await;
        let mut changed = Vec::with_capacity(read.len());
        for state in read {
            changed.extend(state?);
        }
        Ok(changed)
    }
}

/// How many of the store's revisions before its start a registry replays into its backlog, so a
/// watcher moving to a replica that has just started resumes from its position there.
pub(crate) const START_WINDOW_REVISIONS: u64 = 10_000;

/// Follows a store whose changes have one revision order (etcd) and publishes every job state
/// change at its revision, as the feed delivers them: in order, none skipped or repeated, so the
/// positions watchers get are the same on every replica. It starts [`START_WINDOW_REVISIONS`]
/// back, when the store still has them. A broken feed resumes after the last revision published;
/// one whose history is gone (compacted) resets the hub (watchers re-list) and starts again from
/// now.
pub(crate) async fn follow_revisions(registry: JobRegistry, token: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    // Where the window starts. A replica started while the store is down waits for it: following
    // from "now" instead would refuse every position from before it.
    let mut after: Option<u64> = loop {
        match registry.inner.store.current_revision().await {
            Ok(current) => break current.map(|current| current.saturating_sub(START_WINDOW_REVISIONS)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's revision yet; retrying");
                if !back_off(&token, &mut backoff).await {
                    return;
                }
            }
        }
    };
    backoff = FIRST_BACKOFF;
    loop {
        let Some(mut feed) = registry.inner.store.revision_feed(JOBS_PREFIX, after) else { return };
        loop {
            let item = tokio::select! {
                () = token.cancelled() => return,
                item = feed.next() => item,
            };
            match item {
                Some(Ok(RevisionFeedItem::Started { revision })) => {
                    registry.hub().start_at(revision);
                    after = Some(after.map_or(revision, |after| after.max(revision)));
                }
                Some(Ok(RevisionFeedItem::Change { key, value, revision })) => {
                    backoff = FIRST_BACKOFF;
                    after = Some(revision);
                    let Some(value) = value else { continue };
                    if paths::job_state_key_id(&key).is_none() {
                        continue;
                    }
                    match JobState::from_json(&value) {
                        Ok(state) => {
                            registry.hub().publish_at(state, revision);
                        }
                        Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable job state"),
                    }
                }
                Some(Err(StoreError::Compacted(compacted))) => {
                    tracing::warn!(after = after.unwrap_or(0), compacted, "the store's history is compacted past this registry's feed; watchers re-list");
                    registry.hub().reset();
                    after = None;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "store change feed failed; resuming after the last revision");
                    break;
                }
                None => break,
            }
        }
        if !back_off(&token, &mut backoff).await {
            return;
        }
    }
}

/// Follows the store's polled change feed (other processes' writes) and publishes what changed;
/// each poll it caught up with raises the hub's store-clock watermark. Every time the feed
/// (re)opens, its first poll reports every job, so nothing changed while it was down is missed.
pub(crate) async fn follow_store(registry: JobRegistry, token: CancellationToken) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(mut feed) = registry.inner.store.changes(JOBS_PREFIX) else { return };
        loop {
            let item = tokio::select! {
                () = token.cancelled() => return,
                item = feed.next() => item,
            };
            match item {
                Some(Ok(ChangeFeedItem::Changed(change))) => {
                    backoff = FIRST_BACKOFF;
                    let Some(value) = change.value else { continue };
                    if paths::job_state_key_id(&change.key).is_none() {
                        continue;
                    }
                    match JobState::from_json(&value.value) {
                        Ok(state) => {
                            registry.hub().publish(state);
                        }
                        Err(e) => tracing::warn!(key = %change.key, error = %e, "skipping an unreadable job state"),
                    }
                }
                Some(Ok(ChangeFeedItem::CaughtUp { before })) => registry.hub().caught_up(before),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "store change feed failed; reconnecting");
                    break;
                }
                None => break,
            }
        }
        if !back_off(&token, &mut backoff).await {
            return;
        }
    }
}

/// Waits `backoff` before a feed is opened again, and doubles it (up to 10 s); false when `token`
/// was cancelled meanwhile.
async fn back_off(token: &CancellationToken, backoff: &mut Duration) -> bool {
    tokio::select! {
        () = token.cancelled() => return false,
        () = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(10));
    true
}
