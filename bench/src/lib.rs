//! The benchmark harness. Each area measures the project against a baseline run in the same
//! invocation on the same machine and reports the ratio; [`report`] writes the rows into the
//! area's section of BENCHMARKS.md, with the machine they ran on.

// The binary's global allocator; declared in `main.rs`, a dependency of the package.
use mimalloc as _;

pub mod attribution;
pub mod catalog;
pub mod dashboard;
pub mod indexer;
pub mod latency_proxy;
pub mod live;
pub mod query;
pub mod registry;
pub mod report;

use std::path::PathBuf;

/// Command line of `mops-bench`.
#[derive(Debug, clap::Parser)]
#[command(name = "mops-bench", about = "Run the ModelOps benchmarks and record them in BENCHMARKS.md")]
pub struct Args {
    /// Which areas to run.
    #[arg(value_enum, default_values_t = [Area::Registry, Area::Attribution, Area::Indexer, Area::Query, Area::Catalog, Area::Cloud, Area::Dashboard])]
    pub areas: Vec<Area>,

    /// The file to update.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,

    /// etcd endpoint (`http://127.0.0.1:2379`) for the registry benchmarks.
    #[arg(long, env = "MOPS_BENCH_ETCD_ENDPOINT")]
    pub etcd: Option<String>,

    /// A Python with orjson and pyarrow, for the indexer's baseline.
    #[arg(long, env = "MOPS_TEST_PYTHON")]
    pub python: Option<String>,

    /// Where the indexer's 1M-aggregation job is written (about 10 GB in 3.3M small files and
    /// directories; the system's temporary directory by default).
    #[arg(long, env = "MOPS_BENCH_SCRATCH")]
    pub scratch: Option<PathBuf>,

    /// Scale every workload by this factor (1.0 = the sizes of TARGETS.md).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

/// A benchmark area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Area {
    /// Job registry on etcd.
    Registry,
    /// Attribution on the embedded default.
    Attribution,
    /// The indexer on a file provenance store.
    Indexer,
    /// The query service against pyarrow Flight and DuckDB.
    Query,
    /// The query service over many small jobs (start-up, memory, cross-job queries).
    Catalog,
    /// The indexer through a store with a cloud region's latency, and on Azurite through a
    /// proxy adding that latency.
    Cloud,
    /// The dashboard's job page on large jobs.
    Dashboard,
}

impl Args {
    /// The etcd endpoint the `area` benchmarks use.
    fn etcd_for(&self, area: &str) -> anyhow::Result<&str> {
        self.etcd
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the {area} benchmarks need --etcd (scripts/bench starts one)"))
    }

    /// The Python interpreter the `area` benchmarks run their baselines with.
    fn python_for(&self, area: &str) -> anyhow::Result<&str> {
        self.python
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the {area} benchmarks need --python (scripts/bench sets MOPS_TEST_PYTHON)"))
    }
}

/// Runs the requested areas and updates the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    for area in &args.areas {
        let (key, title, rows) = match area {
            Area::Registry => ("registry", "Registry", registry::run(args.etcd_for("registry")?, args.scale).await?),
            Area::Attribution => ("attribution", "Attribution", attribution::run(args.scale).await?),
            Area::Indexer => {
                let python = args.python_for("indexer")?;
                let mut rows = indexer::run(args.scale, python).await?;
                let etcd = args.etcd_for("indexer")?;
                let scratch = args.scratch.clone().unwrap_or_else(std::env::temp_dir);
                rows.push(indexer::run_scale(args.scale, etcd, &scratch).await?);
                ("indexer", "Indexer", rows)
            }
            Area::Query => {
                let python = args.python_for("query")?;
                ("query", "Query", query::run(args.scale, python).await?)
            }
            Area::Catalog => {
                let python = args.python_for("catalog")?;
                ("catalog", "Many small jobs", catalog::run(args.scale, python).await?)
            }
            Area::Cloud => {
                let python = args.python_for("cloud")?;
                let mut rows = vec![indexer::run_cloud(args.scale, python).await?];
                match std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
                    Ok(connection_string) => rows.push(indexer::run_azurite(args.scale, python, &connection_string).await?),
                    Err(_) => eprintln!("no Azurite row: AZURE_STORAGE_CONNECTION_STRING is not set (scripts/bench starts Azurite and sets it)"),
                }
                ("cloud", "Cloud latency", rows)
            }
            Area::Dashboard => {
                let python = args.python_for("dashboard")?;
                let mut rows = dashboard::run(args.scale, python).await?;
                rows.push(live::run(args.scale).await?);
                ("dashboard", "Dashboard", rows)
            }
        };
        for row in &rows {
            eprintln!("{}", row.line());
        }
        report::update(&args.output, key, title, &rows)?;
    }
    Ok(())
}
