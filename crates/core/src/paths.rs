//! Where upstream ModelOps puts things: provenance directories, job specs and job state
//! (UPSTREAM-FORMAT.md §3, §4, §5). The results this project writes are in
//! [`crate::loss_table`].
//!
//! Paths are [`object_store::path::Path`]s relative to a store's root, so the same layout works on
//! a local directory, Azure, S3 or GCS.

use object_store::path::Path;

use crate::ids;

/// The provenance schemas whose trees this project reads and writes. Both use the same sub-paths
/// and differ only in the root (`token/v1` or `bundle/v1`); the store always puts the bundle
/// digest where the token schema names a model digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProvenanceSchema {
    /// `token/v1`, upstream's `DEFAULT_SCHEMA`.
    #[default]
    Token,
    /// `bundle/v1`, `BUNDLE_INVALIDATION_SCHEMA`.
    Bundle,
}

impl ProvenanceSchema {
    /// Both schemas, default first.
    pub const ALL: [Self; 2] = [Self::Token, Self::Bundle];

    /// The schema name as it appears in paths.
    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Bundle => "bundle",
        }
    }

    /// The root of the tree: `{name}/v1`.
    pub fn root(self) -> String {
        format!("{}/v1", self.name())
    }

    /// Parses a schema name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "token" => Some(Self::Token),
            "bundle" => Some(Self::Bundle),
            _ => None,
        }
    }
}

/// The relative path of a simulation's result directory:
/// `{root}/sims/{bundle12}/{shard}/params_{param_id[:8]}/seed_{seed}`.
pub fn sim_dir(schema: ProvenanceSchema, bundle_ref: &str, param_id: &str, seed: u64) -> String {
    format!(
        "{}/sims/{}/{}/params_{}/seed_{seed}",
        schema.root(),
        ids::bundle12(bundle_ref),
        ids::shard(param_id),
        ids::py_prefix(param_id, 8),
    )
}

/// The directory name of a target inside `aggs/{bundle12}/`: `target_` and the entrypoint with
/// `/` replaced by `_` (`:` is kept).
pub fn target_dir_name(target_entrypoint: &str) -> String {
    format!("target_{}", target_entrypoint.replace('/', "_"))
}

/// The relative path of an aggregation's result directory:
/// `{root}/aggs/{bundle12}/target_{target}/agg_{aggregation_id}`.
pub fn agg_dir(schema: ProvenanceSchema, bundle_ref: &str, target_entrypoint: &str, aggregation_id: &str) -> String {
    format!(
        "{}/aggs/{}/{}/agg_{aggregation_id}",
        schema.root(),
        ids::bundle12(bundle_ref),
        target_dir_name(target_entrypoint),
    )
}

/// Turns a relative directory string into a store path, refusing anything that could leave the
/// store's root (empty, `.` or `..` segments, control characters).
pub fn to_store_path(relative: &str) -> Result<Path, object_store::path::Error> {
    Path::parse(relative)
}

/// The key of a job's spec in the jobs store: `jobs/{job_type}/{job_id}.json`.
pub fn job_spec_key(job_type: &str, job_id: &crate::job::JobId) -> String {
    format!("jobs/{job_type}/{job_id}.json")
}

/// The key of a job's state in the registry store: `jobs/{job_id}/state.json`.
pub fn job_state_key(job_id: &crate::job::JobId) -> String {
    format!("jobs/{job_id}/state.json")
}

/// The job id of a [`job_state_key`] (`None` for any other key), unchecked.
pub fn job_state_key_id(key: &str) -> Option<&str> {
    key.strip_prefix("jobs/")?.strip_suffix("/state.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const PARAM_ID: &str = "761edf35ca1634d79a760bfa7030cf07e72a3559b3cdb0c56d20557de35b1e07";

    #[test]
    fn worked_example_sim_dirs() {
        assert_eq!(
            sim_dir(ProvenanceSchema::Token, BUNDLE, PARAM_ID, 751131435),
            "token/v1/sims/0123456789ab/9a/db/params_761edf35/seed_751131435"
        );
        assert_eq!(
            sim_dir(ProvenanceSchema::Bundle, BUNDLE, PARAM_ID, 751131435),
            "bundle/v1/sims/0123456789ab/9a/db/params_761edf35/seed_751131435"
        );
        assert_eq!(
            sim_dir(ProvenanceSchema::Token, &format!("ghcr.io/org/model@{BUNDLE}"), PARAM_ID, 42),
            "token/v1/sims/0123456789ab/9a/db/params_761edf35/seed_42"
        );
    }

    #[test]
    fn worked_example_agg_dirs_keep_colon_and_replace_slash() {
        assert_eq!(
            agg_dir(ProvenanceSchema::Token, BUNDLE, "targets.prev:prevalence_target", "4efec569a17ca9ef"),
            "token/v1/aggs/0123456789ab/target_targets.prev:prevalence_target/agg_4efec569a17ca9ef"
        );
        assert_eq!(
            agg_dir(ProvenanceSchema::Bundle, BUNDLE, "targets.deaths/deaths_target", "0011223344556677"),
            "bundle/v1/aggs/0123456789ab/target_targets.deaths_deaths_target/agg_0011223344556677"
        );
    }

    #[test]
    fn store_paths_refuse_escapes() {
        assert!(to_store_path("token/v1/sims/../../etc").is_err());
        assert!(to_store_path("token/v1/aggs/x/target_a:b/agg_1").is_ok());
    }

    #[test]
    fn a_state_key_gives_back_its_job_id_and_no_other_key_does() {
        let job = crate::job::JobId::new("job-5b718dc8").unwrap();
        assert_eq!(job_state_key_id(&job_state_key(&job)), Some("job-5b718dc8"));
        for other in ["claims/index/job-5b718dc8.json", "jobs/simulation/job-5b718dc8.json", "jobs/job-5b718dc8/state.json.tmp", "x/jobs/a/state.json"] {
            assert_eq!(job_state_key_id(other), None, "{other}");
        }
    }
}
