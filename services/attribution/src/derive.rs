//! Deriving a job's edges from its spec and the provenance store alone, for jobs that ran before
//! attribution existed. Ids are deterministic: param_id and seed give each simulation directory;
//! its `result.json` gives the task id; the task ids of a parameter set and a target give the
//! aggregation id and so its directory. A result whose timestamp predates the job's creation was
//! computed by someone else: a cache hit.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use modelops_core::ids;
use modelops_core::job::JobId;
use modelops_core::paths::{self, ProvenanceSchema};
use modelops_core::records::{self, RecordError};
use modelops_core::study::{ParamGroup, SimJobSpec};
use modelops_core::time::parse_iso;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::edge::{Edge, Kind, Role, Source};
use crate::error::AttributionError;

/// What a derivation found.
#[derive(Debug, Clone, Default)]
pub struct Derivation {
    /// One edge per result found.
    pub edges: Vec<Edge>,
    /// Expected results not found (in the first schema's layout).
    pub missing: Vec<String>,
}

fn role(timestamp: &str, created_at: DateTime<Utc>) -> Role {
    match parse_iso(timestamp) {
        Some(written) if written < created_at => Role::CacheHit,
        Some(_) => Role::Computed,
        None => Role::Unknown,
    }
}

/// Where a record was found: its directory and its timestamp (`None` if present but unreadable).
type Found = Option<(String, Option<String>)>;

fn found(dir: String, read: Result<String, RecordError>) -> Result<Option<Found>, AttributionError> {
    match read {
        Ok(timestamp) => Ok(Some(Some((dir, Some(timestamp))))),
        Err(RecordError::NotFound { .. }) => Ok(None),
        // Present but unreadable: the result exists, its role is unknown.
        Err(RecordError::Malformed { .. }) => Ok(Some(Some((dir, None)))),
        Err(e) => Err(AttributionError::Record(e)),
    }
}

/// Finds a simulation directory in the first schema that has it; returns it with its task id.
pub(crate) async fn find_sim(provenance: &dyn ObjectStore, dirs: Vec<String>) -> Result<Option<(String, Option<(String, String)>)>, AttributionError> {
    for dir in dirs {
        match records::read_sim(provenance, &Path::from(dir.as_str())).await {
            Ok(sim) => return Ok(Some((dir, Some((sim.task_id, sim.timestamp))))),
            Err(RecordError::NotFound { .. }) => {}
            Err(RecordError::Malformed { .. }) => return Ok(Some((dir, None))),
            Err(e) => return Err(AttributionError::Record(e)),
        }
    }
    Ok(None)
}

/// Finds an aggregation directory in the first schema that has it.
async fn find_agg(provenance: &dyn ObjectStore, dirs: Vec<String>) -> Result<Found, AttributionError> {
    for dir in dirs {
        let read = records::read_agg_metadata(provenance, &Path::from(dir.as_str())).await.map(|m| m.timestamp);
        if let Some(hit) = found(dir, read)? {
            return Ok(hit);
        }
    }
    Ok(None)
}

async fn derive_group(
    provenance: &dyn ObjectStore,
    job_id: &JobId,
    group: &ParamGroup<'_>,
    targets: &[String],
    created_at: DateTime<Utc>,
    schemas: &[ProvenanceSchema],
    now: DateTime<Utc>,
) -> Result<Derivation, AttributionError> {
    let mut out = Derivation::default();
    let mut task_ids = Vec::with_capacity(group.tasks.len());
    let edge = |kind, path: String, role, seed, target: Option<&str>, aggregation_id: Option<String>| Edge {
        job_id: job_id.clone(),
        kind,
        path,
        param_id: group.param_id.to_owned(),
        seed,
        target: target.map(str::to_owned),
        aggregation_id,
        role,
        source: Source::Derived,
        recorded_at: now,
    };
    for task in &group.tasks {
        let dirs = schemas.iter().map(|schema| paths::sim_dir(*schema, &task.bundle_ref, &task.param_id, task.seed)).collect::<Vec<_>>();
        let first = dirs[0].clone();
        match find_sim(provenance, dirs).await? {
            Some((dir, Some((task_id, timestamp)))) => {
                task_ids.push(task_id);
                out.edges.push(edge(Kind::Sim, dir, role(&timestamp, created_at), Some(task.seed), None, None));
            }
            Some((dir, None)) => {
                task_ids.push(ids::runner_error_task_id(&task.param_id, task.seed));
                out.edges.push(edge(Kind::Sim, dir, Role::Unknown, Some(task.seed), None, None));
            }
            None => {
                // Upstream never stores failed simulations, but aggregates them under the error
                // task id: try that id for the aggregation.
                task_ids.push(ids::runner_error_task_id(&task.param_id, task.seed));
                out.missing.push(first);
            }
        }
    }
    let bundle_ref = group.tasks.first().map_or("", |t| t.bundle_ref.as_str());
    for target in targets {
        let aggregation_id = ids::aggregation_id(target, task_ids.iter().map(String::as_str));
        let dirs = schemas.iter().map(|schema| paths::agg_dir(*schema, bundle_ref, target, &aggregation_id)).collect::<Vec<_>>();
        let first = dirs[0].clone();
        match find_agg(provenance, dirs).await? {
            Some((dir, timestamp)) => {
                let role = timestamp.map_or(Role::Unknown, |t| role(&t, created_at));
                out.edges.push(edge(Kind::Agg, dir, role, None, Some(target), Some(aggregation_id.clone())));
            }
            None => out.missing.push(first),
        }
    }
    Ok(out)
}

/// Derives the edges of `job` (created at `created_at`) from `provenance`, reading up to
/// `concurrency` parameter sets at once; `progress(done, total)` is called as sets finish.
pub async fn derive(
    provenance: &dyn ObjectStore,
    job: &SimJobSpec,
    created_at: DateTime<Utc>,
    schemas: &[ProvenanceSchema],
    concurrency: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Derivation, AttributionError> {
    let targets = job.target_entrypoints();
    let groups = job.task_groups();
    let total = groups.len();
    let now = crate::edge::now();
    let futures: Vec<_> = groups
        .iter()
        .map(|group| derive_group(provenance, &job.job_id, group, &targets, created_at, schemas, now))
        .collect();
    let mut results = futures::stream::iter(futures).buffered(concurrency.max(1));
    let mut out = Derivation::default();
    let mut done = 0;
    while let Some(result) = results.next().await {
        let part = result?;
        out.edges.extend(part.edges);
        out.missing.extend(part.missing);
        done += 1;
        progress(done, total);
    }
    Ok(out)
}
