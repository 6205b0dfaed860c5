//! The attribution domain: record, seal, list, own, derive, independent of gRPC.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use modelops_core::store::Store;
use modelops_core::study::JobSpec;
use modelops_core::time::parse_iso;
use modelops_registry_client::SharedRegistry;

use crate::derive;
use crate::edge::{self, Edge};
use crate::error::AttributionError;
use crate::owners::{Owner, OwnerIndex};
use crate::store::{self, Counts, DerivationRecord, EdgeStore, MAX_MISSING_LISTED, Seal};

/// How many parameter sets a derivation reads at once.
pub const DEFAULT_DERIVE_CONCURRENCY: usize = 32;

/// A job's attribution at a glance.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Counts over the job's edges (sealed, or recorded so far).
    pub counts: Counts,
    /// The seal, if sealed.
    pub seal: Option<Seal>,
    /// The first edges.
    pub sample: Vec<Edge>,
    /// Expected but missing results (from the seal or the last derivation).
    pub missing_paths: Vec<String>,
}

/// Attribution over a results store (edges), a provenance store (derivation) and the registry.
#[derive(Debug, Clone)]
pub struct Attribution {
    edges: EdgeStore,
    owners: Arc<OwnerIndex>,
    registry: SharedRegistry,
    provenance: Store,
}

impl Attribution {
    /// Attribution with edges in `results`, results read from `provenance`, jobs from `registry`.
    pub fn new(results: Store, provenance: Store, registry: impl Into<SharedRegistry>) -> Self {
        Self {
            edges: EdgeStore::new(results),
            owners: Arc::new(OwnerIndex::new()),
            registry: registry.into(),
            provenance,
        }
    }

    /// `job`'s simulation spec, read through the registry; NoSpec for a calibration job or a
    /// job registered without a spec.
    async fn simulation_spec(&self, job: &JobId) -> Result<modelops_core::study::SimJobSpec, AttributionError> {
        match self.registry.spec_bytes(job).await {
            Ok((_, bytes)) => match JobSpec::from_json(&bytes)? {
                JobSpec::Simulation(spec) => Ok(spec),
                JobSpec::Calibration { .. } => Err(AttributionError::NoSpec(job.to_string())),
            },
            Err(status) if status.code() == tonic::Code::NotFound => Err(AttributionError::NoSpec(job.to_string())),
            Err(status) => Err(status.into()),
        }
    }

    /// The edge storage.
    pub fn edge_store(&self) -> &EdgeStore {
        &self.edges
    }

    async fn created_at(&self, job: &JobId) -> Result<DateTime<Utc>, AttributionError> {
        let state = self.registry.get_job(job).await?.ok_or_else(|| AttributionError::NotFound(job.to_string()))?;
        parse_iso(state.created_at()).ok_or_else(|| AttributionError::Corrupt {
            key: format!("jobs/{job}/state.json"),
            reason: format!("created_at {:?} is not a timestamp", state.created_at()),
        })
    }

    /// Records a batch of edges for `job`. Returns false if this batch was already stored.
    pub async fn record(&self, job: &JobId, batch_id: Option<&str>, edges: Vec<Edge>) -> Result<bool, AttributionError> {
        self.created_at(job).await?;
        if self.edges.seal(job).await?.is_some() {
            return Err(AttributionError::Sealed(job.to_string()));
        }
        for (index, edge) in edges.iter().enumerate() {
            edge::check_edge(edge, index, job)?;
        }
        let batch_id = match batch_id {
            Some(id) => JobId::new(id)
                .map_err(|e| AttributionError::InvalidArgument(format!("batch_id: {e}")))?
                .to_string(),
            None => store::content_batch_id(&edges),
        };
        self.owners.add(job, &edges);
        self.edges.put_batch(job, &batch_id, edges).await
    }

    /// Seals `job`: its edges deduplicated into one immutable set. With `derive_missing`, edges
    /// are first derived for whatever no reporter sent, and missing results are counted.
    /// Sealing a sealed job returns its seal (`false`).
    pub async fn seal(&self, job: &JobId, derive_missing: bool) -> Result<(Seal, bool), AttributionError> {
        if let Some(seal) = self.edges.seal(job).await? {
            return Ok((seal, false));
        }
        self.created_at(job).await?;
        let missing = if derive_missing {
            self.derive(job, &ProvenanceSchema::ALL, |_, _| {}).await?.1
        } else {
            self.edges.derivation(job).await?.map(|d| d.missing_paths).unwrap_or_default()
        };
        let (edges, batches) = self.edges.merged_batches(job).await?;
        let (seal, newly) = self.edges.write_seal(job, &edges, batches, &missing).await?;
        self.owners.mark_sealed(job);
        if newly {
            tracing::info!(%job, edges = edges.len(), batches, "job sealed");
        }
        Ok((seal, newly))
    }

    /// Every edge of `job`: the sealed set, or the recorded batches merged.
    pub async fn job_edges(&self, job: &JobId) -> Result<Vec<Edge>, AttributionError> {
        self.created_at(job).await?;
        match self.edges.seal(job).await? {
            Some(seal) => self.edges.sealed_edges(job, &seal).await,
            None => Ok(self.edges.merged_batches(job).await?.0),
        }
    }

    /// A job's edges, at most `batch_size` at a time: a sealed job's streamed from its file (a row
    /// group in memory at a time), a running job's from its recorded batches merged.
    pub async fn job_edge_batches(&self, job: &JobId, batch_size: usize) -> Result<futures::stream::BoxStream<'static, Result<Vec<Edge>, AttributionError>>, AttributionError> {
        use futures::StreamExt as _;
        self.created_at(job).await?;
        if let Some(seal) = self.edges.seal(job).await? {
            return self.edges.sealed_edge_batches(job, &seal, batch_size).await;
        }
        let edges = self.edges.merged_batches(job).await?.0;
        let chunks: Vec<Result<Vec<Edge>, AttributionError>> = edges.chunks(batch_size.max(1)).map(|chunk| Ok(chunk.to_vec())).collect();
        Ok(futures::stream::iter(chunks).boxed())
    }

    /// Hands every aggregation edge of `job` that names a target to `visit`: streamed from the
    /// sealed file, or from the recorded batches merged.
    pub async fn visit_agg_edges(&self, job: &JobId, mut visit: impl FnMut(crate::codec::AggEdgeRef<'_>)) -> Result<(), AttributionError> {
        self.created_at(job).await?;
        if let Some(seal) = self.edges.seal(job).await? {
            return self.edges.visit_sealed_agg_edges(job, &seal, visit).await;
        }
        for edge in self.edges.merged_batches(job).await?.0 {
            if let (edge::Kind::Agg, Some(target)) = (edge.kind, edge.target.as_deref()) {
                visit(crate::codec::AggEdgeRef {
                    param_id: &edge.param_id,
                    target,
                    path: &edge.path,
                    role: edge.role,
                });
            }
        }
        Ok(())
    }

    /// The jobs owning the result at `path`.
    pub async fn owners(&self, path: &str) -> Result<Vec<Owner>, AttributionError> {
        if edge::check_path(path, edge::Kind::Sim).is_err() {
            edge::check_path(path, edge::Kind::Agg).map_err(AttributionError::InvalidArgument)?;
        }
        self.owners.refresh(&self.edges).await?;
        Ok(self.owners.owners(path))
    }

    /// Counts, seal, a sample of `sample_size` edges and the missing paths of `job`.
    pub async fn summary(&self, job: &JobId, sample_size: usize) -> Result<Summary, AttributionError> {
        use futures::TryStreamExt as _;
        // Counted as streamed: a sealed job's edges a row group at a time.
        let mut batches = self.job_edge_batches(job, 8192).await?;
        let mut counts = Counts::default();
        // The sample takes simulations and aggregations in turn (a job's file lists every
        // simulation first), up to `sample_size` of each kind held.
        let (mut sims, mut aggs) = (Vec::new(), Vec::new());
        while let Some(batch) = batches.try_next().await? {
            counts.add(&batch);
            for edge in batch {
                let kind = if edge.kind == edge::Kind::Sim { &mut sims } else { &mut aggs };
                if kind.len() < sample_size {
                    kind.push(edge);
                }
            }
        }
        let (mut sims, mut aggs) = (sims.into_iter(), aggs.into_iter());
        let mut sample = Vec::with_capacity(sample_size);
        while sample.len() < sample_size {
            let (sim, agg) = (sims.next(), aggs.next());
            if sim.is_none() && agg.is_none() {
                break;
            }
            sample.extend(sim);
            if sample.len() < sample_size {
                sample.extend(agg);
            }
        }
        let seal = self.edges.seal(job).await?;
        let derivation = self.edges.derivation(job).await?;
        let missing_paths = match (&seal, &derivation) {
            (Some(seal), _) => seal.missing_paths.clone(),
            (None, Some(derivation)) => derivation.missing_paths.clone(),
            (None, None) => Vec::new(),
        };
        let expected_missing = match (&seal, &derivation) {
            (Some(seal), _) => seal.counts.expected_missing,
            (None, Some(derivation)) => derivation.counts.expected_missing,
            (None, None) => 0,
        };
        counts.expected_missing = expected_missing;
        Ok(Summary {
            counts,
            sample,
            seal,
            missing_paths,
        })
    }

    /// The tasks of a partial job whose simulation result is in none of `schemas`' layouts
    /// (upstream's `get_resumable_tasks`, with the job's own entrypoints and outputs), in spec
    /// order, and how many tasks the job has. Another status is refused.
    pub async fn resumable_tasks(&self, job: &JobId, schemas: &[ProvenanceSchema]) -> Result<(Vec<modelops_core::study::SimTaskSpec>, usize), AttributionError> {
        use futures::StreamExt as _;
        let state = self.registry.require_job(job).await?;
        if state.status() != modelops_core::job::JobStatus::Partial {
            return Err(AttributionError::NotPartial(job.to_string(), state.status()));
        }
        let spec = self.simulation_spec(job).await?;
        let total = spec.tasks.len();
        let checks: Vec<_> = spec
            .tasks
            .iter()
            .map(|task| {
                let dirs: Vec<String> = schemas.iter().map(|schema| modelops_core::paths::sim_dir(*schema, &task.bundle_ref, &task.param_id, task.seed)).collect();
                let provenance = std::sync::Arc::clone(&self.provenance.object_store);
                async move { Ok::<bool, AttributionError>(derive::find_sim(provenance.as_ref(), dirs).await?.is_some()) }
            })
            .collect();
        let found: Vec<Result<bool, AttributionError>> = futures::stream::iter(checks).buffered(DEFAULT_DERIVE_CONCURRENCY).collect().await;
        let mut missing = Vec::new();
        for (task, found) in spec.tasks.into_iter().zip(found) {
            if !found? {
                missing.push(task);
            }
        }
        Ok((missing, total))
    }

    /// Derives `job`'s edges from its spec and the provenance store, records them (source
    /// derived) and the derivation's outcome. Returns the derived counts and missing paths.
    pub async fn derive(
        &self,
        job: &JobId,
        schemas: &[ProvenanceSchema],
        progress: impl FnMut(usize, usize),
    ) -> Result<(Counts, Vec<String>), AttributionError> {
        let created_at = self.created_at(job).await?;
        let spec = self.simulation_spec(job).await?;
        let derived = derive::derive(self.provenance.object_store.as_ref(), &spec, created_at, schemas, DEFAULT_DERIVE_CONCURRENCY, progress).await?;
        let counts = Counts::of(&derived.edges, derived.missing.len() as u64);
        if !derived.edges.is_empty() && self.edges.seal(job).await?.is_none() {
            let batch_id = store::content_batch_id(&derived.edges);
            self.owners.add(job, &derived.edges);
            self.edges.put_batch(job, &batch_id, derived.edges.clone()).await?;
        }
        let record = DerivationRecord {
            derived_at: crate::edge::now(),
            counts,
            missing_paths: derived.missing.iter().take(MAX_MISSING_LISTED).cloned().collect(),
        };
        self.edges.put_derivation(job, &record).await?;
        tracing::info!(%job, edges = derived.edges.len(), missing = derived.missing.len(), "edges derived");
        Ok((counts, derived.missing))
    }
}
