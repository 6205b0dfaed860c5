//! The change hub behind `WatchJobs`: every job state this registry writes, or sees written by
//! another process through the store's change feed, becomes a [`JobEvent`] with a sequence
//! number. Watchers get live events from a broadcast channel and can resume from a recent
//! sequence number out of a bounded backlog; one too old for the backlog is refused, and the
//! client re-lists (like a Kubernetes watch).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use modelops_core::job::{INDEX_STATE_KEY, JobId, JobState, JobStatus};
use tokio::sync::broadcast;

use crate::error::RegistryError;

pub use modelops_registry_client::JobEvent;

#[derive(Debug, Default)]
struct HubState {
    next_seq: u64,
    backlog: VecDeque<JobEvent>,
    /// What was last published per job: (revision, updated_at, status, index state).
    known: HashMap<JobId, (u64, String, JobStatus, Option<String>)>,
}

/// Sequences and fans out job changes.
///
/// A sequence number is this hub's epoch (random, chosen when the process starts) in its high
/// bits and a counter in its low [`COUNTER_BITS`]: a position handed out by another replica or by
/// this server before a restart is recognised as not this hub's, and refused with OUT_OF_RANGE
/// (re-list with `replay_current`), instead of being read as a position in this hub's counter,
/// which would skip or repeat events.
#[derive(Debug)]
pub struct ChangeHub {
    state: Mutex<HubState>,
    sender: broadcast::Sender<JobEvent>,
    retention: usize,
    /// This hub's epoch, already shifted into the high bits.
    epoch: u64,
}

/// Bits of a sequence number that count events (a trillion events per process).
pub const COUNTER_BITS: u32 = 40;

impl ChangeHub {
    /// A hub keeping the last `retention` events for resuming watchers.
    pub fn new(retention: usize) -> Self {
        let (sender, _) = broadcast::channel(retention.max(16));
        use rand::Rng as _;
        // 23 bits: the sequence stays below 2^63, exact in any JSON reader's int64.
        let epoch = u64::from(rand::rng().random_range(1..(1u32 << 23))) << COUNTER_BITS;
        Self {
            state: Mutex::new(HubState {
                next_seq: epoch + 1,
                ..HubState::default()
            }),
            sender,
            retention: retention.max(1),
            epoch,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a job's new state. A state already published (same revision and timestamps)
    /// or older than the last one published (a late echo from a change feed) is dropped.
    /// Returns the event when one was published.
    pub fn publish(&self, state: JobState) -> Option<JobEvent> {
        let mut hub = self.lock();
        let rev = state.revision();
        let fingerprint = (
            rev,
            state.updated_at().to_owned(),
            state.status(),
            state.get_str(INDEX_STATE_KEY).map(str::to_owned),
        );
        let previous = match hub.known.get(state.job_id()) {
            Some(known) if *known == fingerprint => return None,
            Some(known) if rev > 0 && rev < known.0 => return None,
            Some(known) => Some(known.2),
            None => None,
        };
        hub.known.insert(state.job_id().clone(), fingerprint);
        let event = JobEvent {
            seq: hub.next_seq,
            state: Arc::new(state),
            previous,
            replayed: false,
            traceparent: modelops_runtime::telemetry::current_traceparent(),
        };
        hub.next_seq += 1;
        hub.backlog.push_back(event.clone());
        while hub.backlog.len() > self.retention {
            hub.backlog.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(event.clone());
        Some(event)
    }

    /// The sequence number of the last event (the epoch alone before any).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Whether `seq` is a position of this hub (its epoch, not past its last event).
    pub fn owns(&self, seq: u64) -> bool {
        seq >> COUNTER_BITS == self.epoch >> COUNTER_BITS && seq <= self.last_seq()
    }

    /// Subscribes to live events, first returning the retained events after `after` (none for
    /// 0, which means "from now"). Both happen under one lock, so no event falls in between.
    pub fn subscribe(&self, after: u64) -> Result<(Vec<JobEvent>, broadcast::Receiver<JobEvent>), RegistryError> {
        let hub = self.lock();
        let receiver = self.sender.subscribe();
        Ok((self.since_locked(&hub, after)?, receiver))
    }

    /// The retained events after `after`.
    pub fn since(&self, after: u64) -> Result<Vec<JobEvent>, RegistryError> {
        self.since_locked(&self.lock(), after)
    }

    fn since_locked(&self, hub: &HubState, after: u64) -> Result<Vec<JobEvent>, RegistryError> {
        if after == 0 {
            return Ok(Vec::new());
        }
        if after >> COUNTER_BITS != self.epoch >> COUNTER_BITS || after >= hub.next_seq {
            return Err(RegistryError::WatchElsewhere { requested: after });
        }
        let oldest = hub.backlog.front().map_or(hub.next_seq, |e| e.seq);
        if after + 1 < oldest {
            return Err(RegistryError::WatchTooOld { requested: after, oldest });
        }
        Ok(hub.backlog.iter().filter(|e| e.seq > after).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelops_core::pyjson::PyObject;

    fn state(job: &str, rev: u64, status: JobStatus) -> JobState {
        let mut state = JobState::registered(JobId::new(job).unwrap(), "2026-01-01T00:00:00+00:00", None, None, PyObject::new());
        state.set_status(status);
        state.set(modelops_core::job::REVISION_KEY, rev.into());
        state.set("updated_at", format!("t{rev}").into());
        state
    }

    #[test]
    fn duplicates_and_late_echoes_are_dropped() {
        let hub = ChangeHub::new(10);
        let first = hub.publish(state("a", 1, JobStatus::Pending)).unwrap().seq;
        assert_eq!(first, hub.epoch + 1);
        assert!(hub.publish(state("a", 1, JobStatus::Pending)).is_none(), "same state twice");
        let next = hub.publish(state("a", 3, JobStatus::Running)).unwrap();
        assert_eq!((next.seq, next.previous), (first + 1, Some(JobStatus::Pending)));
        assert!(hub.publish(state("a", 2, JobStatus::Submitting)).is_none(), "older than what was published");
        assert_eq!(hub.last_seq(), first + 1);
    }

    #[test]
    fn resuming_uses_the_backlog_until_it_is_too_old() {
        let hub = ChangeHub::new(3);
        for rev in 1..=5 {
            hub.publish(state("a", rev, JobStatus::Running));
        }
        let at = |n: u64| hub.epoch + n;
        let (backlog, _rx) = hub.subscribe(at(3)).unwrap();
        assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [at(4), at(5)]);
        assert!(hub.subscribe(at(2)).unwrap().0.len() == 3, "seq 3 is still retained");
        assert!(matches!(hub.subscribe(at(1)), Err(RegistryError::WatchTooOld { requested, oldest }) if requested == at(1) && oldest == at(3)));
        assert!(hub.subscribe(0).unwrap().0.is_empty(), "0 means from now");
    }

    #[test]
    fn positions_of_another_hub_or_past_the_end_are_refused_not_misread() {
        let (a, b) = (ChangeHub::new(8), ChangeHub::new(8));
        assert_ne!(a.epoch, b.epoch, "two processes (23 random bits each)");
        for rev in 1..=3 {
            a.publish(state("a", rev, JobStatus::Running));
            b.publish(state("b", rev, JobStatus::Running));
        }
        // A watcher of replica A resuming on replica B is told to re-list, not handed B's events
        // after a number that means nothing there.
        let from_a = a.last_seq() - 1;
        assert!(a.owns(from_a) && !b.owns(from_a));
        assert!(matches!(b.subscribe(from_a), Err(RegistryError::WatchElsewhere { .. })));
        assert_eq!(tonic::Status::from(b.since(from_a).unwrap_err()).code(), tonic::Code::OutOfRange);
        // Nor is a position this hub never reached (from before a restart in the same epoch).
        assert!(matches!(a.subscribe(a.last_seq() + 1), Err(RegistryError::WatchElsewhere { .. })));
        assert_eq!(a.subscribe(from_a).unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn live_events_reach_subscribers() {
        let hub = ChangeHub::new(8);
        let (_, mut rx) = hub.subscribe(0).unwrap();
        hub.publish(state("b", 1, JobStatus::Pending));
        let event = rx.recv().await.unwrap();
        assert_eq!(event.state.job_id().as_str(), "b");
    }
}
