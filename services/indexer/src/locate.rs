//! Where each row's aggregation is: for every parameter set × target of the job, the
//! aggregation directory from the job's attribution edges (or none: the row is missing).

use std::collections::HashMap;

use modelops_attribution::edge::{Edge, Kind, Role};
use modelops_core::study::SimJobSpec;

/// One row to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggLocation {
    /// Index of the parameter set in the job's task groups.
    pub group: usize,
    /// The target entrypoint.
    pub target: String,
    /// The aggregation directory, if the job has one.
    pub path: Option<String>,
    /// Whether the job found it in the cache.
    pub cache_hit: bool,
}

/// Rows in table order (parameter sets in task order, targets in spec order), located by `edges`.
pub fn locate(job: &SimJobSpec, edges: &[Edge]) -> Vec<AggLocation> {
    let by_key: HashMap<(&str, &str), &Edge> = edges
        .iter()
        .filter(|e| e.kind == Kind::Agg)
        .filter_map(|e| Some(((e.param_id.as_str(), e.target.as_deref()?), e)))
        .collect();
    let targets = job.target_entrypoints();
    let mut rows = Vec::new();
    for (group, params) in job.task_groups().iter().enumerate() {
        for target in &targets {
            let edge = by_key.get(&(params.param_id, target.as_str()));
            rows.push(AggLocation {
                group,
                target: target.clone(),
                path: edge.map(|e| e.path.clone()),
                cache_hit: edge.is_some_and(|e| e.role == Role::CacheHit),
            });
        }
    }
    rows
}
