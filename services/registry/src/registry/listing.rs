//! Listing jobs: every readable state, pages newest first with a page token, counts by
//! status.

use chrono::Utc;
use modelops_core::job::{JobState, JobStatus, StateHead};
use modelops_core::page_token::PageToken;
use modelops_core::time::parse_iso;

use super::{DEFAULT_PAGE_SIZE, JOBS_PREFIX, JobRegistry, MAX_PAGE_SIZE, decode};
use crate::error::RegistryError;

pub use modelops_registry_client::{JobPage, ListQuery};

impl JobRegistry {
    /// Every readable job state. Unreadable ones are skipped with a warning, as upstream does.
    pub async fn all_jobs(&self) -> Result<Vec<JobState>, RegistryError> {
        let entries = self.inner.store.scan(JOBS_PREFIX).await?;
        let mut jobs = Vec::with_capacity(entries.len());
        for (key, versioned) in entries {
            if !key.ends_with("/state.json") {
                continue;
            }
            match decode(&key, &versioned) {
                Ok(state) => jobs.push(state),
                Err(e) => tracing::warn!(%key, error = %e, "skipping unreadable job state"),
            }
        }
        Ok(jobs)
    }

    /// Lists jobs newest first (by the `created_at` string, as upstream sorts), filtered, one page
    /// at a time. Every state is read for its head only ([`StateHead`]: id, status, creation
    /// time); only the page's states are read whole, so a page costs about the same with tens of
    /// thousands of jobs.
    pub async fn list(&self, query: ListQuery) -> Result<JobPage, RegistryError> {
        let limit = match query.limit {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = query
            .page_token
            .as_deref()
            .map(PageToken::decode)
            .transpose()
            .map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        // Before the listing: a change it misses is after this position.
        let watch_revision = self.hub().last_seq();
        let entries = self.inner.store.scan(JOBS_PREFIX).await?;
        let kept = |status: JobStatus, created_at: &str| {
            (query.statuses.is_empty() || query.statuses.contains(&status))
                && match query.since {
                    Some(since) => parse_iso(created_at).is_some_and(|created| created >= since),
                    None => true,
                }
        };
        // Each kept state's head, and the state itself when the head could only be read with it.
        let mut listed: Vec<(StateHead, usize, Option<JobState>)> = Vec::new();
        for (index, (key, versioned)) in entries.iter().enumerate() {
            if !key.ends_with("/state.json") {
                continue;
            }
            let (head, whole) = match StateHead::read(&versioned.value) {
                Some(head) => (head, None),
                None => match decode(key, versioned) {
                    Ok(state) => (StateHead::of(&state), Some(state)),
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "skipping unreadable job state");
                        continue;
                    }
                },
            };
            if kept(head.status, &head.created_at) {
                listed.push((head, index, whole));
            }
        }
        listed.sort_by(|(a, _, _), (b, _, _)| b.created_at.cmp(&a.created_at).then_with(|| a.job_id.cmp(&b.job_id)));
        if let Some(PageToken { created_at, job_id }) = after {
            // Strictly after the token in (created_at descending, job_id ascending) order.
            listed.retain(|(head, _, _)| head.created_at < created_at || (head.created_at == created_at && head.job_id > job_id));
        }
        let more = listed.len() > limit;
        listed.truncate(limit);
        let next_page_token = more.then(|| listed.last().map(|(head, _, _)| PageToken::encode(&head.created_at, &head.job_id))).flatten();
        let jobs = listed
            .into_iter()
            .filter_map(|(_, index, whole)| {
                let (key, versioned) = &entries[index];
                whole.or_else(|| decode(key, versioned).inspect_err(|e| tracing::warn!(%key, error = %e, "skipping unreadable job state")).ok())
            })
            .collect();
        Ok(JobPage {
            jobs,
            next_page_token,
            watch_revision,
        })
    }

    /// Counts jobs in every status.
    pub async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, RegistryError> {
        let jobs = self.all_jobs().await?;
        let counts: Vec<(JobStatus, u64)> = JobStatus::ALL
            .into_iter()
            .map(|status| (status, jobs.iter().filter(|j| j.status() == status).count() as u64))
            .collect();
        self.inner.metrics.set_job_counts(&counts);
        Ok(counts)
    }

    /// Jobs not yet in a terminal state.
    pub async fn active_jobs(&self) -> Result<Vec<JobState>, RegistryError> {
        let statuses = JobStatus::ALL.into_iter().filter(|s| s.is_active()).collect();
        Ok(self
            .list(ListQuery {
                statuses,
                limit: MAX_PAGE_SIZE,
                ..ListQuery::default()
            })
            .await?
            .jobs)
    }

    /// Jobs created in the last `hours` hours.
    pub async fn recent_jobs(&self, hours: f64) -> Result<Vec<JobState>, RegistryError> {
        let since = Utc::now() - chrono::Duration::milliseconds((hours * 3_600_000.0) as i64);
        Ok(self
            .list(ListQuery {
                since: Some(since),
                limit: MAX_PAGE_SIZE,
                ..ListQuery::default()
            })
            .await?
            .jobs)
    }
}
