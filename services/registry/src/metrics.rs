//! The registry's Prometheus metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `mops_registry_jobs` | gauge | `status` (refreshed on every count and every 30 s) |
//! | `mops_registry_store_writes_total` | counter | `op` (register, status, progress, index_state) |
//! | `mops_registry_cas_conflicts_total` | counter | `op` |
//! | `mops_registry_progress_increments_total` | counter | |
//! | `mops_registry_progress_flushes_total` | counter | |

use modelops_core::job::JobStatus;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};

/// The registry's metrics.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    /// Jobs by status.
    pub jobs: IntGaugeVec,
    /// Successful writes of job state, by operation.
    pub writes: IntCounterVec,
    /// Compare-and-swap conflicts, by operation.
    pub cas_conflicts: IntCounterVec,
    /// `AddProgress` calls.
    pub progress_increments: IntCounter,
    /// Coalesced progress writes.
    pub progress_flushes: IntCounter,
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry` (once per registry: a second
    /// registration of the same names is ignored, so several registries can share one).
    pub fn register(registry: &prometheus::Registry) -> Self {
        let metrics = Self {
            jobs: IntGaugeVec::new(Opts::new("mops_registry_jobs", "Jobs by status"), &["status"]).expect("valid metric"),
            writes: IntCounterVec::new(Opts::new("mops_registry_store_writes_total", "Job state writes by operation"), &["op"])
                .expect("valid metric"),
            cas_conflicts: IntCounterVec::new(
                Opts::new("mops_registry_cas_conflicts_total", "Compare-and-swap conflicts by operation"),
                &["op"],
            )
            .expect("valid metric"),
            progress_increments: IntCounter::new("mops_registry_progress_increments_total", "AddProgress calls").expect("valid metric"),
            progress_flushes: IntCounter::new("mops_registry_progress_flushes_total", "Coalesced progress writes").expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.writes.clone()),
            Box::new(metrics.cas_conflicts.clone()),
            Box::new(metrics.progress_increments.clone()),
            Box::new(metrics.progress_flushes.clone()),
        ] {
            if let Err(e) = registry.register(collector) {
                tracing::debug!(error = %e, "registry metric already registered");
            }
        }
        metrics
    }

    /// Sets the jobs-by-status gauge.
    pub fn set_job_counts(&self, counts: &[(JobStatus, u64)]) {
        for (status, count) in counts {
            self.jobs.with_label_values(&[status.as_str()]).set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
    }
}
