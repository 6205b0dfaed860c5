//! Where edges live, under the results store:
//!
//! ```text
//! attribution/{job_id}/batches/{batch_id}.parquet   one per recorded batch, never rewritten
//! attribution/{job_id}/sealed/{fingerprint}.parquet the deduplicated edge set, content-addressed
//! attribution/{job_id}/seal.json                    the commit marker naming it, with counts
//! attribution/{job_id}/derivation.json              the last derivation's counts and missing paths
//! ```
//!
//! Every object is created with `PutMode::Create`: a batch sent twice, or by two replicas, finds
//! its object already there and changes nothing; two sealers race only on `seal.json`, and the
//! loser adopts the winner's seal. Nothing is ever overwritten except `derivation.json`, which
//! is recomputable.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use modelops_core::ids;
use modelops_core::job::JobId;
use modelops_core::pyjson::{self, PyObject, PyValue};
use modelops_core::store::Store;
use modelops_core::time::{parse_iso, py_isoformat};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::codec;
use crate::edge::{Edge, Kind, Role};
use crate::error::AttributionError;

/// The prefix of all attribution objects.
pub const PREFIX: &str = "attribution";

/// Counts over a job's deduplicated edges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Simulation edges.
    pub sims: u64,
    /// Aggregation edges.
    pub aggs: u64,
    /// Edges the job computed.
    pub computed: u64,
    /// Edges the job found in the cache.
    pub cache_hits: u64,
    /// Edges of unknown role.
    pub unknown: u64,
    /// Expected results with no edge and no directory.
    pub expected_missing: u64,
    /// Simulation edges the job computed.
    pub sims_computed: u64,
    /// Simulation edges the job found in the cache.
    pub sims_cache_hits: u64,
    /// Aggregation edges the job computed.
    pub aggs_computed: u64,
    /// Aggregation edges the job found in the cache.
    pub aggs_cache_hits: u64,
}

impl Counts {
    /// Counts `edges`, with `expected_missing` missing results.
    pub fn of(edges: &[Edge], expected_missing: u64) -> Self {
        let mut counts = Self {
            expected_missing,
            ..Self::default()
        };
        counts.add(edges);
        counts
    }

    /// Adds `edges` to the counts.
    pub fn add(&mut self, edges: &[Edge]) {
        let counts = self;
        for edge in edges {
            match edge.kind {
                Kind::Sim => counts.sims += 1,
                Kind::Agg => counts.aggs += 1,
            }
            match edge.role {
                Role::Computed => counts.computed += 1,
                Role::CacheHit => counts.cache_hits += 1,
                Role::Unknown => counts.unknown += 1,
            }
            match (edge.kind, edge.role) {
                (Kind::Sim, Role::Computed) => counts.sims_computed += 1,
                (Kind::Sim, Role::CacheHit) => counts.sims_cache_hits += 1,
                (Kind::Agg, Role::Computed) => counts.aggs_computed += 1,
                (Kind::Agg, Role::CacheHit) => counts.aggs_cache_hits += 1,
                (_, Role::Unknown) => {}
            }
        }
    }

    fn to_object(self) -> PyObject {
        let mut object = PyObject::new();
        for (key, value) in [
            ("sims", self.sims),
            ("aggs", self.aggs),
            ("computed", self.computed),
            ("cache_hits", self.cache_hits),
            ("unknown", self.unknown),
            ("expected_missing", self.expected_missing),
            ("sims_computed", self.sims_computed),
            ("sims_cache_hits", self.sims_cache_hits),
            ("aggs_computed", self.aggs_computed),
            ("aggs_cache_hits", self.aggs_cache_hits),
        ] {
            object.insert(key, value.into());
        }
        object
    }

    fn from_object(object: &PyObject) -> Self {
        let get = |key: &str| object.get(key).and_then(PyValue::as_u64).unwrap_or(0);
        Self {
            sims: get("sims"),
            aggs: get("aggs"),
            computed: get("computed"),
            cache_hits: get("cache_hits"),
            unknown: get("unknown"),
            expected_missing: get("expected_missing"),
            sims_computed: get("sims_computed"),
            sims_cache_hits: get("sims_cache_hits"),
            aggs_computed: get("aggs_computed"),
            aggs_cache_hits: get("aggs_cache_hits"),
        }
    }
}

/// A job's seal: the commit marker of its deduplicated edge set.
#[derive(Debug, Clone, PartialEq)]
pub struct Seal {
    /// When it was sealed.
    pub sealed_at: DateTime<Utc>,
    /// The sealed edge file, relative to the results store.
    pub edges_file: String,
    /// Counts.
    pub counts: Counts,
    /// How many batches went in.
    pub batches: u64,
    /// Expected but missing result paths (at most [`MAX_MISSING_LISTED`]).
    pub missing_paths: Vec<String>,
}

/// How many missing paths a seal or derivation lists (all are counted).
pub const MAX_MISSING_LISTED: usize = 1000;

/// A derivation's outcome, kept for `GetJobAttribution`.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivationRecord {
    /// When.
    pub derived_at: DateTime<Utc>,
    /// Counts of the derived edges.
    pub counts: Counts,
    /// Expected but missing result paths (at most [`MAX_MISSING_LISTED`]).
    pub missing_paths: Vec<String>,
}

/// Edge storage for every job.
#[derive(Debug, Clone)]
pub struct EdgeStore {
    store: Store,
}

fn job_dir(job: &JobId) -> String {
    format!("{PREFIX}/{job}")
}

/// The error of a seal whose edge file is not in the store.
fn sealed_file_missing(key: &str) -> AttributionError {
    AttributionError::Corrupt {
        key: key.to_owned(),
        reason: "sealed edge file is missing".into(),
    }
}

fn path(text: &str) -> Path {
    Path::from(text)
}

/// The identity of a batch sent without an id: a hash of its edges' content (not of when they
/// were received), so a re-sent batch gets the same id.
pub fn content_batch_id(edges: &[Edge]) -> String {
    let mut text = String::new();
    for e in edges {
        text.push_str(&format!(
            "{}|{}|{}|{}|{}|{}|{}|{}\n",
            e.kind.as_str(),
            e.path,
            e.param_id,
            e.seed.map(|s| s.to_string()).unwrap_or_default(),
            e.target.as_deref().unwrap_or_default(),
            e.aggregation_id.as_deref().unwrap_or_default(),
            e.role.as_str(),
            e.source.as_str()
        ));
    }
    format!("c-{}", ids::blake2b_hex(text.as_bytes(), 16))
}

/// Deduplicates edges by (kind, path), merging repeated reports, in (kind, path) order.
pub fn dedup(edges: impl IntoIterator<Item = Edge>) -> Vec<Edge> {
    let mut edges: Vec<Edge> = edges.into_iter().collect();
    edges.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    let mut merged: Vec<Edge> = Vec::with_capacity(edges.len());
    for edge in edges {
        match merged.last_mut() {
            Some(last) if last.key() == edge.key() => last.merge(&edge),
            _ => merged.push(edge),
        }
    }
    merged
}

impl EdgeStore {
    /// Edge storage in `store` (the results store).
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn create(&self, key: &str, bytes: Bytes) -> Result<bool, AttributionError> {
        match self
            .store
            .object_store
            .put_opts(&path(key), PutPayload::from_bytes(bytes), PutOptions::from(PutMode::Create))
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Bytes>, AttributionError> {
        match self.store.object_store.get(&path(key)).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a batch. Returns false if a batch with this id was already stored (nothing changes).
    pub async fn put_batch(&self, job: &JobId, batch_id: &str, edges: Vec<Edge>) -> Result<bool, AttributionError> {
        let bytes = tokio::task::spawn_blocking(move || codec::to_parquet(&edges))
            .await
            .map_err(|e| AttributionError::InvalidArgument(format!("encoder failed: {e}")))??;
        self.create(&format!("{}/batches/{batch_id}.parquet", job_dir(job)), bytes).await
    }

    /// The ids of a job's stored batches.
    pub async fn batch_ids(&self, job: &JobId) -> Result<Vec<String>, AttributionError> {
        let prefix = path(&format!("{}/batches", job_dir(job)));
        let metas: Vec<_> = self.store.object_store.list(Some(&prefix)).try_collect().await?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".parquet").map(str::to_owned))
            .collect())
    }

    /// Every edge of a job's batches, deduplicated. Batches are read and decoded in parallel.
    pub async fn merged_batches(&self, job: &JobId) -> Result<(Vec<Edge>, u64), AttributionError> {
        let ids = self.batch_ids(job).await?;
        let count = ids.len() as u64;
        let mut reads = tokio::task::JoinSet::new();
        let mut all = Vec::new();
        for id in ids {
            if reads.len() >= 8
                && let Some(done) = reads.join_next().await
            {
                all.extend(done.map_err(|e| AttributionError::InvalidArgument(format!("batch reader failed: {e}")))??);
            }
            let store = self.clone();
            let key = format!("{}/batches/{id}.parquet", job_dir(job));
            reads.spawn(async move {
                match store.read(&key).await? {
                    Some(bytes) => Ok::<_, AttributionError>(tokio::task::spawn_blocking(move || codec::from_parquet(bytes)).await.map_err(|e| AttributionError::InvalidArgument(e.to_string()))??),
                    None => Ok(Vec::new()),
                }
            });
        }
        while let Some(done) = reads.join_next().await {
            all.extend(done.map_err(|e| AttributionError::InvalidArgument(format!("batch reader failed: {e}")))??);
        }
        let merged = tokio::task::spawn_blocking(move || dedup(all)).await.map_err(|e| AttributionError::InvalidArgument(e.to_string()))?;
        Ok((merged, count))
    }

    /// A job's seal, if it was sealed.
    pub async fn seal(&self, job: &JobId) -> Result<Option<Seal>, AttributionError> {
        let key = format!("{}/seal.json", job_dir(job));
        let Some(bytes) = self.read(&key).await? else { return Ok(None) };
        let corrupt = |reason: &str| AttributionError::Corrupt {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let object = match pyjson::parse(&bytes) {
            Ok(PyValue::Object(object)) => object,
            _ => return Err(corrupt("not a JSON object")),
        };
        Ok(Some(Seal {
            sealed_at: object
                .get("sealed_at")
                .and_then(PyValue::as_str)
                .and_then(parse_iso)
                .ok_or_else(|| corrupt("sealed_at"))?,
            edges_file: object
                .get("edges_file")
                .and_then(PyValue::as_str)
                .ok_or_else(|| corrupt("edges_file"))?
                .to_owned(),
            counts: object.get("counts").and_then(PyValue::as_object).map(Counts::from_object).unwrap_or_default(),
            batches: object.get("batches").and_then(PyValue::as_u64).unwrap_or(0),
            missing_paths: strings(object.get("missing_paths")),
        }))
    }

    /// A job's sealed edges.
    pub async fn sealed_edges(&self, job: &JobId, seal: &Seal) -> Result<Vec<Edge>, AttributionError> {
        let key = self.sealed_key(job, seal)?;
        let bytes = self.read(&key).await?.ok_or_else(|| sealed_file_missing(&key))?;
        Ok(codec::from_parquet(bytes)?)
    }

    /// Hands a job's sealed aggregation edges to `visit` in file order, reading the sealed file
    /// by byte ranges, only the columns needed and one batch at a time: a job of a million
    /// edges costs a row group in memory, not the file.
    pub async fn visit_sealed_agg_edges(&self, job: &JobId, seal: &Seal, mut visit: impl FnMut(codec::AggEdgeRef<'_>)) -> Result<(), AttributionError> {
        let mut batches = self.sealed_batches(job, seal, Some(&codec::AGG_EDGE_COLUMNS)).await?;
        while let Some(batch) = batches.try_next().await.map_err(codec::CodecError::from)? {
            codec::visit_agg_edges(&batch, &mut visit)?;
        }
        Ok(())
    }

    /// A job's sealed edges in file order, `batch_size` at most at a time, read as
    /// [`EdgeStore::visit_sealed_agg_edges`] reads them: a row group in memory, not the file.
    pub async fn sealed_edge_batches(&self, job: &JobId, seal: &Seal, batch_size: usize) -> Result<futures::stream::BoxStream<'static, Result<Vec<Edge>, AttributionError>>, AttributionError> {
        use futures::StreamExt as _;
        let batches = self.sealed_batches(job, seal, None).await?;
        let batches = batches.map(move |batch| Ok::<_, AttributionError>(codec::edges_of(&batch.map_err(codec::CodecError::from)?)?));
        Ok(batches
            .map_ok(move |edges: Vec<Edge>| futures::stream::iter(edges.chunks(batch_size.max(1)).map(|chunk| Ok(chunk.to_vec())).collect::<Vec<_>>()))
            .try_flatten()
            .boxed())
    }

    /// The sealed file's record batches (of 8,192 rows), with only `columns` when given.
    async fn sealed_batches(&self, job: &JobId, seal: &Seal, columns: Option<&[&str]>) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<modelops_core::parquet_file::ParquetObject>, AttributionError> {
        use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
        let key = self.sealed_key(job, seal)?;
        let meta = match self.store.object_store.head(&path(&key)).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Err(sealed_file_missing(&key)),
            Err(e) => return Err(e.into()),
        };
        let reader = modelops_core::parquet_file::ParquetObject::new(std::sync::Arc::clone(&self.store.object_store), meta.location, meta.size);
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(codec::CodecError::from)?;
        if let Some(columns) = columns {
            let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
            builder = builder.with_projection(mask);
        }
        Ok(builder.with_batch_size(8192).build().map_err(codec::CodecError::from)?)
    }

    /// The key of a job's sealed edge file, checked to be inside the job's directory.
    fn sealed_key(&self, job: &JobId, seal: &Seal) -> Result<String, AttributionError> {
        let expected = format!("{}/sealed/", job_dir(job));
        // Checked by segments: a job id may hold `..` (`v1..2`), a segment may not be `..`.
        let escapes = |key: &str| key.split('/').any(|segment| segment.is_empty() || segment == "." || segment == "..");
        if !seal.edges_file.starts_with(&expected) || escapes(&seal.edges_file) {
            return Err(AttributionError::Corrupt {
                key: format!("{}/seal.json", job_dir(job)),
                reason: format!("edges_file {:?} is outside {expected}", seal.edges_file),
            });
        }
        Ok(seal.edges_file.clone())
    }

    /// Seals a job with `edges` (already deduplicated). Returns the seal in force and whether
    /// this call made it (false: another sealer got there first, and its seal is returned).
    pub async fn write_seal(&self, job: &JobId, edges: &[Edge], batches: u64, missing: &[String]) -> Result<(Seal, bool), AttributionError> {
        let bytes = cpu_bound(|| codec::to_parquet(edges))?;
        let edges_file = format!("{}/sealed/{}.parquet", job_dir(job), ids::blake2b_hex(&bytes, 16));
        self.create(&edges_file, bytes).await?;
        let seal = Seal {
            sealed_at: crate::edge::now(),
            edges_file,
            counts: Counts::of(edges, missing.len() as u64),
            batches,
            missing_paths: missing.iter().take(MAX_MISSING_LISTED).cloned().collect(),
        };
        let mut object = PyObject::new();
        object.insert("job_id", job.as_str().into());
        object.insert("sealed_at", py_isoformat(seal.sealed_at).into());
        object.insert("edges_file", seal.edges_file.as_str().into());
        object.insert("edges", (edges.len() as u64).into());
        object.insert("batches", batches.into());
        object.insert("counts", PyValue::Object(seal.counts.to_object()));
        object.insert("missing_paths", PyValue::List(seal.missing_paths.iter().map(|p| p.as_str().into()).collect()));
        let json = Bytes::from(pyjson::to_indent2(&PyValue::Object(object)));
        if self.create(&format!("{}/seal.json", job_dir(job)), json).await? {
            return Ok((seal, true));
        }
        let winner = self.seal(job).await?.ok_or_else(|| AttributionError::Corrupt {
            key: format!("{}/seal.json", job_dir(job)),
            reason: "vanished after a conflicting create".into(),
        })?;
        Ok((winner, false))
    }

    /// Records a derivation's outcome (replacing the previous one).
    pub async fn put_derivation(&self, job: &JobId, record: &DerivationRecord) -> Result<(), AttributionError> {
        let mut object = PyObject::new();
        object.insert("job_id", job.as_str().into());
        object.insert("derived_at", py_isoformat(record.derived_at).into());
        object.insert("counts", PyValue::Object(record.counts.to_object()));
        object.insert("missing_paths", PyValue::List(record.missing_paths.iter().map(|p| p.as_str().into()).collect()));
        let bytes = Bytes::from(pyjson::to_indent2(&PyValue::Object(object)));
        self.store
            .object_store
            .put(&path(&format!("{}/derivation.json", job_dir(job))), PutPayload::from_bytes(bytes))
            .await?;
        Ok(())
    }

    /// The last derivation's outcome, if any.
    pub async fn derivation(&self, job: &JobId) -> Result<Option<DerivationRecord>, AttributionError> {
        let Some(bytes) = self.read(&format!("{}/derivation.json", job_dir(job))).await? else { return Ok(None) };
        let Ok(PyValue::Object(object)) = pyjson::parse(&bytes) else { return Ok(None) };
        Ok(Some(DerivationRecord {
            derived_at: object.get("derived_at").and_then(PyValue::as_str).and_then(parse_iso).unwrap_or_default(),
            counts: object.get("counts").and_then(PyValue::as_object).map(Counts::from_object).unwrap_or_default(),
            missing_paths: strings(object.get("missing_paths")),
        }))
    }

    /// Every job with a seal.
    pub async fn sealed_jobs(&self) -> Result<Vec<JobId>, AttributionError> {
        let metas: Vec<_> = self.store.object_store.list(Some(&path(PREFIX))).try_collect().await?;
        Ok(metas
            .iter()
            .filter(|m| m.location.filename() == Some("seal.json"))
            .filter_map(|m| m.location.parts().nth(1).and_then(|p| JobId::new(p.as_ref()).ok()))
            .collect())
    }
}

/// Runs CPU-heavy work without stalling other tasks: on a multi-threaded runtime the worker hands
/// its other tasks off first; on a single-threaded one (tests) it just runs.
fn cpu_bound<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

fn strings(value: Option<&PyValue>) -> Vec<String> {
    value
        .and_then(PyValue::as_list)
        .map(|items| items.iter().filter_map(PyValue::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}
