//! The ModelOps web dashboard, served by `mops serve` on its HTTP listener beside `/metrics`.
//!
//! - `/jobs`: every job with status, progress and relative times, filtered by status and age,
//!   kept current by server-sent events from the registry's `WatchJobs` (`/jobs/events`).
//! - `/jobs/{id}`: one job's state, attribution counts by kind and loss landscape (two parameters
//!   at once as a heat map binned on the server, every pair, parameter importance; loss against
//!   each parameter, a loss histogram, the best parameter sets), with the table as Parquet or CSV.
//!   Before the job has a table, the same views of the aggregations recorded so far, marked
//!   provisional and refreshed as the job reports progress (`/jobs/{id}/live`, see [`live`]).
//! - `/jobs/{id}/sets/{param_id}`: one parameter set (opened from any point, line or best row):
//!   its values, loss and rank per target, each replicate's loss, its simulations' outputs as a
//!   band over replicates, its results with their paths and other owners, and the same in Python.
//! - `/jobs/{id}/outputs`: the model outputs of a target's best sets, overlaid.
//! - `/history`: the best loss of a target over time, each indexed job a point.
//! - `/compare`: two jobs' losses on their shared parameter sets, and the best parameter sets of
//!   a target across every indexed job.
//!
//! Plots are SVG rendered on the server by `plotters` from a bounded sample of each table (see
//! [`landscape`]), so a page costs the same for a 100k-row job as for a small one. Everything the
//! pages need (stylesheet, script) is compiled into the binary; nothing is fetched at run time.
//! When the server has a token, every page asks for it (bearer header or a login cookie derived
//! from it), and wrong tokens are limited per client (see [`auth`] and [`limit`]). CSV downloads
//! neutralise text that spreadsheets would run as formulas (see [`csv`]).

pub mod assets;
pub mod auth;
pub mod compare;
pub mod csv;
pub mod error;
pub mod explore;
pub mod heatmap;
pub mod history;
pub mod job;
pub mod jobs;
pub mod landscape;
pub mod layout;
pub mod limit;
pub mod live;
pub mod memo;
pub mod outputs;
pub mod pairs;
pub mod parallel;
pub mod plots;
pub mod set;
pub mod text_column;

use std::sync::Arc;

use modelops_attribution_client::SharedAttribution;
use modelops_query::Engine;
use modelops_registry_client::SharedRegistry;
use tokio_util::sync::CancellationToken;

pub use auth::WebAuth;
pub use error::DashboardError;

/// What the dashboard reads: each part is optional, as `mops serve` may run only some services;
/// a page that needs a missing part says so.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// Jobs and their changes.
    pub registry: Option<SharedRegistry>,
    /// Attribution counts.
    pub attribution: Option<SharedAttribution>,
    /// Loss tables.
    pub engine: Option<Engine>,
    /// Rendered landscapes of recently viewed jobs.
    pub landscapes: Arc<landscape::LandscapeCache>,
    /// The provenance store, where a job without a table yet has its provisional landscape read
    /// from (with the registry and attribution).
    pub provenance: Option<modelops_core::store::Store>,
    /// Provisional landscapes of recently viewed jobs without a table.
    pub live: Arc<live::LiveLandscapes>,
    /// Cancelled when the server shuts down: open event streams end then, so no browser keeps
    /// the server from stopping.
    pub shutdown: CancellationToken,
}

impl Dashboard {
    /// A dashboard over these parts.
    pub fn new(registry: Option<SharedRegistry>, attribution: Option<SharedAttribution>, engine: Option<Engine>) -> Self {
        Self {
            registry,
            attribution,
            engine,
            landscapes: Arc::new(landscape::LandscapeCache::new(8)),
            provenance: None,
            live: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// This dashboard ending its event streams when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// This dashboard reading aggregation results from `provenance`, for the provisional
    /// landscapes of jobs without a table.
    pub fn with_provenance(mut self, provenance: modelops_core::store::Store) -> Self {
        self.provenance = Some(provenance);
        self
    }

    /// What a provisional landscape reads through, when this dashboard has all of it.
    pub fn live_sources(&self) -> Option<live::LiveSources> {
        Some(live::LiveSources {
            registry: self.registry.clone()?,
            attribution: self.attribution.clone()?,
            provenance: self.provenance.clone()?,
        })
    }

    /// The dashboard's routes; every page but the login page and the static assets requires
    /// `auth`'s token when it has one.
    pub fn router(self, auth: WebAuth) -> axum::Router {
        use axum::routing::get;
        let pages = axum::Router::new()
            .route("/", get(|| async { axum::response::Redirect::to("/jobs") }))
            .route("/jobs", get(jobs::page))
            .route("/jobs/events", get(jobs::events))
            .route("/jobs/{job_id}", get(job::page))
            .route("/jobs/{job_id}/live", get(job::live_fragment))
            .route("/jobs/{job_id}/sets/{param_id}", get(set::page))
            .route("/jobs/{job_id}/outputs", get(outputs::page))
            .route("/jobs/{job_id}/losses.parquet", get(job::download_parquet))
            .route("/jobs/{job_id}/losses.csv", get(job::download_csv))
            .route("/compare", get(compare::page))
            .route("/history", get(history::page))
            .with_state(self)
            .layer(axum::middleware::from_fn_with_state(auth.clone(), auth::require_token));
        axum::Router::new()
            .route("/login", get(auth::login_page).post(auth::login))
            .route("/logout", get(auth::logout))
            .with_state(auth)
            .route("/assets/{name}", get(assets::serve))
            .merge(pages)
            .layer(axum::middleware::from_fn(layout::security_headers))
    }
}

#[cfg(test)]
mod tests;
