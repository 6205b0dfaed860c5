//! The indexer: every job's losses as one Parquet table.
//!
//! [`columns`] types the parameter columns from the job spec; [`locate`] finds each parameter
//! set's aggregation per target from the job's attribution edges; [`source`] streams a job's
//! rows from the spec blob and edges in bounded memory; [`table`] builds the rows and
//! their Arrow schema, [`replicates`] those of the per-replicate table; [`build`] streams them
//! into `results/{job_id}/losses.parquet` (and `replicates.parquet` when aggregation results
//! carry per-replicate losses) with `summary.json` and, last, `manifest.json`, doing nothing
//! when the inputs are unchanged;
//! [`indexer`] decides when (jobs finishing, a catch-up scan, requests) under a registry claim,
//! and [`service`] serves it as `modelops.indexer.v1.Indexer`.
//! The table's schema is documented in `proto/modelops/query/v1/FLIGHT_COMMANDS.md`.

pub mod build;
pub use modelops_core::param_columns as columns;
pub mod error;
pub mod indexer;
pub mod locate;
pub mod service;
pub mod source;
pub mod replicates;
pub mod table;

pub use build::{IndexOutcome, index_job};
pub use error::IndexError;

#[cfg(test)]
mod tests;
