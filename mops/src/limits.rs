//! `mops serve`'s limits: the bounds on what one request may make a server hold, read or store.
//! Each is a flag with an environment variable; docs/LIMITS.md lists them with their defaults
//! and what answers a request over one (RESOURCE_EXHAUSTED, naming the flag).

use std::time::Duration;

use modelops_query::engine::SqlLimits;
use modelops_registry::RegistryLimits;

/// The limits of `mops serve`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// The most tasks one job may have (a study's parameter sets × replicates, or a spec's
    /// tasks); a registration over it is refused before the study is expanded.
    #[arg(long, env = "MOPS_MAX_JOB_TASKS", default_value_t = modelops_registry::registry::DEFAULT_MAX_JOB_TASKS)]
    pub max_job_tasks: u64,

    /// The largest job state (`state.json`, metadata included) a registration or status update
    /// may leave, in bytes.
    #[arg(long, env = "MOPS_MAX_STATE_BYTES", default_value_t = modelops_registry::registry::DEFAULT_MAX_STATE_BYTES)]
    pub max_state_bytes: usize,

    /// The longest claim a `ClaimJob` may take, in seconds.
    #[arg(long, env = "MOPS_MAX_CLAIM_TTL_SECONDS", default_value_t = modelops_registry::registry::DEFAULT_MAX_CLAIM_TTL.as_secs())]
    pub max_claim_ttl_seconds: u64,

    /// The largest gRPC message any service accepts or sends, in bytes.
    #[arg(long, env = "MOPS_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Memory one SQL query may use for sorts, joins and aggregations, in MiB; a query over it
    /// fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MOPS_SQL_MEMORY_MB", default_value_t = modelops_query::engine::DEFAULT_SQL_MEMORY_BYTES / (1024 * 1024))]
    pub sql_memory_mb: usize,

    /// The longest one SQL query may run, in seconds, its results stream included.
    #[arg(long, env = "MOPS_SQL_TIMEOUT_SECONDS", default_value_t = modelops_query::engine::DEFAULT_SQL_TIMEOUT.as_secs())]
    pub sql_timeout_seconds: u64,

    /// The largest aggregation record file (`result.json`, `metadata.json`) the indexer reads, in
    /// bytes; a larger one is a failed row, not a failed job.
    #[arg(long, env = "MOPS_MAX_RECORD_BYTES", default_value_t = modelops_indexer::build::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: u64,
}

/// Default of [`LimitArgs::max_message_bytes`]: a job spec of 128,000 tasks is about 40 MB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl LimitArgs {
    /// The registry's share.
    pub fn registry(&self) -> RegistryLimits {
        RegistryLimits {
            max_job_tasks: self.max_job_tasks,
            max_state_bytes: self.max_state_bytes,
            max_claim_ttl: Duration::from_secs(self.max_claim_ttl_seconds),
        }
    }

    /// The query service's share.
    pub fn sql(&self) -> SqlLimits {
        SqlLimits {
            memory_bytes: self.sql_memory_mb.saturating_mul(1024 * 1024),
            timeout: Duration::from_secs(self.sql_timeout_seconds.max(1)),
        }
    }
}
