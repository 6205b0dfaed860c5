//! A linearizability checker for one job's registry history (Wing & Gong's search with Lowe's
//! memoisation of visited configurations), against the model of upstream's job state machine.
//! Operations on different jobs commute, so each job's history is checked on its own.

use std::collections::HashSet;
use std::time::Instant;

use modelops_core::job::JobStatus;

/// What a client asked of the registry about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `UpdateStatus` to this status.
    Update(JobStatus),
    /// `GetJob`.
    Read,
}

/// What the registry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Applied (or a terminal job set to its own status: a no-op); the job's status after it.
    Status(JobStatus),
    /// Refused: an illegal transition, or the job is terminal.
    Refused,
    /// No answer (the connection or the store went away): it may or may not have been applied,
    /// at any time after it was made.
    Unknown,
}

/// One operation of a history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operation {
    pub(crate) call: Call,
    pub(crate) answer: Answer,
    pub(crate) invoked: Instant,
    /// `None` for [`Answer::Unknown`]: it may take effect at any later time.
    pub(crate) returned: Option<Instant>,
}

/// The model: what `call` does to a job in `status`, and what it answers.
fn step(status: JobStatus, call: Call) -> (JobStatus, Answer) {
    match call {
        Call::Read => (status, Answer::Status(status)),
        Call::Update(to) if status.is_terminal() && to == status => (status, Answer::Status(status)),
        Call::Update(to) if !status.is_terminal() && status.can_transition_to(to) => (to, Answer::Status(to)),
        Call::Update(_) => (status, Answer::Refused),
    }
}

/// Whether `history`, starting from `initial`, has a linearization: an order of its operations
/// that respects real time (one that returned before another was invoked comes first) and in
/// which the model gives every answered operation its answer. Operations without an answer may
/// be left out (not applied) or placed anywhere after their invocation.
pub(crate) fn linearizable(initial: JobStatus, history: &[Operation]) -> bool {
    assert!(history.len() <= 64, "the search tracks up to 64 operations");
    let all: u64 = if history.len() == 64 { u64::MAX } else { (1u64 << history.len()) - 1 };
    let mut seen = HashSet::new();
    search(history, all, initial, &mut seen)
}

fn search(history: &[Operation], remaining: u64, status: JobStatus, seen: &mut HashSet<(u64, JobStatus)>) -> bool {
    let answered_left = (0..history.len()).any(|i| remaining & (1 << i) != 0 && history[i].answer != Answer::Unknown);
    if !answered_left {
        return true; // the unanswered rest may all be left unapplied
    }
    if !seen.insert((remaining, status)) {
        return false;
    }
    // An operation can go next if none still remaining returned before it was invoked.
    let earliest_return = (0..history.len())
        .filter(|i| remaining & (1 << i) != 0)
        .filter_map(|i| history[i].returned)
        .min();
    for i in 0..history.len() {
        if remaining & (1 << i) == 0 {
            continue;
        }
        let op = history[i];
        if earliest_return.is_some_and(|r| r < op.invoked) {
            continue;
        }
        let (next, answer) = step(status, op.call);
        let consistent = op.answer == Answer::Unknown || op.answer == answer;
        if consistent && search(history, remaining & !(1 << i), next, seen) {
            return true;
        }
        // An unanswered operation may also never have been applied.
        if op.answer == Answer::Unknown && search(history, remaining & !(1 << i), status, seen) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use JobStatus::*;

    fn at(base: Instant, from: u64, to: Option<u64>, call: Call, answer: Answer) -> Operation {
        Operation {
            call,
            answer,
            invoked: base + Duration::from_millis(from),
            returned: to.map(|t| base + Duration::from_millis(t)),
        }
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        let t = Instant::now();
        // Two clients race pending → submitting; both overlap; one wins, the other is refused.
        let history = [
            at(t, 0, Some(10), Call::Update(Submitting), Answer::Status(Submitting)),
            at(t, 1, Some(9), Call::Update(Submitting), Answer::Refused),
            at(t, 12, Some(13), Call::Read, Answer::Status(Submitting)),
        ];
        assert!(linearizable(Pending, &history));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let t = Instant::now();
        let history = [
            at(t, 0, Some(5), Call::Update(Submitting), Answer::Status(Submitting)),
            at(t, 6, Some(7), Call::Read, Answer::Status(Pending)),
        ];
        assert!(!linearizable(Pending, &history));
    }

    #[test]
    fn two_winners_of_one_transition_are_caught() {
        let t = Instant::now();
        let history = [
            at(t, 0, Some(10), Call::Update(Submitting), Answer::Status(Submitting)),
            at(t, 1, Some(9), Call::Update(Submitting), Answer::Status(Submitting)),
        ];
        assert!(!linearizable(Pending, &history));
    }

    #[test]
    fn terminal_states_answer_as_upstream_and_unanswered_calls_are_free() {
        let t = Instant::now();
        let history = [
            at(t, 0, Some(1), Call::Update(Cancelled), Answer::Status(Cancelled)),
            at(t, 2, Some(3), Call::Update(Cancelled), Answer::Status(Cancelled)),
            at(t, 4, Some(5), Call::Update(Running), Answer::Refused),
            at(t, 6, None, Call::Update(Failed), Answer::Unknown),
            at(t, 7, Some(8), Call::Read, Answer::Status(Cancelled)),
        ];
        assert!(linearizable(Pending, &history));
        // An unanswered write that must have been applied to explain a read is placed.
        let history = [
            at(t, 0, None, Call::Update(Submitting), Answer::Unknown),
            at(t, 5, Some(6), Call::Read, Answer::Status(Submitting)),
        ];
        assert!(linearizable(Pending, &history));
        let history = [at(t, 0, Some(1), Call::Read, Answer::Status(Running))];
        assert!(!linearizable(Pending, &history));
    }
}
