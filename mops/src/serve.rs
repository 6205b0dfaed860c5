//! `mops serve`: the result services on one gRPC port, with health, reflection, metrics, optional
//! TLS and bearer-token auth, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use modelops_core::store::Store;
use modelops_attribution::Attribution;
use modelops_attribution::service::AttributionService;
use modelops_dashboard::{Dashboard, WebAuth};
use modelops_indexer::indexer::Indexer;
use modelops_indexer::service::IndexerService;
use modelops_query::compaction::CompactionOptions;
use modelops_query::{Catalog, Engine, QueryService, TableCache};
use modelops_registry::service::{RegistryService, StoreUrls};
use modelops_registry::{JobRegistry, RegistryConfig};
use modelops_attribution_client::{GrpcAttribution, SharedAttribution};
use modelops_registry_client::{GrpcRegistry, SharedRegistry};
use modelops_runtime::auth::{BearerAuth, read_token_file};
use modelops_runtime::config::{ServerConfig, StoreConfig};
use modelops_runtime::metrics::Metrics;
use modelops_runtime::serve::{self as runtime_serve, GrpcOptions};
use modelops_runtime::shutdown::{Shutdown, shutdown_signal};
use tokio::net::TcpListener;

/// Which services a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceSelection {
    /// Every service on one port (the embedded default).
    All,
    /// The job registry.
    Registry,
    /// Job ↔ result attribution.
    Attribution,
    /// Loss-table indexing.
    Indexer,
    /// Arrow Flight queries.
    Query,
}

/// Arguments of `mops serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Which service to run.
    #[arg(value_enum, default_value = "all", env = "MOPS_SERVICE")]
    pub service: ServiceSelection,

    /// Listeners, TLS and auth.
    #[command(flatten)]
    pub server: ServerConfig,

    /// The four stores.
    #[command(flatten)]
    pub stores: StoreConfig,

    /// How often the registry writes coalesced progress increments, in milliseconds (each job
    /// costs at most one state write per interval).
    #[arg(long, env = "MOPS_PROGRESS_FLUSH_MS", default_value_t = 200)]
    pub progress_flush_ms: u64,

    /// How many aggregations the indexer reads at once (two requests each to a remote store).
    #[arg(long, env = "MOPS_INDEX_CONCURRENCY", default_value_t = modelops_indexer::build::DEFAULT_CONCURRENCY)]
    pub index_concurrency: usize,

    /// How many jobs the indexer builds at once.
    #[arg(long, env = "MOPS_INDEX_WORKERS", default_value_t = 2)]
    pub index_workers: usize,

    /// How long an indexer's claim on a job lasts unless renewed, in seconds (a crashed
    /// indexer's job is taken over after this).
    #[arg(long, env = "MOPS_INDEX_CLAIM_TTL_SECONDS", default_value_t = 60)]
    pub index_claim_ttl_seconds: u64,

    /// How often the indexer lists finished jobs without a table or left being built, in seconds
    /// (a safety net for job events missed while the registry was unreachable).
    #[arg(long, env = "MOPS_INDEX_RESYNC_SECONDS", default_value_t = 30)]
    pub index_resync_seconds: u64,

    /// How often the query service lists the results store for new or re-indexed jobs, in
    /// milliseconds (a job asked for by id is looked up at once regardless).
    #[arg(long, env = "MOPS_CATALOG_REFRESH_MS", default_value_t = 2000)]
    pub catalog_refresh_ms: u64,

    /// Jobs of at most this many rows are compacted by the query service: once 32 such jobs of
    /// one bundle and schema are held by no part, their rows are written again as one file
    /// sorted by loss under `results/_compacted/` (the jobs' own files stay), which queries
    /// across jobs read instead of thousands of small files. 0 compacts nothing (a query
    /// service with read-only access to the results store).
    #[arg(long, env = "MOPS_COMPACT_JOBS_UNDER", default_value_t = 16 * 1024)]
    pub compact_jobs_under: u64,

    /// How often the query service looks for small jobs to compact, in seconds.
    #[arg(long, env = "MOPS_COMPACT_EVERY_SECONDS", default_value_t = 60)]
    pub compact_every_seconds: u64,

    /// How many MiB of decoded tables the query service keeps: a table read whole a second time
    /// (`get_losses`, the dashboard's job page) is kept, and not decoded on later reads; 0 keeps
    /// none.
    #[arg(long, env = "MOPS_TABLE_CACHE_MB", default_value_t = 1024)]
    pub table_cache_mb: usize,

    /// The job registry's gRPC address (`http://registry:50051`), for a process that runs
    /// attribution, the indexer or the query service's dashboard without the registry: they
    /// reach it only through its API. Unused when this process serves the registry itself.
    #[arg(long, env = "MOPS_REGISTRY_ENDPOINT")]
    pub registry_endpoint: Option<String>,

    /// The attribution service's gRPC address (`http://attribution:50051`), for a process that
    /// runs the indexer (which reads each job's aggregation edges there) or the query service's
    /// dashboard (attribution counts) without attribution. Unused when this process serves
    /// attribution itself.
    #[arg(long, env = "MOPS_ATTRIBUTION_ENDPOINT")]
    pub attribution_endpoint: Option<String>,

    /// What one request may make the server hold, read or store.
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
}

/// Everything a running server holds: the opened stores and the process's metrics.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// Which services run.
    pub selection: ServiceSelection,
    /// The job spec store.
    pub jobs: Store,
    /// The provenance store.
    pub provenance: Store,
    /// The results store.
    pub results: Store,
    /// The job registry (when this process serves it).
    pub registry: Option<JobRegistry>,
    /// The registry as the other services reach it: the one in this process, or another
    /// process's over gRPC (`--registry-endpoint`).
    pub job_reader: Option<SharedRegistry>,
    /// Attribution (when this process serves it).
    pub attribution: Option<Attribution>,
    /// Attribution as the indexer and the dashboard reach it: the one in this process, or
    /// another process's over gRPC (`--attribution-endpoint`).
    pub attribution_view: Option<SharedAttribution>,
    /// The indexer (when this process runs it).
    pub indexer: Option<Indexer>,
    /// The query service's catalog (when this process serves queries).
    pub catalog: Option<Catalog>,
    /// How often the catalog refreshes itself.
    pub catalog_refresh: Duration,
    /// Which small jobs the query service compacts, and how often it looks (`None`: never).
    pub compaction: Option<(CompactionOptions, Duration)>,
    /// The query service's decoded tables, shared with the dashboard.
    pub table_cache: TableCache,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Transport options.
    pub grpc: GrpcOptions,
    /// TLS of the HTTP listener (dashboard, downloads, `/metrics`), when set.
    pub http_tls: Option<runtime_serve::HttpTls>,
    /// The dashboard's login: the token, its cookie (`Secure` with `http_tls`), the limit on wrong tokens.
    pub web_auth: WebAuth,
    /// How long to wait for background work on shutdown.
    pub shutdown_grace: Duration,
    /// How many jobs the indexer builds at once.
    pub index_workers: usize,
    /// The largest gRPC message the services take or send.
    pub max_message_bytes: usize,
    /// What the query service's queries may use.
    pub sql_limits: modelops_query::engine::SqlLimits,
}

impl ServiceSelection {
    fn includes(self, service: Self) -> bool {
        self == Self::All || self == service
    }
}

impl ServerState {
    /// Opens the stores and reads the TLS and token files named by `args`.
    pub async fn open(args: &ServeArgs) -> anyhow::Result<Self> {
        let open = |url: String, what: &str| Store::open(&url).with_context(|| format!("opening the {what} store"));
        let tls = match (&args.server.tls_cert, &args.server.tls_key) {
            (Some(cert), Some(key)) => Some(runtime_serve::load_tls(cert, key)?),
            _ => None,
        };
        let token = args.server.auth_token_file.as_deref().map(read_token_file).transpose()?;
        let http_tls = runtime_serve::http_tls(&args.server)?;
        let metrics = Metrics::new();
        // Submitters write job specs too: the registry reads only regular files beneath its root.
        let jobs = Store::open_confined(&args.stores.jobs_url()).context("opening the jobs store")?;
        let serves_registry = args.service.includes(ServiceSelection::Registry);
        let serves_attribution = args.service.includes(ServiceSelection::Attribution);
        let serves_indexer = args.service.includes(ServiceSelection::Indexer);
        let registry = if serves_registry {
            let url = args.stores.registry_url();
            let etcd = modelops_registry::store::etcd::EtcdOptions::from(&args.stores);
            let store = modelops_registry::store::open_with(&url, &etcd)
                .await
                .with_context(|| format!("opening the registry store {url}"))?;
            let config = RegistryConfig {
                progress_flush_interval: Duration::from_millis(args.progress_flush_ms.max(1)),
                limits: args.limits.registry(),
                ..RegistryConfig::default()
            };
            Some(JobRegistry::new(store, jobs.clone(), config, metrics.registry()))
        } else {
            None
        };
        // The other services meet the registry only at its API: in this process, or over gRPC.
        let job_reader: Option<SharedRegistry> = match (&registry, &args.registry_endpoint) {
            (Some(registry), _) => Some(registry.clone().into()),
            (None, Some(endpoint)) => Some(Arc::new(
                GrpcRegistry::connect_lazy(endpoint, token.as_deref(), args.limits.max_message_bytes)
                    .with_context(|| format!("invalid --registry-endpoint {endpoint:?}"))?,
            )),
            (None, None) if serves_attribution || serves_indexer => {
                anyhow::bail!(
                    "mops serve {} needs the job registry's gRPC address: set --registry-endpoint or MOPS_REGISTRY_ENDPOINT (e.g. http://registry:50051)",
                    if serves_indexer { "indexer" } else { "attribution" }
                )
            }
            (None, None) => None,
        };
        // Every runner writes the provenance store: read only regular files beneath its root.
        let provenance = Store::open_confined(&args.stores.provenance_url()).context("opening the provenance store")?;
        let results = open(args.stores.results_url(), "results")?;
        let attribution = match (&job_reader, serves_attribution) {
            (Some(registry), true) => Some(Attribution::new(results.clone(), provenance.clone(), Arc::clone(registry))),
            _ => None,
        };
        // The indexer and the dashboard meet attribution only at its API too.
        let edges: Option<SharedAttribution> = match (&attribution, &args.attribution_endpoint) {
            (Some(attribution), _) => Some(attribution.clone().into()),
            (None, Some(endpoint)) => Some(Arc::new(
                GrpcAttribution::connect_lazy(endpoint, token.as_deref(), args.limits.max_message_bytes)
                    .with_context(|| format!("invalid --attribution-endpoint {endpoint:?}"))?,
            )),
            (None, None) if serves_indexer => anyhow::bail!(
                "mops serve indexer needs the attribution service's gRPC address: set --attribution-endpoint or MOPS_ATTRIBUTION_ENDPOINT (e.g. http://attribution:50051)"
            ),
            (None, None) => None,
        };
        let indexer = match (&job_reader, &edges, serves_indexer) {
            (Some(registry), Some(edges), true) => {
                let holder = format!("{}-{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "mops".into()), std::process::id());
                let options = modelops_indexer::build::IndexOptions {
                    concurrency: args.index_concurrency.max(1),
                    max_record_bytes: args.limits.max_record_bytes,
                    resync_interval: Duration::from_secs(args.index_resync_seconds.max(1)),
                    ..Default::default()
                };
                let ttl = Duration::from_secs(args.index_claim_ttl_seconds.max(1));
                Some(Indexer::new(Arc::clone(registry), Arc::clone(edges), provenance.clone(), results.clone(), holder, options, ttl))
            }
            _ => None,
        };
        let catalog = args
            .service
            .includes(ServiceSelection::Query)
            .then(|| Catalog::new(std::sync::Arc::clone(&results.object_store)));
        Ok(Self {
            selection: args.service,
            jobs,
            provenance,
            results,
            registry,
            job_reader,
            attribution,
            attribution_view: edges,
            indexer,
            catalog,
            catalog_refresh: Duration::from_millis(args.catalog_refresh_ms.max(10)),
            compaction: (args.compact_jobs_under > 0).then(|| {
                let options = CompactionOptions {
                    small_rows: args.compact_jobs_under,
                    ..CompactionOptions::default()
                };
                (options, Duration::from_secs(args.compact_every_seconds.max(1)))
            }),
            table_cache: TableCache::new(args.table_cache_mb.saturating_mul(1024 * 1024)),
            metrics,
            web_auth: WebAuth::new(token.clone()).with_secure_cookie(http_tls.is_some()),
            http_tls,
            grpc: GrpcOptions {
                tls,
                auth: BearerAuth::new(token),
            },
            shutdown_grace: Duration::from_secs(args.server.shutdown_grace_seconds),
            index_workers: args.index_workers.max(1),
            max_message_bytes: args.limits.max_message_bytes,
            sql_limits: args.limits.sql(),
        })
    }
}

/// Runs `mops serve` until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before the listeners exist, so a SIGTERM sent as soon as the port answers is handled.
    let signal = shutdown_signal();
    let state = ServerState::open(&args).await?;
    let grpc = TcpListener::bind(args.server.listen)
        .await
        .with_context(|| format!("binding the gRPC listener {}", args.server.listen))?;
    let http = TcpListener::bind(args.server.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", args.server.metrics_listen))?;
    // Where to point a client and a browser, for the person who started the server.
    let scheme = if state.http_tls.is_some() { "https" } else { "http" };
    println!("mops serve: gRPC on {}, dashboard at {scheme}://{}/jobs", grpc.local_addr()?, http.local_addr()?);
    tracing::info!(
        grpc = %grpc.local_addr()?,
        metrics = %http.local_addr()?,
        service = ?state.selection,
        tls = state.grpc.tls.is_some(),
        http_tls = state.http_tls.is_some(),
        auth = state.grpc.auth.is_enabled(),
        "serving"
    );
    serve(grpc, http, state, signal).await
}

/// Serves on pre-bound listeners until `shutdown` resolves: the gRPC services on `grpc`, and
/// `/metrics` on `http`. On shutdown, health turns NOT_SERVING, background work drains, then
/// both servers finish their in-flight requests.
pub async fn serve(
    grpc: TcpListener,
    http: TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let background = Shutdown::new();
    let descriptor_sets = [modelops_proto::FILE_DESCRIPTOR_SET];
    let mut served = Vec::new();
    if state.registry.is_some() {
        served.push(modelops_registry::service::SERVICE_NAME);
    }
    if state.attribution.is_some() {
        served.push(modelops_attribution::service::SERVICE_NAME);
    }
    if state.indexer.is_some() {
        served.push(modelops_indexer::service::SERVICE_NAME);
    }
    if state.catalog.is_some() {
        served.push(modelops_query::service::SERVICE_NAME);
    }
    let (mut routes, health) = runtime_serve::base_routes(&descriptor_sets, &served).await?;
    state.metrics.set_rpc_methods(runtime_serve::method_paths(&descriptor_sets, &served));
    if let Some(registry) = &state.registry {
        registry.start(background.token(), background.tracker());
        routes = routes.add_service(RegistryService::new(registry.clone(), background.token())
                .with_stores(StoreUrls::new(&state.provenance.url, &state.results.url, &state.jobs.url))
                .into_server(state.max_message_bytes));
        tracing::info!(store = %registry.describe_store(), "job registry ready");
    }
    if let Some(attribution) = &state.attribution {
        routes = routes.add_service(AttributionService::new(attribution.clone()).into_server(state.max_message_bytes));
        tracing::info!(results = %state.results.url, provenance = %state.provenance.url, "attribution ready");
    }
    if let Some(indexer) = &state.indexer {
        indexer.start(state.index_workers, background.token(), background.tracker());
        routes = routes.add_service(IndexerService::new(indexer.clone()).into_server());
        tracing::info!(results = %state.results.url, "indexer ready");
    }
    // One engine for the query service and the dashboard.
    let engine = match &state.catalog {
        Some(catalog) => Some(Engine::with_limits(catalog.clone(), state.sql_limits)?.with_table_cache(state.table_cache.clone())),
        None => None,
    };
    if let Some(catalog) = &state.catalog {
        if let Some(indexer) = &state.indexer {
            // Tables this process commits are in the catalog before their jobs read as indexed.
            let catalog = catalog.clone();
            indexer.on_commit(std::sync::Arc::new(move |job| {
                let catalog = catalog.clone();
                Box::pin(async move { catalog.reload(job.as_str()).await })
            }));
        }
        // Answer nothing before every indexed job is known (a partial catalog gives wrong
        // cross-job answers); a store that is down now is retried by the refresh loop.
        match catalog.load_all().await {
            Ok(jobs) => tracing::info!(jobs, "query catalog loaded"),
            Err(error) => tracing::warn!(%error, "query catalog: first listing failed; retrying in the background"),
        }
        catalog.start(state.catalog_refresh, background.token(), background.tracker());
        if let Some((options, every)) = state.compaction {
            modelops_query::compaction::start(catalog.clone(), options, every, background.token(), background.tracker());
        }
        let service = QueryService::new(engine.clone().ok_or_else(|| anyhow::anyhow!("no query engine beside the catalog"))?)?;
        routes = routes.add_service(service.into_server());
        tracing::info!(results = %state.results.url, "query service ready");
    }

    let http_stop = tokio_util::sync::CancellationToken::new();
    let dashboard = Dashboard::new(state.job_reader.clone(), state.attribution_view.clone(), engine)
        .with_provenance(state.provenance.clone())
        .with_shutdown(background.token());
    let router = runtime_serve::metrics_router(state.metrics.clone()).merge(dashboard.router(state.web_auth.clone()));
    let http_task = tokio::spawn(runtime_serve::serve_http(http, state.http_tls.clone(), router, http_stop.clone().cancelled_owned()));

    let grace = state.shutdown_grace;
    let drain = background.clone();
    let served_names: Vec<&'static str> = served.clone();
    let drained = tokio_util::sync::CancellationToken::new();
    let drained_signal = drained.clone();
    let grpc_shutdown = async move {
        shutdown.await;
        for name in std::iter::once("").chain(served_names) {
            health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
        }
        drain.drain(grace).await;
        drained_signal.cancel();
    };
    let server = runtime_serve::serve_grpc(grpc, routes, state.grpc.clone(), &state.metrics, grpc_shutdown);
    // In-flight requests get one more grace period; a client that never closes its connection
    // must not keep the process from exiting.
    let served = tokio::select! {
        served = server => served,
        () = async {
            drained.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "connections still open after the grace period; closing them");
            Ok(())
        }
    };
    // Stop the HTTP listener however the gRPC server ended, so a failure there never hangs; a
    // client that keeps a connection open gets one grace period.
    http_stop.cancel();
    let mut http_task = http_task;
    match tokio::time::timeout(grace, &mut http_task).await {
        Ok(finished) => finished.context("HTTP server task")??,
        Err(_) => {
            tracing::warn!(grace_seconds = grace.as_secs(), "HTTP connections still open after the grace period; closing them");
            http_task.abort();
        }
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// A `mops serve` running inside this process on free loopback ports: what tests, benchmarks
/// and `mops demo` use. Stops on [`LocalServer::stop`] or when dropped.
#[derive(Debug)]
pub struct LocalServer {
    /// The gRPC address.
    pub grpc: std::net::SocketAddr,
    /// The HTTP (metrics) address.
    pub http: std::net::SocketAddr,
    /// The job registry it serves, for in-process access.
    pub registry: Option<JobRegistry>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl LocalServer {
    /// Starts a server with `args` on 127.0.0.1 ports chosen by the OS (the listen flags in
    /// `args` are ignored).
    pub async fn start(args: &ServeArgs) -> anyhow::Result<Self> {
        let state = ServerState::open(args).await?;
        let registry = state.registry.clone();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        let http = http_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(grpc_listener, http_listener, state, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            grpc,
            http,
            registry,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:port` of the gRPC listener.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Stops the server gracefully and returns how `serve` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
