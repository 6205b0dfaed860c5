//! `JobState::from_json` (`state.json`, read from every registry store): a state that reads is
//! written back as bytes that read as the same state, and its accessors answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelops_core::job::JobState;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = JobState::from_json(data) else { return };
    let written = state.to_json();
    let reread = JobState::from_json(written.as_bytes()).unwrap_or_else(|e| panic!("a written state does not read back ({e}): {written}"));
    assert_eq!(reread.to_json(), written);
    assert_eq!((reread.job_id(), reread.status()), (state.job_id(), state.status()));
    let _ = (state.tasks_total(), state.tasks_completed(), state.progress_percent(), state.metadata());
    for next in state.status().allowed_next() {
        let mut moved = state.clone();
        moved.set_status(*next);
        assert_eq!(JobState::from_json(moved.to_json().as_bytes()).map(|s| s.status()), Ok(*next));
    }
});
