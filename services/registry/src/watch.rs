//! The change hub behind `WatchJobs`: every job state this registry writes, or sees written by
//! another process through the store's change feed, becomes a [`JobEvent`] with a position that
//! comes from the store, so a watcher can resume on any replica and after restarts: the store's
//! revision on etcd and on the embedded store, a time on the store's clock on object stores (see
//! [`ChangeHub::at_store_clock`]). Watchers get live events from a broadcast channel and resume
//! from a recent revision out of a bounded backlog; one too old for the backlog, or one this hub
//! cannot place, is refused, and the client re-lists (like a Kubernetes watch).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use modelops_core::job::{INDEX_STATE_KEY, JobId, JobState, JobStatus};
use tokio::sync::broadcast;

use crate::error::RegistryError;

pub use modelops_registry_client::JobEvent;

#[derive(Debug, Default)]
struct HubState {
    /// The position the next event gets at least (the last event's position + 1).
    next_seq: u64,
    backlog: VecDeque<JobEvent>,
    /// What was last published per job: (revision, updated_at, status, index state).
    known: HashMap<JobId, (u64, String, JobStatus, Option<String>)>,
    /// Positions from this one on can be resumed: every event after it is in the backlog or
    /// still to come. Older events were trimmed from the backlog, or came before the hub began.
    servable_from: u64,
    /// For store positions: whether the store's feed runs (before, no position means anything).
    started: bool,
    /// How many times the hub lost the store's history (etcd compacted it while the feed was
    /// down): a watch begun before a reset ends with OUT_OF_RANGE.
    resets: u64,
    /// For store positions: the trace of each of this process's writes still to come back from
    /// the store's feed, by job (the state's revision, the writer's `traceparent`).
    traces: HashMap<JobId, (u64, String)>,
}

/// How many writes' traces a hub at store positions holds for the feed to pick up.
const PENDING_TRACES: usize = 4096;

/// Where a hub's positions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Positions {
    /// This process's own counter under a random epoch (already shifted into the high bits):
    /// good on this replica until it restarts.
    Epoch(u64),
    /// The store's revisions (etcd's, the embedded store's): the same on every replica of the
    /// registry and after restarts.
    Store,
    /// Microseconds on the store's clock (object stores): see [`ChangeHub::at_store_clock`].
    StoreClock,
}

/// How far a store-clock position lags the poll that vouches for it: clock skew between this
/// process and the store, the store's one-second `Last-Modified`, and writes in flight.
pub const STORE_CLOCK_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The earliest store-clock position taken as one (2020-01-01): smaller numbers are another
/// kind of position (an etcd revision, an older server's counter).
const EARLIEST_CLOCK_POSITION: u64 = 1_577_836_800_000_000;

/// `at` in microseconds since the Unix epoch (0 before it).
pub(crate) fn micros(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// Sequences and fans out job changes.
///
/// On a store whose changes have one global revision order (etcd, embedded), a position is the store's
/// revision of the change: a watcher can resume on any replica, and a replica that has not yet
/// seen the position sends only what comes after it. Events then come only from the store's
/// ordered feed ([`ChangeHub::publish_at`]), never from this process's own writes, so every
/// replica sends them in the same order.
///
/// On object stores, a position is a time on the store's clock ([`ChangeHub::at_store_clock`]).
///
/// On the in-memory store (tests), a position is this hub's epoch (random, chosen when the process starts) in
/// its high bits and a counter in its low [`COUNTER_BITS`]: a position handed out by another
/// replica or by this server before a restart is recognised as not this hub's, and refused with
/// OUT_OF_RANGE (re-list with `replay_current`), instead of being read as a position in this
/// hub's counter, which would skip or repeat events.
#[derive(Debug)]
pub struct ChangeHub {
    state: Mutex<HubState>,
    sender: broadcast::Sender<JobEvent>,
    retention: usize,
    positions: Positions,
    /// Whether the store's feed runs (store positions), for watchers that wait for it.
    running: tokio::sync::watch::Sender<bool>,
}

/// Bits of a sequence number that count events (a trillion events per process).
pub const COUNTER_BITS: u32 = 40;

impl ChangeHub {
    /// A hub numbering its own events, keeping the last `retention` for resuming watchers.
    pub fn new(retention: usize) -> Self {
        use rand::Rng as _;
        // 23 bits: the sequence stays below 2^63, exact in any JSON reader's int64.
        let epoch = u64::from(rand::rng().random_range(1..(1u32 << 23))) << COUNTER_BITS;
        Self::with_positions(retention, Positions::Epoch(epoch))
    }

    /// A hub whose positions are the store's revisions, fed by [`ChangeHub::start_at`] and
    /// [`ChangeHub::publish_at`] from the store's ordered feed.
    pub fn at_store_revisions(retention: usize) -> Self {
        Self::with_positions(retention, Positions::Store)
    }

    /// A hub for a store without a revision order but with modification times (object stores,
    /// whose `Last-Modified` every replica reads alike). A position is a watermark in
    /// microseconds: every change written before it, by the store's clock, has reached the
    /// watcher (or its listing). The store's polled feed raises it ([`ChangeHub::caught_up`]);
    /// events carry the current watermark, so positions are not unique. A watcher resumes on
    /// any replica, or after a restart, with what [`VersionedStore::modified_since`] its
    /// position says, then live events: positions are never too old here, and one that is not
    /// a time (before 2020, or over a day ahead) is refused.
    ///
    /// [`VersionedStore::modified_since`]: crate::store::VersionedStore::modified_since
    pub fn at_store_clock(retention: usize) -> Self {
        Self::with_positions(retention, Positions::StoreClock)
    }

    fn with_positions(retention: usize, positions: Positions) -> Self {
        let (sender, _) = broadcast::channel(retention.max(16));
        let base = match positions {
            Positions::Epoch(epoch) => epoch,
            Positions::Store => 0,
            // Whatever was written before this process began, a watcher starting here has in
            // its listing or does not need ("from now").
            Positions::StoreClock => micros(std::time::SystemTime::now() - STORE_CLOCK_MARGIN),
        };
        Self {
            state: Mutex::new(HubState {
                next_seq: base + 1,
                servable_from: base,
                ..HubState::default()
            }),
            sender,
            retention: retention.max(1),
            positions,
            running: tokio::sync::watch::Sender::new(positions != Positions::Store),
        }
    }

    /// Waits until positions mean something (a hub at store positions whose feed has started),
    /// at most `within`; whether they do.
    pub async fn until_running(&self, within: std::time::Duration) -> bool {
        let mut running = self.running.subscribe();
        matches!(tokio::time::timeout(within, running.wait_for(|running| *running)).await, Ok(Ok(_)))
    }

    /// Whether positions are the store's revisions (the same on every replica).
    pub fn at_store_positions(&self) -> bool {
        self.positions == Positions::Store
    }

    /// Whether positions are times on the store's clock: a watch resumes by asking the store
    /// what changed since (see [`ChangeHub::at_store_clock`]).
    pub fn resumes_by_store_clock(&self) -> bool {
        self.positions == Positions::StoreClock
    }

    /// For a hub on the store's clock: the store's polled feed has delivered every change written
    /// before `before`; positions move up to it, less [`STORE_CLOCK_MARGIN`].
    pub fn caught_up(&self, before: std::time::SystemTime) {
        if self.positions != Positions::StoreClock {
            return;
        }
        let watermark = micros(before.checked_sub(STORE_CLOCK_MARGIN).unwrap_or(std::time::UNIX_EPOCH));
        let mut hub = self.lock();
        hub.next_seq = hub.next_seq.max(watermark + 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes a job's new state written or read by this process (a hub at store positions
    /// ignores it: the store's feed brings it, in order). A state already published (same
    /// revision and timestamps) or older than the last one published (a late echo from a change
    /// feed) is dropped. Returns the event when one was published.
    pub fn publish(&self, state: JobState) -> Option<JobEvent> {
        match self.positions {
            Positions::Store => None,
            Positions::Epoch(_) => {
                let mut hub = self.lock();
                let seq = hub.next_seq;
                self.publish_locked(&mut hub, state, seq)
            }
            Positions::StoreClock => {
                let mut hub = self.lock();
                let watermark = hub.next_seq - 1;
                self.publish_locked(&mut hub, state, watermark)
            }
        }
    }

    /// Notes that this process is about to write `state` (a hub at store positions): its event
    /// comes from the store's feed, outside the writer's trace, so the trace is kept for it and
    /// work the change starts joins the trace that made it. Noted before the write, since the
    /// feed may deliver it before the writer hears back.
    pub fn will_write(&self, state: &JobState) {
        if self.positions != Positions::Store {
            return;
        }
        if let Some(traceparent) = modelops_runtime::telemetry::current_traceparent() {
            let mut hub = self.lock();
            if hub.traces.len() >= PENDING_TRACES {
                hub.traces.clear();
            }
            hub.traces.insert(state.job_id().clone(), (state.revision(), traceparent));
        }
    }

    /// Publishes a job's state as the store's ordered feed delivered it, at the store's
    /// `revision`; one at or before the last published revision (delivered twice) is dropped.
    pub fn publish_at(&self, state: JobState, revision: u64) -> Option<JobEvent> {
        let mut hub = self.lock();
        if self.positions != Positions::Store || !hub.started || revision < hub.next_seq {
            return None;
        }
        self.publish_locked(&mut hub, state, revision)
    }

    /// The store's feed runs from just after `revision` (a hub at store positions): positions
    /// from it on can be resumed.
    pub fn start_at(&self, revision: u64) {
        let mut hub = self.lock();
        if self.positions == Positions::Store && !hub.started {
            hub.started = true;
            hub.next_seq = hub.next_seq.max(revision + 1);
            hub.servable_from = hub.servable_from.max(revision);
            self.running.send_replace(true);
        }
    }

    /// The store lost the history the feed needed (compacted): no earlier position can be
    /// resumed, and watches begun before end with OUT_OF_RANGE; positions mean something again
    /// once the feed restarts ([`ChangeHub::start_at`]).
    pub fn reset(&self) {
        let mut hub = self.lock();
        hub.backlog.clear();
        hub.started = false;
        hub.resets += 1;
        hub.servable_from = hub.next_seq;
        self.running.send_replace(false);
    }

    /// How many times the hub was [reset](ChangeHub::reset).
    pub fn resets(&self) -> u64 {
        self.lock().resets
    }

    fn publish_locked(&self, hub: &mut HubState, state: JobState, seq: u64) -> Option<JobEvent> {
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
        // This process's own write, noted before it was made, or the publisher's trace.
        let traceparent = match hub.traces.get(state.job_id()) {
            Some((revision, _)) if *revision <= rev => hub.traces.remove(state.job_id()).filter(|(revision, _)| *revision == rev).map(|(_, traceparent)| traceparent),
            _ => None,
        }
        .or_else(modelops_runtime::telemetry::current_traceparent);
        let event = JobEvent {
            seq,
            state: Arc::new(state),
            previous,
            replayed: false,
            traceparent,
        };
        hub.next_seq = seq + 1;
        hub.backlog.push_back(event.clone());
        while hub.backlog.len() > self.retention {
            if let Some(trimmed) = hub.backlog.pop_front() {
                hub.servable_from = hub.servable_from.max(trimmed.seq);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(event.clone());
        Some(event)
    }

    /// The position of the last event (the epoch alone, or the revision the store's feed started
    /// from, before any).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
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
        match self.positions {
            Positions::Epoch(epoch) => {
                if after >> COUNTER_BITS != epoch >> COUNTER_BITS || after >= hub.next_seq {
                    return Err(RegistryError::WatchElsewhere { requested: after });
                }
            }
            Positions::Store => {
                if !hub.started {
                    return Err(RegistryError::WatchElsewhere { requested: after });
                }
                if after >= hub.next_seq {
                    // Another replica has seen further: what comes after it arrives here too.
                    return Ok(Vec::new());
                }
            }
            Positions::StoreClock => {
                // The store says what changed since: the watch asks it, not the backlog.
                let latest = micros(std::time::SystemTime::now() + std::time::Duration::from_secs(86_400));
                if !(EARLIEST_CLOCK_POSITION..=latest).contains(&after) {
                    return Err(RegistryError::WatchElsewhere { requested: after });
                }
                return Ok(Vec::new());
            }
        }
        if after < hub.servable_from {
            let oldest = hub.backlog.front().map_or(hub.next_seq, |e| e.seq);
            return Err(RegistryError::WatchTooOld { requested: after, oldest });
        }
        Ok(hub.backlog.iter().filter(|e| e.seq > after).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelops_core::pyjson::PyObject;

    fn epoch(hub: &ChangeHub) -> u64 {
        match hub.positions {
            Positions::Epoch(epoch) => epoch,
            Positions::Store | Positions::StoreClock => 0,
        }
    }

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
        assert_eq!(first, epoch(&hub) + 1);
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
        let at = |n: u64| epoch(&hub) + n;
        let (backlog, _rx) = hub.subscribe(at(3)).unwrap();
        assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [at(4), at(5)]);
        assert!(hub.subscribe(at(2)).unwrap().0.len() == 3, "seq 3 is still retained");
        assert!(matches!(hub.subscribe(at(1)), Err(RegistryError::WatchTooOld { requested, oldest }) if requested == at(1) && oldest == at(3)));
        assert!(hub.subscribe(0).unwrap().0.is_empty(), "0 means from now");
    }

    #[test]
    fn positions_of_another_hub_or_past_the_end_are_refused_not_misread() {
        let (a, b) = (ChangeHub::new(8), ChangeHub::new(8));
        assert_ne!(epoch(&a), epoch(&b), "two processes (23 random bits each)");
        for rev in 1..=3 {
            a.publish(state("a", rev, JobStatus::Running));
            b.publish(state("b", rev, JobStatus::Running));
        }
        // A watcher of replica A resuming on replica B is told to re-list, not handed B's events
        // after a number that means nothing there.
        let from_a = a.last_seq() - 1;
        assert!(a.since(from_a).is_ok() && b.since(from_a).is_err());
        assert!(matches!(b.subscribe(from_a), Err(RegistryError::WatchElsewhere { .. })));
        assert_eq!(tonic::Status::from(b.since(from_a).unwrap_err()).code(), tonic::Code::OutOfRange);
        // Nor is a position this hub never reached (from before a restart in the same epoch).
        assert!(matches!(a.subscribe(a.last_seq() + 1), Err(RegistryError::WatchElsewhere { .. })));
        assert_eq!(a.subscribe(from_a).unwrap().0.len(), 1);
    }

    #[test]
    fn store_positions_resume_on_a_replica_that_lags_and_refuse_what_came_before_its_feed() {
        // Two replicas fed by the same store feed; B has seen less of it so far.
        let (a, b) = (ChangeHub::at_store_revisions(16), ChangeHub::at_store_revisions(16));
        assert!(matches!(b.since(5), Err(RegistryError::WatchElsewhere { .. })), "no position means anything before the feed runs");
        a.start_at(100);
        b.start_at(100);
        assert!(a.publish(state("a", 1, JobStatus::Pending)).is_none(), "this process's own writes come through the feed");
        for (rev, status) in [(101, JobStatus::Pending), (103, JobStatus::Submitting), (104, JobStatus::Scheduled)] {
            assert_eq!(a.publish_at(state("a", rev, status), rev).unwrap().seq, rev, "the position is the store's revision");
        }
        assert!(a.publish_at(state("a", 103, JobStatus::Submitting), 103).is_none(), "delivered twice");
        b.publish_at(state("a", 101, JobStatus::Pending), 101);
        // A watcher of A at 103 resumes on B, which has not seen 103 yet: nothing is refused, and
        // B sends what comes after 103 once it has it.
        let (backlog, mut live) = b.subscribe(103).unwrap();
        assert!(backlog.is_empty());
        b.publish_at(state("a", 103, JobStatus::Submitting), 103);
        b.publish_at(state("a", 104, JobStatus::Scheduled), 104);
        let seen: Vec<u64> = std::iter::from_fn(|| live.try_recv().ok()).map(|e| e.seq).collect();
        assert_eq!(seen, [103, 104], "the watch skips what it already has (<= 103) itself");
        // Resumed from 101 on either replica: the same events, at the same positions.
        let on_a: Vec<u64> = a.since(101).unwrap().iter().map(|e| e.seq).collect();
        let on_b: Vec<u64> = b.since(101).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!((on_a.clone(), on_b), (vec![103, 104], vec![103, 104]));
        // Before the feed started, nothing can be told.
        assert!(matches!(a.since(99), Err(RegistryError::WatchTooOld { .. })));
        assert!(a.since(100).is_ok());
    }

    #[test]
    fn a_hub_that_lost_the_store_history_refuses_older_positions_and_counts_the_reset() {
        let hub = ChangeHub::at_store_revisions(16);
        hub.start_at(10);
        hub.publish_at(state("a", 1, JobStatus::Pending), 11);
        hub.reset();
        assert_eq!(hub.resets(), 1);
        assert!(hub.since(11).is_err(), "not running again yet");
        hub.start_at(500);
        assert!(matches!(hub.since(11), Err(RegistryError::WatchTooOld { .. })), "the history between 11 and 500 is gone");
        assert!(hub.since(500).unwrap().is_empty());
        assert_eq!(hub.publish_at(state("a", 2, JobStatus::Submitting), 501).unwrap().seq, 501);
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
