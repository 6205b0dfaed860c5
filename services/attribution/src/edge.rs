//! Edges: one job owning one result directory, and the rules for accepting them.

use chrono::{DateTime, Utc};
use modelops_core::job::JobId;

/// The current time at the precision edges are stored with (microseconds), so a recorded time
/// reads back equal to itself.
pub fn now() -> DateTime<Utc> {
    let at = Utc::now();
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// What an edge points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A simulation directory.
    Sim,
    /// An aggregation directory.
    Agg,
}

/// How the job came to own the result. Ordered by precedence: when one job reports a result
/// twice with different roles, the strongest claim (computed) wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Not known.
    Unknown,
    /// Found in the cache.
    CacheHit,
    /// Computed by the job.
    Computed,
}

/// Where an edge came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Derived afterwards from the spec and the provenance store.
    Derived,
    /// Reported by the runner.
    Reported,
}

impl Kind {
    /// `sim` or `agg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Agg => "agg",
        }
    }

    /// Parses `sim` or `agg`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sim" => Some(Self::Sim),
            "agg" => Some(Self::Agg),
            _ => None,
        }
    }
}

impl Role {
    /// `computed`, `cache_hit` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Computed => "computed",
            Self::CacheHit => "cache_hit",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "computed" => Some(Self::Computed),
            "cache_hit" => Some(Self::CacheHit),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

impl Source {
    /// `reported` or `derived`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Derived => "derived",
        }
    }

    /// Parses a source name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reported" => Some(Self::Reported),
            "derived" => Some(Self::Derived),
            _ => None,
        }
    }
}

/// One job ↔ result link.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The owning job.
    pub job_id: JobId,
    /// Simulation or aggregation.
    pub kind: Kind,
    /// The result directory relative to the provenance root.
    pub path: String,
    /// The parameter-set id.
    pub param_id: String,
    /// The seed (simulations).
    pub seed: Option<u64>,
    /// The target entrypoint (aggregations).
    pub target: Option<String>,
    /// The aggregation id (aggregations).
    pub aggregation_id: Option<String>,
    /// Computed, cache hit or unknown.
    pub role: Role,
    /// Reported or derived.
    pub source: Source,
    /// When the edge was first recorded.
    pub recorded_at: DateTime<Utc>,
}

impl Edge {
    /// This edge as an aggregation edge (`None` for a simulation, or an aggregation without its
    /// target), as the indexer reads them.
    pub fn as_agg_edge(&self) -> Option<modelops_attribution_client::AggEdge<'_>> {
        match (self.kind, self.target.as_deref()) {
            (Kind::Agg, Some(target)) => Some(modelops_attribution_client::AggEdge {
                param_id: &self.param_id,
                target,
                path: &self.path,
                cache_hit: self.role == Role::CacheHit,
            }),
            _ => None,
        }
    }

    /// The identity of an edge within a job: the same (kind, path) is the same edge.
    pub fn key(&self) -> (Kind, &str) {
        (self.kind, self.path.as_str())
    }

    /// Merges another report of the same edge: the stronger role, the stronger source, the
    /// earliest recording time, and any field this one lacks.
    pub fn merge(&mut self, other: &Edge) {
        self.role = self.role.max(other.role);
        self.source = self.source.max(other.source);
        self.recorded_at = self.recorded_at.min(other.recorded_at);
        if self.seed.is_none() {
            self.seed = other.seed;
        }
        if self.target.is_none() {
            self.target.clone_from(&other.target);
        }
        if self.aggregation_id.is_none() {
            self.aggregation_id.clone_from(&other.aggregation_id);
        }
        if self.param_id.is_empty() {
            self.param_id.clone_from(&other.param_id);
        }
    }
}

/// Why an edge is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("edge {index}: {reason}")]
pub struct InvalidEdge {
    /// Position in its batch.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that `path` is a result directory inside the provenance root: relative, no `.`/`..`
/// or empty segments, no backslashes or control characters, under `{token|bundle}/v1/{sims|aggs}/`,
/// and the kind its edge claims.
pub fn check_path(path: &str, kind: Kind) -> Result<(), String> {
    if path.is_empty() || path.len() > 1024 {
        return Err("path must be 1 to 1024 characters".into());
    }
    if path.starts_with('/') || path.ends_with('/') {
        return Err(format!("path {path:?} must be relative to the provenance root, without a trailing /"));
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!("path {path:?} contains control characters or backslashes"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(format!("path {path:?} has an empty, . or .. segment"));
    }
    let kind_dir = match kind {
        Kind::Sim => "sims",
        Kind::Agg => "aggs",
    };
    match segments.as_slice() {
        [schema, "v1", dir, ..] if matches!(*schema, "token" | "bundle") && *dir == kind_dir => Ok(()),
        _ => Err(format!("path {path:?} is not a {} directory under token/v1 or bundle/v1", kind.as_str())),
    }
}

/// Checks one reported edge against its batch's job.
pub fn check_edge(edge: &Edge, index: usize, job: &JobId) -> Result<(), InvalidEdge> {
    let fail = |reason: String| InvalidEdge { index, reason };
    if &edge.job_id != job {
        return Err(fail(format!("job_id {} differs from the batch's {job}", edge.job_id)));
    }
    check_path(&edge.path, edge.kind).map_err(fail)?;
    if !is_hex(&edge.param_id, 64) {
        return Err(fail("param_id must be 64 lowercase hex characters".into()));
    }
    let last = edge.path.rsplit('/').next().unwrap_or_default();
    match edge.kind {
        Kind::Sim => {
            let seed = edge.seed.ok_or_else(|| fail("a sim edge needs a seed".into()))?;
            if last != format!("seed_{seed}") {
                return Err(fail(format!("path ends in {last:?}, not seed_{seed}")));
            }
            let params_dir = format!("params_{}", &edge.param_id[..8]);
            if !edge.path.split('/').any(|s| s == params_dir) {
                return Err(fail(format!("path does not contain {params_dir}")));
            }
        }
        Kind::Agg => {
            let id = edge.aggregation_id.as_deref().ok_or_else(|| fail("an agg edge needs an aggregation_id".into()))?;
            if !is_hex(id, 16) || last != format!("agg_{id}") {
                return Err(fail(format!("path ends in {last:?}, not agg_{id} (16 hex)")));
            }
            if edge.target.as_deref().is_none_or(str::is_empty) {
                return Err(fail("an agg edge needs a target".into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_provenance_root() {
        assert!(check_path("token/v1/sims/0123456789ab/9a/db/params_761edf35/seed_1", Kind::Sim).is_ok());
        assert!(check_path("bundle/v1/aggs/0123456789ab/target_t:x/agg_4efec569a17ca9ef", Kind::Agg).is_ok());
        for bad in [
            "/etc/passwd",
            "token/v1/sims/../../../etc",
            "token/v1/sims//x",
            "token/v1/sims/./x",
            "token/v2/sims/x",
            "other/v1/sims/x",
            "token/v1/aggs/x",
            "token/v1/sims/x\\y",
            "token/v1/sims/x/",
            "",
        ] {
            assert!(check_path(bad, Kind::Sim).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn merging_keeps_the_strongest_claim() {
        let job = JobId::new("job-1").unwrap();
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let mut a = Edge {
            job_id: job,
            kind: Kind::Sim,
            path: "token/v1/sims/x".into(),
            param_id: String::new(),
            seed: Some(1),
            target: None,
            aggregation_id: None,
            role: Role::CacheHit,
            source: Source::Derived,
            recorded_at: at(20),
        };
        let b = Edge {
            role: Role::Computed,
            source: Source::Reported,
            recorded_at: at(10),
            param_id: "p".into(),
            ..a.clone()
        };
        a.merge(&b);
        assert_eq!((a.role, a.source, a.recorded_at, a.param_id.as_str()), (Role::Computed, Source::Reported, at(10), "p"));
    }
}
