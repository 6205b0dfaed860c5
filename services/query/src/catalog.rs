//! The catalog: what the query service knows of every indexed job without scanning its table.
//!
//! An entry comes from the job's `manifest.json` alone (the commit marker: bundle, counts, loss
//! range, and its `table` facts: the Arrow schema, the `computed_at` range, per target the
//! counts, loss range and best losses). Manifests written before those facts also need the
//! job's `summary.json`, the footer of its `losses.parquet` and the sizes of its files, as the
//! catalog read every job before. Queries prune whole jobs on these before any scan. An entry
//! holds no footer and shares its schema with every job of the same columns, so tens of
//! thousands of jobs cost a few KB each. The catalog refreshes itself by listing `results/` (one
//! listing, then only changed manifests are read), and a job asked for by id that it does not
//! know yet is looked up at once, so a newly indexed job is visible without a restart. It also
//! knows the compacted parts of small jobs ([`crate::parts`]) from their manifests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use modelops_core::job::JobId;
use modelops_core::loss_table::{self, MANIFEST_FILE, Manifest, RESULTS_PREFIX, Summary, TableFacts};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::file::statistics::Statistics;
use tokio_util::sync::CancellationToken;

use crate::error::QueryError;
use crate::footers::FooterCache;
use crate::parts::{Part, Parts};
use modelops_core::compacted::{PartManifest, compacted_prefix, part_id_of_manifest};
use modelops_core::parquet_file::ParquetObject;

/// Per-target figures from a job's `summary.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSummary {
    /// The target entrypoint (one value shared by every job of the same target).
    pub target: Arc<str>,
    /// Rows for this target.
    pub count: u64,
    /// Rows with a loss.
    pub ok: u64,
    /// Lowest loss, if any row is ok.
    pub min_loss: Option<f64>,
    /// Highest loss, if any row is ok.
    pub max_loss: Option<f64>,
    /// The lowest losses, ascending, each with a 64-bit hash of its parameter-set id ([`set_key`]):
    /// the summary's best rows, enough to rank sets across jobs without keeping their ids.
    pub best: Vec<(u64, f64)>,
}

/// The key a parameter-set id is kept under in [`TargetSummary::best`]. Two ids sharing a key
/// (about one chance in 10⁹ among 200,000 sets) would only make best-parameter queries prune
/// fewer jobs, never answer differently.
pub fn set_key(param_id: &str) -> u64 {
    hash64(param_id)
}

/// A 64-bit hash of `value`, stable within a process: the catalog's keys of parameter sets, job
/// ids and table versions.
pub fn hash64<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// One indexed job as the catalog knows it.
#[derive(Debug, Clone)]
pub struct JobEntry {
    /// The job.
    pub job_id: String,
    /// The job's bundle ref (`sha256:…`; one value shared by every job of the bundle).
    pub bundle_digest: Arc<str>,
    /// Rows in all, ok, missing and failed.
    pub counts: [u64; 4],
    /// Lowest and highest loss over all targets.
    pub min_loss: Option<f64>,
    /// See `min_loss`.
    pub max_loss: Option<f64>,
    /// Earliest and latest `computed_at` (µs since the epoch), from the table's statistics.
    pub computed_at_range: Option<(i64, i64)>,
    /// When the table was committed (RFC 3339).
    pub indexed_at: Box<str>,
    /// The table's schema version.
    pub schema_version: u64,
    /// Per target, in spec order.
    pub targets: Vec<TargetSummary>,
    /// The table's Arrow schema (one value shared by every job with the same schema).
    pub schema: SchemaRef,
    /// The table version the manifest names and its size (`last_modified` is the manifest's;
    /// no e-tag when the manifest gave the size).
    pub table: ObjectMeta,
    /// Size of the table in bytes.
    pub table_bytes: u64,
    /// The job's per-replicate table, when its manifest names one (`files.replicates`); boxed,
    /// as most jobs have none and every entry would carry its room.
    pub replicates: Option<Box<ReplicatesTable>>,
    /// A hash of the manifest's listing metadata when read (to notice a re-index).
    manifest_version: u64,
}

impl JobEntry {
    /// The summary of `target`, matched as [`target_matches`] does.
    pub fn target(&self, wanted: &str) -> Option<&TargetSummary> {
        self.targets.iter().find(|t| target_matches(&t.target, wanted))
    }

    /// True when the job is of the bundle `wanted`: the full ref, its digest hex, or a prefix of
    /// at least 12 hex digits of it.
    pub fn is_of_bundle(&self, wanted: &str) -> bool {
        bundle_matches(&self.bundle_digest, wanted)
    }
}

/// A job's per-replicate table (`replicates.parquet`, one row per replicate loss).
#[derive(Debug, Clone)]
pub struct ReplicatesTable {
    /// The committed version the manifest names, and its size.
    pub file: ObjectMeta,
    /// Its rows, from the manifest.
    pub rows: u64,
}

/// True when a row's `target` entrypoint is the `wanted` one: equal, or `wanted` is the name
/// after its last `:` or `/` (`prevalence_target` for `targets.prev:prevalence_target`,
/// `deaths_target` for `targets.deaths/deaths_target`).
pub fn target_matches(target: &str, wanted: &str) -> bool {
    target == wanted || target.rsplit_once([':', '/']).is_some_and(|(_, name)| name == wanted)
}

/// True when the bundle ref `bundle` is the `wanted` one (full ref, digest hex, or a hex prefix
/// of at least 12 digits).
pub fn bundle_matches(bundle: &str, wanted: &str) -> bool {
    if bundle == wanted {
        return true;
    }
    let hex = bundle.rsplit_once(':').map_or(bundle, |(_, hex)| hex);
    let wanted_hex = wanted.rsplit_once(':').map_or(wanted, |(_, hex)| hex);
    wanted_hex.len() >= 12 && hex.starts_with(wanted_hex)
}

/// Every indexed job, kept current from the results store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    entries: Arc<RwLock<BTreeMap<String, Arc<JobEntry>>>>,
    /// Every distinct table schema, by its encoding (`ARROW:schema`): jobs share them.
    schemas: Arc<Mutex<HashMap<String, SchemaRef>>>,
    /// Every distinct bundle ref and target name: jobs share them.
    strings: Arc<Mutex<std::collections::HashSet<Arc<str>>>>,
    /// Footers of the large tables read lately.
    footers: FooterCache,
    /// The compacted parts, and which jobs they stand for.
    parts: Arc<RwLock<Parts>>,
}

/// Manifests the catalog reads at once. Through a cloud store (10 ms a request) 20,000 jobs take
/// about 12 s; 64 at once would take 3 s, but over local files each read is a blocking thread,
/// and 64 of them left the process 60 MB larger after start-up.
const CATALOG_READS_AT_ONCE: usize = 16;

/// A refresh that took `d` waits at least this many times `d` for the next.
const REFRESH_WAIT_FACTOR: u32 = 5;

/// A hash of a manifest's e-tag, modification time and size: two versions sharing one (one
/// chance in 2⁶⁴) would only delay the reload of a re-indexed job to its next change.
fn version_of(meta: &ObjectMeta) -> u64 {
    hash64(&(meta.e_tag.as_deref(), meta.last_modified.timestamp_micros(), meta.size))
}

impl Catalog {
    /// An empty catalog over the results store; call [`Catalog::refresh`] or
    /// [`Catalog::start`] to fill it.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            entries: Arc::default(),
            schemas: Arc::default(),
            strings: Arc::default(),
            footers: FooterCache::default(),
            parts: Arc::default(),
        }
    }

    /// The compacted parts known, and which jobs they stand for.
    pub fn parts(&self) -> std::sync::RwLockReadGuard<'_, Parts> {
        self.parts.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the manifests of the compacted parts listed as `listed` that the catalog does not
    /// know yet, and forgets those no longer listed. A part whose manifest cannot be read or
    /// does not hold together is left out (logged): its members are read from their own tables.
    async fn load_parts(&self, listed: Vec<ObjectMeta>) {
        let ids: std::collections::HashSet<String> = listed.iter().filter_map(|meta| part_id_of_manifest(meta.location.as_ref()).map(str::to_owned)).collect();
        let gone: Vec<String> = self.parts().ids().into_iter().filter(|id| !ids.contains(id)).collect();
        for id in gone {
            self.parts.write().unwrap_or_else(std::sync::PoisonError::into_inner).forget(&id);
        }
        for meta in listed {
            let Some(id) = part_id_of_manifest(meta.location.as_ref()) else { continue };
            if self.parts().knows(id) {
                continue;
            }
            match self.read_part(id, &meta).await {
                Ok((part, manifest)) => self.parts.write().unwrap_or_else(std::sync::PoisonError::into_inner).add(part, &manifest),
                Err(error) => tracing::warn!(part = id, %error, "catalog: a compacted part is left out; its jobs are read from their own tables"),
            }
        }
    }

    /// Part `id`'s manifest, listed as `meta`, read and checked.
    async fn read_part(&self, id: &str, meta: &ObjectMeta) -> Result<(Part, PartManifest), QueryError> {
        let manifest = read(self.store.as_ref(), &meta.location, PartManifest::from_json_bytes).await?;
        // The rows must be there, of the size the manifest gives, before any job is read from
        // them: a part cut short or lying is left out, not a failure of every query over its jobs.
        let rows = self.store.head(&Path::from(modelops_core::compacted::part_rows_file(id))).await?;
        if rows.size != manifest.rows_bytes {
            return Err(QueryError::Catalog(format!("{}: {} bytes, the part's manifest gives {}", rows.location, rows.size, manifest.rows_bytes)));
        }
        let part = Part {
            id: id.to_owned(),
            file: crate::parts::rows_file(id, &manifest, meta.last_modified),
            schema: self.schema_of(&manifest.arrow_schema)?,
            bundle_digest: self.shared(manifest.bundle_digest.clone()),
            members: manifest.members.len(),
            rows: manifest.rows,
        };
        Ok((part, manifest))
    }

    /// Lists the compacted parts and reads those not known yet.
    pub async fn refresh_parts(&self) -> Result<(), QueryError> {
        let listed: Vec<ObjectMeta> = self.store.list(Some(&Path::from(compacted_prefix()))).try_collect().await?;
        self.load_parts(listed).await;
        Ok(())
    }

    /// The same catalog, opening tables through `footers`.
    pub fn with_footers(mut self, footers: FooterCache) -> Self {
        self.footers = footers;
        self
    }

    /// The results store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The footers of large tables read lately, for opening tables to decode.
    pub fn footers(&self) -> &FooterCache {
        &self.footers
    }

    /// The one shared value of `text` (a bundle ref, a target name).
    fn shared(&self, text: String) -> Arc<str> {
        let mut strings = self.strings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(shared) = strings.get(text.as_str()) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = text.into();
        strings.insert(Arc::clone(&shared));
        shared
    }

    /// The one shared value of the schema encoded as `encoded` (Parquet's `ARROW:schema`),
    /// decoded the first time it is seen.
    fn schema_of(&self, encoded: &str) -> Result<SchemaRef, QueryError> {
        if let Some(schema) = self.schemas.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(encoded) {
            return Ok(Arc::clone(schema));
        }
        let schema = Arc::new(decode_arrow_schema(encoded)?);
        let mut schemas = self.schemas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Arc::clone(schemas.entry(encoded.to_owned()).or_insert(schema)))
    }

    /// Every known job, by id.
    pub fn jobs(&self) -> Vec<Arc<JobEntry>> {
        self.entries.read().expect("catalog lock").values().cloned().collect()
    }

    /// The entry of `job` if the catalog knows it (no lookup in the store).
    pub fn known(&self, job: &str) -> Option<Arc<JobEntry>> {
        self.entries.read().expect("catalog lock").get(job).cloned()
    }

    /// The entry of `job`, looked up in the store if the catalog does not know it yet.
    pub async fn job(&self, job: &str) -> Result<Arc<JobEntry>, QueryError> {
        if let Some(entry) = self.entries.read().expect("catalog lock").get(job) {
            return Ok(Arc::clone(entry));
        }
        let id = JobId::new(job).map_err(|e| QueryError::invalid("job_id", e.to_string()))?;
        let entry = Arc::new(self.fetch(&id).await?.ok_or_else(|| QueryError::JobNotFound(job.to_owned()))?);
        self.entries.write().expect("catalog lock").insert(job.to_owned(), Arc::clone(&entry));
        Ok(entry)
    }

    /// Reads `job`'s entry from the store; `None` when it has no committed table.
    async fn fetch(&self, job: &JobId) -> Result<Option<JobEntry>, QueryError> {
        let path = Path::from(loss_table::results_file(job, MANIFEST_FILE));
        let read = match self.store.get(&path).await {
            Ok(read) => read,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The version is the one of the bytes read, so a refresh notices any later change.
        let meta = read.meta.clone();
        if meta.size > MAX_CATALOG_FILE_BYTES {
            return Err(too_large(&path, meta.size));
        }
        let bytes = read.bytes().await?;
        let manifest = Manifest::from_json_bytes(&bytes).map_err(|e| QueryError::Catalog(format!("{path}: {e}")))?;
        self.load(job, &meta, manifest).await.map(Some)
    }

    /// Reads every job's manifest straight from its directory: one listing of the job
    /// directories under `results/`, then one read per job. What the service does before it
    /// first answers: a store holds five files or more per job, which [`Catalog::refresh`]
    /// lists every time. The compacted parts are read first. Returns how many jobs were loaded.
    pub async fn load_all(&self) -> Result<usize, QueryError> {
        let listed = self.store.list_with_delimiter(Some(&Path::from(RESULTS_PREFIX))).await?;
        let jobs: Vec<JobId> = listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.parts().next_back().and_then(|name| JobId::new(name.as_ref()).ok()))
            .collect();
        // The parts first: read after the jobs' manifests, their larger manifests left the
        // process about 150 MB larger at 100,000 jobs (freed memory the allocator's many
        // reader threads kept), against 18 MB read first.
        self.refresh_parts().await?;
        let loaded = self.load_jobs(jobs).await?;
        self.forget_gone_members();
        self.forget_unheld();
        Ok(loaded)
    }

    /// Reads the entries of `jobs` again, several at once, each parsed in a task of its own so
    /// every core parses; forgets those whose manifest is gone. Returns how many were loaded.
    async fn load_jobs(&self, jobs: Vec<JobId>) -> Result<usize, QueryError> {
        let mut loads = futures::stream::iter(jobs)
            .map(|job| {
                let catalog = self.clone();
                tokio::spawn(async move {
                    let entry = catalog.fetch(&job).await;
                    (job, entry)
                })
            })
            .buffer_unordered(CATALOG_READS_AT_ONCE);
        let mut loaded = 0;
        while let Some(finished) = loads.next().await {
            let (job, entry) = finished.map_err(|e| QueryError::Catalog(format!("a catalog load task failed: {e}")))?;
            match entry {
                Ok(Some(entry)) => {
                    self.entries.write().expect("catalog lock").insert(job.as_str().to_owned(), Arc::new(entry));
                    loaded += 1;
                }
                Ok(None) => {
                    self.entries.write().expect("catalog lock").remove(job.as_str());
                }
                // A job being re-indexed right now may be briefly inconsistent; next round.
                Err(error) => tracing::warn!(%job, %error, "catalog: cannot read an indexed job; will retry"),
            }
        }
        Ok(loaded)
    }

    /// Forgets the parts' members that are no known job, and the parts left without any. The
    /// two locks are never held together.
    fn forget_gone_members(&self) {
        let known: std::collections::HashSet<u64> = self.entries.read().expect("catalog lock").keys().map(|job| crate::parts::job_hash(job)).collect();
        self.parts.write().unwrap_or_else(std::sync::PoisonError::into_inner).keep_jobs(&known);
    }

    /// Forgets the schemas, bundle refs and target names no job holds any more.
    fn forget_unheld(&self) {
        self.schemas.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, schema| Arc::strong_count(schema) > 1);
        self.strings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|text| Arc::strong_count(text) > 1);
    }

    /// Reads `job`'s entry again now (after it was indexed or re-indexed); forgets it if its
    /// manifest is gone. Failures are logged: the next refresh tries again.
    #[tracing::instrument(name = "catalog_reload", skip(self))]
    pub async fn reload(&self, job: &str) {
        let Ok(id) = JobId::new(job) else { return };
        let loaded = self.fetch(&id).await;
        let mut entries = self.entries.write().expect("catalog lock");
        match loaded {
            Ok(Some(entry)) => {
                entries.insert(job.to_owned(), Arc::new(entry));
            }
            Ok(None) => {
                entries.remove(job);
            }
            Err(error) => tracing::warn!(%job, %error, "catalog: cannot read a newly indexed job; the next refresh will"),
        }
    }

    /// Lists `results/` once and reads the manifests that are new or changed; forgets jobs whose
    /// manifest is gone. Returns how many entries were (re)loaded.
    pub async fn refresh(&self) -> Result<usize, QueryError> {
        let prefix = Path::from(RESULTS_PREFIX);
        // Only the manifests are kept from the listing (a job has five files or more).
        let mut manifests = BTreeMap::new();
        let mut part_manifests = Vec::new();
        let mut listed = self.store.list(Some(&prefix));
        while let Some(meta) = listed.try_next().await? {
            if part_id_of_manifest(meta.location.as_ref()).is_some() {
                part_manifests.push(meta);
                continue;
            }
            let mut parts = meta.location.parts();
            let (Some(_), Some(job), Some(file), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
            if file.as_ref() == MANIFEST_FILE
                && let Ok(job) = JobId::new(job.as_ref())
            {
                manifests.insert(job.as_str().to_owned(), (job, meta));
            }
        }
        let stale: Vec<JobId> = {
            let entries = self.entries.read().expect("catalog lock");
            manifests
                .iter()
                .filter(|(job, (_, meta))| entries.get(*job).is_none_or(|e| e.manifest_version != version_of(meta)))
                .map(|(_, (job, _))| job.clone())
                .collect()
        };
        let loaded = self.load_jobs(stale).await?;
        self.entries.write().expect("catalog lock").retain(|job, _| manifests.contains_key(job));
        self.load_parts(part_manifests).await;
        self.forget_gone_members();
        self.forget_unheld();
        Ok(loaded)
    }

    /// Refreshes every `interval` until `stop` is cancelled (call [`Catalog::load_all`] once
    /// first, so the service never answers before it knows the jobs). A refresh that took `d`
    /// waits at least `5 × d` for the next: listing a store of 100,000 jobs takes about a second,
    /// which every two seconds would keep a core a third busy.
    pub fn start(&self, interval: Duration, stop: CancellationToken, tracker: &tokio_util::task::TaskTracker) {
        let catalog = self.clone();
        tracker.spawn(async move {
            let mut wait = interval;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                let started = std::time::Instant::now();
                let refreshed = catalog.refresh().await;
                wait = interval.max(started.elapsed() * REFRESH_WAIT_FACTOR);
                match refreshed {
                    Ok(0) => {}
                    Ok(loaded) => tracing::debug!(loaded, jobs = catalog.entries.read().expect("catalog lock").len(), "catalog refreshed"),
                    Err(error) => tracing::warn!(%error, "catalog refresh failed"),
                }
            }
        });
    }

    /// `job`'s entry from its `manifest` (whose listing or read metadata is `manifest_meta`),
    /// reading what a manifest from before the table facts leaves out.
    async fn load(&self, job: &JobId, manifest_meta: &ObjectMeta, mut manifest: Manifest) -> Result<JobEntry, QueryError> {
        // The files the manifest names are the ones committed with it (immutable versions);
        // manifests from before versions name the seed's paths.
        let table_path = Path::from(loss_table::results_file(job, &manifest.files.losses));
        let facts = match manifest.table.take() {
            Some(facts) if manifest.files.losses_bytes > 0 => {
                let table = ObjectMeta {
                    location: table_path,
                    last_modified: manifest_meta.last_modified,
                    size: manifest.files.losses_bytes,
                    e_tag: None,
                    version: None,
                };
                let schema = self.schema_of(&facts.arrow_schema)?;
                Facts::from_manifest(facts, table, schema, |name| self.shared(name))
            }
            _ => self.facts_from_files(job, &manifest, table_path).await?,
        };
        let replicates = match &manifest.files.replicates {
            Some(name) => {
                let location = Path::from(loss_table::results_file(job, name));
                let file = match manifest.files.replicates_bytes {
                    Some(size) => ObjectMeta {
                        location,
                        last_modified: manifest_meta.last_modified,
                        size,
                        e_tag: None,
                        version: None,
                    },
                    None => self.store.head(&location).await?,
                };
                Some(Box::new(ReplicatesTable {
                    rows: manifest.files.replicates_rows.unwrap_or(0),
                    file,
                }))
            }
            None => None,
        };
        let counts = manifest.counts;
        Ok(JobEntry {
            job_id: job.as_str().to_owned(),
            bundle_digest: self.shared(manifest.bundle_digest),
            counts: [counts.total, counts.ok, counts.missing, counts.failed],
            min_loss: manifest.min_loss,
            max_loss: manifest.max_loss,
            computed_at_range: facts.computed_at_range,
            indexed_at: manifest.indexed_at.into(),
            schema_version: manifest.schema_version,
            targets: facts.targets,
            schema: facts.schema,
            table_bytes: facts.table.size,
            table: facts.table,
            replicates,
            manifest_version: version_of(manifest_meta),
        })
    }

    /// What a manifest without `table` facts (or sizes) leaves to read: the summary, the
    /// table's size and its footer.
    async fn facts_from_files(&self, job: &JobId, manifest: &Manifest, table_path: Path) -> Result<Facts, QueryError> {
        let summary_path = Path::from(loss_table::results_file(job, &manifest.files.summary));
        let summary = read(self.store.as_ref(), &summary_path, Summary::from_json_bytes).await?;
        let table = self.store.head(&table_path).await?;
        let mut reader = ParquetObject::new(Arc::clone(&self.store), table_path, table.size);
        let footer = parquet::arrow::arrow_reader::ArrowReaderMetadata::load_async(&mut reader, Default::default()).await?;
        let encoded = parquet::arrow::encode_arrow_schema(footer.schema());
        let schema = match self.schemas.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(encoded) {
            std::collections::hash_map::Entry::Occupied(shared) if shared.get() == footer.schema() => Arc::clone(shared.get()),
            std::collections::hash_map::Entry::Occupied(_) => Arc::clone(footer.schema()),
            std::collections::hash_map::Entry::Vacant(new) => Arc::clone(new.insert(Arc::clone(footer.schema()))),
        };
        let metadata = footer.metadata();
        let computed_at_range = schema.index_of("computed_at").ok().and_then(|column| {
            metadata
                .row_groups()
                .iter()
                .filter_map(|group| match group.column(column).statistics() {
                    Some(Statistics::Int64(stats)) => Some((*stats.min_opt()?, *stats.max_opt()?)),
                    _ => None,
                })
                .reduce(|(lo, hi), (l, h)| (lo.min(l), hi.max(h)))
        });
        let targets = summary
            .targets
            .0
            .into_iter()
            .map(|(target, figures)| TargetSummary {
                target: self.shared(target),
                count: figures.count,
                ok: figures.ok,
                min_loss: figures.min_loss,
                max_loss: figures.max_loss,
                best: figures.best.iter().map(|best| (set_key(&best.param_id), best.loss)).collect(),
            })
            .collect();
        Ok(Facts {
            schema,
            table,
            computed_at_range,
            targets,
        })
    }
}

/// What an entry knows of its table beyond the manifest's common fields.
struct Facts {
    schema: SchemaRef,
    table: ObjectMeta,
    computed_at_range: Option<(i64, i64)>,
    targets: Vec<TargetSummary>,
}

impl Facts {
    fn from_manifest(facts: TableFacts, table: ObjectMeta, schema: SchemaRef, shared: impl Fn(String) -> Arc<str>) -> Self {
        let targets = facts
            .targets
            .into_iter()
            .map(|target| TargetSummary {
                target: shared(target.target),
                count: target.counts.total,
                ok: target.counts.ok,
                min_loss: target.min_loss,
                max_loss: target.max_loss,
                best: target.best.iter().map(|best| (set_key(&best.param_id), best.loss)).collect(),
            })
            .collect();
        Self {
            schema,
            table,
            computed_at_range: facts.computed_at.map(|[first, last]| (first, last)),
            targets,
        }
    }
}

/// Decodes a schema as Parquet's `ARROW:schema` key holds it: base64 of an Arrow IPC schema
/// message (after the continuation marker and length, or without them as older writers wrote).
fn decode_arrow_schema(encoded: &str) -> Result<arrow::datatypes::Schema, QueryError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| QueryError::Catalog(format!("the manifest's table schema is not base64: {e}")))?;
    arrow::ipc::convert::try_schema_from_ipc_buffer(&bytes).map_err(|e| QueryError::Catalog(format!("the manifest's table schema is not an Arrow schema: {e}")))
}

/// The largest manifest or summary the catalog reads: a manifest lists at most a few hundred
/// errors and a summary ten rows per target, so a larger file is not one (and is not held).
const MAX_CATALOG_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The error of a manifest or summary of `size` bytes, over [`MAX_CATALOG_FILE_BYTES`].
fn too_large(path: &Path, size: u64) -> QueryError {
    QueryError::Catalog(format!("{path}: {size} bytes, more than the {MAX_CATALOG_FILE_BYTES} a manifest or summary may have"))
}

/// Reads the file at `path` (a summary, a part's manifest) with `parse`, naming the file when it
/// is not one.
async fn read<T, E: std::fmt::Display>(store: &dyn ObjectStore, path: &Path, parse: impl FnOnce(&[u8]) -> Result<T, E>) -> Result<T, QueryError> {
    let bytes = match modelops_core::records::read_bounded(store, path, MAX_CATALOG_FILE_BYTES).await? {
        modelops_core::records::BoundedRead::Bytes(bytes) => bytes,
        modelops_core::records::BoundedRead::TooLarge(size) => return Err(too_large(path, size)),
        modelops_core::records::BoundedRead::Absent => return Err(QueryError::Catalog(format!("{path}: named by the manifest but not there"))),
        modelops_core::records::BoundedRead::Refused(why) => return Err(QueryError::Catalog(format!("{path}: cannot be read ({why})"))),
    };
    parse(&bytes).map_err(|e| QueryError::Catalog(format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_by_entrypoint_or_name() {
        assert!(target_matches("targets.prev:prevalence_target", "targets.prev:prevalence_target"));
        assert!(target_matches("targets.prev:prevalence_target", "prevalence_target"));
        assert!(!target_matches("targets.prev:prevalence_target", "prevalence"));
        assert!(!target_matches("targets.prev:prevalence_target", "targets.prev"));
        assert!(target_matches("model/targets:t", "t"));
        assert!(target_matches("targets.deaths/deaths_target", "deaths_target"), "the module/function form too");
        assert!(!target_matches("targets.deaths/deaths_target", "targets.deaths"));
    }

    #[test]
    fn bundles_match_by_ref_hex_or_long_prefix() {
        let bundle = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert!(bundle_matches(bundle, bundle));
        assert!(bundle_matches(bundle, &bundle[7..]));
        assert!(bundle_matches(bundle, "0123456789ab"));
        assert!(bundle_matches(bundle, "sha256:0123456789ab"));
        assert!(!bundle_matches(bundle, "0123456789a"), "a prefix shorter than 12 hex digits is too ambiguous");
        assert!(!bundle_matches(bundle, "123456789abc"));
    }
}
