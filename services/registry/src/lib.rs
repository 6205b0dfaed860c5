//! The ModelOps job registry.
//!
//! Jobs' state is upstream's `state.json`, stored in a [`store::VersionedStore`] (etcd, Azure,
//! S3, GCS, an embedded redb file, or memory) and changed only by compare-and-swap
//! ([`registry::JobRegistry`]). Progress increments are coalesced ([`progress`]), changes fan out
//! to watchers ([`watch`]), and [`service`] serves it all as `modelops.registry.v1.JobRegistry`.

pub mod error;
pub mod in_process;
pub mod metrics;
mod progress;
pub mod registry;
pub mod retry;
pub mod service;
pub mod store;
pub mod watch;

pub use error::RegistryError;
pub use registry::{JobRegistry, RegistryConfig, RegistryLimits};
