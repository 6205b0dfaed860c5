//! `modelops.attribution.v1.Attribution` over an [`Attribution`]: conversions and streaming only.

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use modelops_core::job::JobId;
use modelops_core::paths::ProvenanceSchema;
use modelops_proto::attribution::v1 as pb;
use modelops_proto::attribution::v1::attribution_server::{Attribution as AttributionApi, AttributionServer};
use tonic::{Request, Response, Status, Streaming};

use crate::attribution::Attribution;
use crate::edge::{Edge, Kind, Role, Source};
use crate::error::AttributionError;
use crate::store::Counts;

/// The fully-qualified service name, for health and reflection.
pub const SERVICE_NAME: &str = "modelops.attribution.v1.Attribution";

/// Edges per `ListJobResults` message.
const EDGES_PER_MESSAGE: usize = 1000;

/// The gRPC face of attribution.
#[derive(Debug, Clone)]
pub struct AttributionService {
    attribution: Attribution,
}

impl AttributionService {
    /// Serves `attribution`.
    pub fn new(attribution: Attribution) -> Self {
        Self { attribution }
    }

    /// The tonic server for this service, taking and sending messages of up to
    /// `max_message_bytes` (edge batches).
    pub fn into_server(self, max_message_bytes: usize) -> AttributionServer<Self> {
        AttributionServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

/// Serves `attribution` alone on a loopback port until `shutdown`, and returns a client of it:
/// attribution as another process would reach it, for tests and benchmarks of the services that
/// call it over gRPC.
pub async fn serve_on_loopback(attribution: Attribution, shutdown: tokio_util::sync::CancellationToken) -> std::io::Result<modelops_attribution_client::GrpcAttribution> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let service = AttributionService::new(attribution).into_server(64 * 1024 * 1024);
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
        {
            tracing::warn!(%error, "attribution server failed");
        }
    });
    modelops_attribution_client::GrpcAttribution::connect_lazy(&endpoint, None, 64 * 1024 * 1024).map_err(std::io::Error::other)
}

fn job_id(id: &str) -> Result<JobId, AttributionError> {
    Ok(JobId::new(id)?)
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn kind_to_proto(kind: Kind) -> pb::ResultKind {
    match kind {
        Kind::Sim => pb::ResultKind::Sim,
        Kind::Agg => pb::ResultKind::Agg,
    }
}

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Computed => pb::Role::Computed,
        Role::CacheHit => pb::Role::CacheHit,
        Role::Unknown => pb::Role::Unknown,
    }
}

fn source_to_proto(source: Source) -> pb::EdgeSource {
    match source {
        Source::Reported => pb::EdgeSource::Reported,
        Source::Derived => pb::EdgeSource::Derived,
    }
}

/// Converts an edge to its message.
pub fn edge_to_proto(edge: &Edge) -> pb::Edge {
    pb::Edge {
        job_id: edge.job_id.to_string(),
        kind: kind_to_proto(edge.kind).into(),
        path: edge.path.clone(),
        param_id: edge.param_id.clone(),
        seed: edge.seed,
        target: edge.target.clone(),
        aggregation_id: edge.aggregation_id.clone(),
        role: role_to_proto(edge.role).into(),
        source: source_to_proto(edge.source).into(),
        recorded_at: Some(timestamp(edge.recorded_at)),
    }
}

fn edge_from_proto(edge: pb::Edge, batch_job: &JobId, index: usize, now: DateTime<Utc>) -> Result<Edge, AttributionError> {
    let invalid = |reason: &str| AttributionError::InvalidArgument(format!("edge {index}: {reason}"));
    let kind = match pb::ResultKind::try_from(edge.kind) {
        Ok(pb::ResultKind::Sim) => Kind::Sim,
        Ok(pb::ResultKind::Agg) => Kind::Agg,
        _ => return Err(invalid("kind must be SIM or AGG")),
    };
    let role = match pb::Role::try_from(edge.role) {
        Ok(pb::Role::Computed) => Role::Computed,
        Ok(pb::Role::CacheHit) => Role::CacheHit,
        Ok(pb::Role::Unknown | pb::Role::Unspecified) => Role::Unknown,
        Err(_) => return Err(invalid("unknown role")),
    };
    let source = match pb::EdgeSource::try_from(edge.source) {
        Ok(pb::EdgeSource::Derived) => Source::Derived,
        Ok(pb::EdgeSource::Reported | pb::EdgeSource::Unspecified) => Source::Reported,
        Err(_) => return Err(invalid("unknown source")),
    };
    let job = if edge.job_id.is_empty() { batch_job.clone() } else { JobId::new(edge.job_id).map_err(|e| invalid(&e.to_string()))? };
    Ok(Edge {
        job_id: job,
        kind,
        path: edge.path,
        param_id: edge.param_id,
        seed: edge.seed,
        target: edge.target,
        aggregation_id: edge.aggregation_id,
        role,
        source,
        recorded_at: now,
    })
}

/// A job's counts as the API sends them.
pub(crate) fn counts_to_proto(counts: Counts) -> pb::AttributionCounts {
    pb::AttributionCounts {
        sims: counts.sims,
        aggs: counts.aggs,
        computed: counts.computed,
        cache_hits: counts.cache_hits,
        unknown: counts.unknown,
        expected_missing: counts.expected_missing,
        sims_computed: counts.sims_computed,
        sims_cache_hits: counts.sims_cache_hits,
        aggs_computed: counts.aggs_computed,
        aggs_cache_hits: counts.aggs_cache_hits,
    }
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AttributionApi for AttributionService {
    async fn record_edges(&self, request: Request<Streaming<pb::RecordEdgesRequest>>) -> Result<Response<pb::RecordEdgesResponse>, Status> {
        let mut stream = request.into_inner();
        let mut response = pb::RecordEdgesResponse::default();
        // Batches are independent and idempotent: decode the next while earlier ones are encoded
        // and stored, up to a few at a time.
        let mut in_flight = tokio::task::JoinSet::new();
        let mut first_error: Option<Status> = None;
        let finish = |done: Result<Result<bool, AttributionError>, tokio::task::JoinError>, response: &mut pb::RecordEdgesResponse, first_error: &mut Option<Status>| match done {
            Ok(Ok(stored)) => response.batches_already_stored += u64::from(!stored),
            Ok(Err(e)) => {
                first_error.get_or_insert(e.into());
            }
            Err(e) => {
                first_error.get_or_insert(Status::internal(format!("batch task failed: {e}")));
            }
        };
        while let Some(batch) = stream.message().await? {
            let job = job_id(&batch.job_id)?;
            let now = crate::edge::now();
            let edges = batch
                .edges
                .into_iter()
                .enumerate()
                .map(|(i, e)| edge_from_proto(e, &job, i, now))
                .collect::<Result<Vec<_>, _>>()?;
            response.batches += 1;
            response.edges_received += edges.len() as u64;
            let batch_id = (!batch.batch_id.is_empty()).then_some(batch.batch_id);
            let attribution = self.attribution.clone();
            in_flight.spawn(async move { attribution.record(&job, batch_id.as_deref(), edges).await });
            while in_flight.len() >= 4 {
                if let Some(done) = in_flight.join_next().await {
                    finish(done, &mut response, &mut first_error);
                }
            }
            if let Some(error) = first_error.take() {
                return Err(error);
            }
        }
        while let Some(done) = in_flight.join_next().await {
            finish(done, &mut response, &mut first_error);
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok(Response::new(response))
    }

    async fn seal_job(&self, request: Request<pb::SealJobRequest>) -> Result<Response<pb::SealJobResponse>, Status> {
        let request = request.into_inner();
        let (seal, newly_sealed) = self.attribution.seal(&job_id(&request.job_id)?, request.derive_missing).await?;
        Ok(Response::new(pb::SealJobResponse {
            counts: Some(counts_to_proto(seal.counts)),
            sealed_at: Some(timestamp(seal.sealed_at)),
            newly_sealed,
        }))
    }

    type ListJobResultsStream = BoxedStream<pb::ListJobResultsResponse>;

    async fn list_job_results(&self, request: Request<pb::ListJobResultsRequest>) -> Result<Response<Self::ListJobResultsStream>, Status> {
        let request = request.into_inner();
        let kind = match pb::ResultKind::try_from(request.kind) {
            Ok(pb::ResultKind::Sim) => Some(Kind::Sim),
            Ok(pb::ResultKind::Agg) => Some(Kind::Agg),
            Ok(pb::ResultKind::Unspecified) => None,
            Err(_) => return Err(Status::invalid_argument("kind: unknown value")),
        };
        let role = match pb::Role::try_from(request.role) {
            Ok(pb::Role::Computed) => Some(Role::Computed),
            Ok(pb::Role::CacheHit) => Some(Role::CacheHit),
            Ok(pb::Role::Unknown) => Some(Role::Unknown),
            Ok(pb::Role::Unspecified) => None,
            Err(_) => return Err(Status::invalid_argument("role: unknown value")),
        };
        // Streamed as read: a sealed job's edges a row group at a time, never all at once.
        let batches = self.attribution.job_edge_batches(&job_id(&request.job_id)?, EDGES_PER_MESSAGE).await?;
        let (target, param_id) = (request.target, request.param_id);
        let messages = batches.filter_map(move |batch| {
            let message = match batch {
                Ok(edges) => {
                    let selected: Vec<pb::Edge> = edges
                        .iter()
                        .filter(|e| kind.is_none_or(|k| e.kind == k) && role.is_none_or(|r| e.role == r))
                        .filter(|e| target.as_deref().is_none_or(|t| e.target.as_deref() == Some(t)))
                        .filter(|e| param_id.as_deref().is_none_or(|p| e.param_id == p))
                        .map(edge_to_proto)
                        .collect();
                    (!selected.is_empty()).then_some(Ok(pb::ListJobResultsResponse { edges: selected }))
                }
                Err(e) => Some(Err(Status::from(e))),
            };
            std::future::ready(message)
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn get_result_owners(&self, request: Request<pb::GetResultOwnersRequest>) -> Result<Response<pb::GetResultOwnersResponse>, Status> {
        let path = request.into_inner().path;
        let owners = self.attribution.owners(&path).await?;
        Ok(Response::new(pb::GetResultOwnersResponse {
            owners: owners
                .into_iter()
                .map(|owner| pb::Edge {
                    job_id: owner.job_id.to_string(),
                    kind: kind_to_proto(owner.kind).into(),
                    path: path.clone(),
                    role: role_to_proto(owner.role).into(),
                    source: source_to_proto(owner.source).into(),
                    ..Default::default()
                })
                .collect(),
        }))
    }

    async fn get_job_attribution(&self, request: Request<pb::GetJobAttributionRequest>) -> Result<Response<pb::GetJobAttributionResponse>, Status> {
        let request = request.into_inner();
        let sample = match request.sample_size {
            0 => 10,
            n => n.min(100) as usize,
        };
        let summary = self.attribution.summary(&job_id(&request.job_id)?, sample).await?;
        Ok(Response::new(pb::GetJobAttributionResponse {
            counts: Some(counts_to_proto(summary.counts)),
            sealed: summary.seal.is_some(),
            sealed_at: summary.seal.as_ref().map(|s| timestamp(s.sealed_at)),
            sample: summary.sample.iter().map(edge_to_proto).collect(),
            missing_paths: summary.missing_paths.into_iter().take(100).collect(),
        }))
    }

    type DeriveEdgesStream = BoxedStream<pb::DeriveEdgesResponse>;

    async fn derive_edges(&self, request: Request<pb::DeriveEdgesRequest>) -> Result<Response<Self::DeriveEdgesStream>, Status> {
        let request = request.into_inner();
        let job = job_id(&request.job_id)?;
        let schemas: Vec<ProvenanceSchema> = match request.schema.as_str() {
            "" | "token" => vec![ProvenanceSchema::Token],
            "bundle" => vec![ProvenanceSchema::Bundle],
            "any" => ProvenanceSchema::ALL.to_vec(),
            other => return Err(Status::invalid_argument(format!("schema must be token, bundle or any, not {other:?}"))),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::DeriveEdgesResponse, Status>>(16);
        let attribution = self.attribution.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let mut last_sent = std::time::Instant::now();
            let result = attribution
                .derive(&job, &schemas, |done, total| {
                    if done == total || last_sent.elapsed() > std::time::Duration::from_millis(200) {
                        last_sent = std::time::Instant::now();
                        let _ = progress_tx.try_send(Ok(pb::DeriveEdgesResponse {
                            param_sets_done: done as u64,
                            param_sets_total: total as u64,
                            counts: None,
                            done: false,
                        }));
                    }
                })
                .await;
            let last = match result {
                Ok((counts, _)) => Ok(pb::DeriveEdgesResponse {
                    param_sets_done: 0,
                    param_sets_total: 0,
                    counts: Some(counts_to_proto(counts)),
                    done: true,
                }),
                Err(e) => Err(Status::from(e)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx).boxed()))
    }

    async fn get_resumable_tasks(&self, request: Request<pb::GetResumableTasksRequest>) -> Result<Response<pb::GetResumableTasksResponse>, Status> {
        let job = job_id(&request.into_inner().job_id)?;
        let (missing, total) = self.attribution.resumable_tasks(&job, &ProvenanceSchema::ALL).await?;
        Ok(Response::new(pb::GetResumableTasksResponse {
            task_json: missing
                .iter()
                .map(|task| modelops_core::pyjson::to_canonical(&modelops_core::pyjson::PyValue::Object(task.to_object())))
                .collect(),
            tasks_total: total as u64,
        }))
    }
}
