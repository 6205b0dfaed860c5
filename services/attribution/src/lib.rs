//! Attribution: which ModelOps job computed, or reused from the cache, which result.
//!
//! Results are stored by input hash, so jobs share them. An [`edge::Edge`] links a job to one
//! result directory; batches of edges are recorded append-only and idempotently
//! ([`store::EdgeStore`]), sealed into one deduplicated set per job, indexed by result for owner
//! queries ([`owners`]), and, for jobs that ran before attribution existed, derived from the job
//! spec and the provenance store ([`derive`]). [`service`] serves it as
//! `modelops.attribution.v1.Attribution`.

pub mod attribution;
pub mod codec;
pub mod derive;
pub mod edge;
pub mod error;
pub mod in_process;
pub mod owners;
pub mod service;
pub mod store;

pub use attribution::Attribution;
pub use error::AttributionError;

#[cfg(test)]
mod tests;
