//! The registry in this process as a [`RegistryClient`]: what the indexer, attribution and the
//! dashboard use inside one `mops serve`, through the same trait as [`GrpcRegistry`] in a split
//! deployment. Errors are the statuses the gRPC service would answer.
//!
//! [`GrpcRegistry`]: modelops_registry_client::GrpcRegistry

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use modelops_core::job::{IndexState, JobId, JobState};
use modelops_registry_client::{Claim, JobEvents, JobPage, ListQuery, RegistryClient, SharedRegistry, SpecStream, WatchFrom};
use tonic::Status;

use crate::registry::JobRegistry;

impl From<JobRegistry> for SharedRegistry {
    fn from(registry: JobRegistry) -> Self {
        Arc::new(registry)
    }
}

#[async_trait::async_trait]
impl RegistryClient for JobRegistry {
    async fn get_job(&self, job: &JobId) -> Result<Option<JobState>, Status> {
        Ok(self.get(job).await?)
    }

    async fn list_jobs(&self, query: ListQuery) -> Result<JobPage, Status> {
        Ok(self.list(query).await?)
    }

    async fn read_spec(&self, job: &JobId) -> Result<SpecStream, Status> {
        let (job_type, chunks) = JobRegistry::read_spec(self, job).await?;
        Ok(SpecStream {
            job_type,
            chunks: chunks.map(|chunk| chunk.map_err(Status::from)).boxed(),
        })
    }

    async fn claim_job(&self, job: &JobId, purpose: &str, holder: &str, ttl: Duration) -> Result<Claim, Status> {
        Ok(self.claim(job, purpose, holder, ttl).await?)
    }

    async fn release_claim(&self, job: &JobId, purpose: &str, holder: &str) -> Result<bool, Status> {
        Ok(JobRegistry::release_claim(self, job, purpose, holder).await?)
    }

    async fn set_index_state(&self, job: &JobId, state: IndexState, results_path: Option<String>, error: Option<String>) -> Result<JobState, Status> {
        Ok(JobRegistry::set_index_state(self, job, state, results_path, error).await?)
    }

    async fn watch_jobs(&self, from: WatchFrom) -> Result<JobEvents, Status> {
        // The stream ends when its reader drops it; the registry's own shutdown is not this
        // reader's to follow.
        let events = self.watch(from.after, from.replay_current, tokio_util::sync::CancellationToken::new()).await?;
        Ok(events.map(|event| event.map_err(Status::from)).boxed())
    }

    async fn all_jobs(&self) -> Result<Vec<JobState>, Status> {
        Ok(JobRegistry::all_jobs(self).await?)
    }
}

#[cfg(test)]
mod tests {
    //! One set of checks, run against the registry in this process and against the same registry
    //! over gRPC: what attribution, the indexer and the dashboard rely on, whichever they get.

    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt as _;
    use modelops_core::job::{IndexState, JobId, JobStatus};
    use modelops_core::store::Store;
    use modelops_registry_client::{ListQuery, RegistryClient, SharedRegistry, WatchFrom};

    use crate::registry::{JobRegistry, Registration, RegistryConfig, SpecInput, StatusUpdate};
    use crate::store::memory::MemoryStore;

    const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn id(s: &str) -> JobId {
        JobId::new(s).unwrap()
    }

    /// A study of `sets` parameter sets, two replicates each: about 600 bytes of spec a set.
    fn study(sets: usize) -> String {
        let sets: Vec<String> = (0..sets).map(|i| format!(r#"{{"beta": {}, "gamma": 0.5}}"#, 0.1 + i as f64 / 1e4)).collect();
        format!(r#"{{"model": "models.seir.SEIR", "scenario": "baseline", "parameter_sets": [{}], "n_replicates": 2, "targets": ["targets.prev:prevalence_target"]}}"#, sets.join(", "))
    }

    async fn register(registry: &JobRegistry, job: &str, sets: usize) {
        let registration = Registration {
            job_id: Some(id(job)),
            spec: Some(SpecInput::Study {
                study_json: study(sets),
                bundle_ref: BUNDLE.into(),
            }),
            ..Registration::default()
        };
        registry.register(registration).await.unwrap();
    }

    async fn conformance(client: &dyn RegistryClient, registry: &JobRegistry, how: &str) {
        // Unknown jobs.
        assert!(client.get_job(&id("job-unknown")).await.unwrap().is_none(), "{how}");
        assert_eq!(client.require_job(&id("job-unknown")).await.unwrap_err().code(), tonic::Code::NotFound, "{how}");

        // A spec of several MB arrives whole, in order, with its type.
        register(registry, "job-big", 5000).await;
        register(registry, "job-small", 2).await;
        let (job_type, expected) = registry.get_spec(&id("job-big")).await.unwrap();
        assert!(expected.len() > 2 * 1024 * 1024, "{how}: {} bytes", expected.len());
        let spec = client.read_spec(&id("job-big")).await.unwrap();
        assert_eq!(spec.job_type, job_type, "{how}");
        let chunks: Vec<bytes::Bytes> = spec.chunks.map(Result::unwrap).collect().await;
        assert_eq!(chunks.concat(), expected.as_bytes(), "{how}");
        if how == "over gRPC" {
            let largest = chunks.iter().map(bytes::Bytes::len).max().unwrap_or(0);
            assert!(chunks.len() >= 3 && largest <= crate::service::SPEC_CHUNK_BYTES, "{how}: {} chunks, the largest {largest} bytes", chunks.len());
        }
        assert_eq!(client.read_spec(&id("job-unknown")).await.unwrap_err().code(), tonic::Code::NotFound, "{how}");

        // Pages, and the watch position taken before the listing.
        let before = registry.hub().last_seq();
        let first = client.list_jobs(ListQuery { limit: 1, ..ListQuery::default() }).await.unwrap();
        assert_eq!(first.jobs.len(), 1, "{how}");
        assert!(first.watch_revision >= before, "{how}");
        let rest = client
            .list_jobs(ListQuery {
                limit: 1,
                page_token: first.next_page_token.clone(),
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(rest.jobs.len(), 1, "{how}");
        assert_ne!(first.jobs[0].job_id(), rest.jobs[0].job_id(), "{how}");
        let all = client.all_jobs().await.unwrap();
        assert_eq!(all.len(), 2, "{how}");
        assert_eq!(all.iter().find(|s| s.job_id().as_str() == "job-small").unwrap().to_json(), registry.require(&id("job-small")).await.unwrap().to_json(), "{how}: the stored document, unchanged");

        // A watch replays every job's state, then sends changes with what they changed from.
        let mut events = client.watch_jobs(WatchFrom { after: 0, replay_current: true }).await.unwrap();
        let mut replayed = Vec::new();
        for _ in 0..2 {
            let event = events.next().await.unwrap().unwrap();
            assert!(event.replayed && event.previous.is_none(), "{how}: {event:?}");
            replayed.push(event.state.job_id().to_string());
        }
        replayed.sort();
        assert_eq!(replayed, ["job-big", "job-small"], "{how}");
        registry.update_status(&id("job-small"), StatusUpdate::to(JobStatus::Submitting)).await.unwrap();
        let change = events.next().await.unwrap().unwrap();
        assert!(!change.replayed, "{how}");
        assert_eq!((change.state.job_id().as_str(), change.state.status(), change.previous), ("job-small", JobStatus::Submitting, Some(JobStatus::Pending)), "{how}");
        // Resumed after that change, the next one only.
        let mut resumed = client.watch_jobs(WatchFrom { after: change.seq, replay_current: false }).await.unwrap();
        registry.update_status(&id("job-small"), StatusUpdate::to(JobStatus::Scheduled)).await.unwrap();
        let next = resumed.next().await.unwrap().unwrap();
        assert_eq!((next.state.status(), next.previous), (JobStatus::Scheduled, Some(JobStatus::Submitting)), "{how}");
        assert!(next.seq > change.seq, "{how}");
        // A position this registry never handed out: OUT_OF_RANGE, so the watcher replays.
        let foreign = (registry.hub().last_seq() ^ (1 << 50)) | 1;
        let refused = client.watch_jobs(WatchFrom { after: foreign, replay_current: false }).await.err().expect("refused");
        assert_eq!(refused.code(), tonic::Code::OutOfRange, "{how}: {refused:?}");

        // Claims: one holder at a time; only the holder releases; limits are the registry's.
        let ttl = Duration::from_secs(30);
        assert!(client.claim_job(&id("job-big"), "index", "one", ttl).await.unwrap().granted, "{how}");
        let other = client.claim_job(&id("job-big"), "index", "two", ttl).await.unwrap();
        assert!(!other.granted && other.holder == "one", "{how}: {other:?}");
        assert!(!client.release_claim(&id("job-big"), "index", "two").await.unwrap(), "{how}");
        assert!(client.release_claim(&id("job-big"), "index", "one").await.unwrap(), "{how}");
        assert!(client.claim_job(&id("job-big"), "index", "two", ttl).await.unwrap().granted, "{how}");
        assert_eq!(client.claim_job(&id("job-big"), "../index", "two", ttl).await.unwrap_err().code(), tonic::Code::InvalidArgument, "{how}");
        let too_long = client.claim_job(&id("job-big"), "index", "two", Duration::from_secs(10 * 3600)).await.unwrap_err();
        assert_eq!(too_long.code(), tonic::Code::ResourceExhausted, "{how}: {too_long:?}");
        assert_eq!(client.claim_job(&id("job-unknown"), "index", "two", ttl).await.unwrap_err().code(), tonic::Code::NotFound, "{how}");

        // The index state, as the indexer records it.
        let state = client.set_index_state(&id("job-big"), IndexState::Done, Some("results/job-big/".into()), None).await.unwrap();
        assert_eq!((state.index_state(), state.get_str("results_path")), (IndexState::Done, Some("results/job-big/")), "{how}");
        assert_eq!(client.get_job(&id("job-big")).await.unwrap().unwrap().index_state(), IndexState::Done, "{how}");
    }

    fn new_registry() -> JobRegistry {
        JobRegistry::new(Arc::new(MemoryStore::new()), Store::in_memory(), RegistryConfig::default(), &prometheus::Registry::new())
    }

    #[tokio::test]
    async fn the_registry_answers_alike_in_process_and_over_grpc() {
        let registry = new_registry();
        let in_process: SharedRegistry = registry.clone().into();
        conformance(in_process.as_ref(), &registry, "in process").await;

        let registry = new_registry();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let remote = crate::service::serve_on_loopback(registry.clone(), shutdown.clone()).await.unwrap();
        conformance(&remote, &registry, "over gRPC").await;
        shutdown.cancel();
    }
}
