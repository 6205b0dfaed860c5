//! `modelops.indexer.v1.Indexer` over an [`Indexer`].

use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use modelops_core::job::JobId;
use modelops_core::loss_table::SCHEMA_VERSION;
use modelops_proto::indexer::v1 as pb;
use modelops_proto::indexer::v1::indexer_server::{Indexer as IndexerApi, IndexerServer};
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::indexer::{Indexer, Phase, RequestError};

/// The fully-qualified service name, for health and reflection.
pub const SERVICE_NAME: &str = "modelops.indexer.v1.Indexer";

/// The gRPC face of the indexer.
#[derive(Debug, Clone)]
pub struct IndexerService {
    indexer: Indexer,
}

impl IndexerService {
    /// Serves `indexer`.
    pub fn new(indexer: Indexer) -> Self {
        Self { indexer }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> IndexerServer<Self> {
        IndexerServer::new(self)
    }
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::Registry(status) => status,
            RequestError::NotFinished(ref job, status) => {
                use tonic_types::{ErrorDetails, StatusExt as _};
                let metadata = std::collections::HashMap::from([("job_id".to_owned(), job.to_string()), ("status".to_owned(), status.to_string())]);
                Status::with_error_details(
                    tonic::Code::FailedPrecondition,
                    error.to_string(),
                    ErrorDetails::with_error_info("JOB_NOT_FINISHED", "indexer.modelops", metadata),
                )
            }
        }
    }
}

fn job_id(id: &str) -> Result<JobId, Status> {
    JobId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(|at| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// Converts a status to its message.
pub fn status_to_proto(status: &crate::indexer::Status) -> pb::IndexStatus {
    let phase = match status.phase {
        Phase::NotIndexed => pb::IndexPhase::NotIndexed,
        Phase::Queued => pb::IndexPhase::Queued,
        Phase::Running => pb::IndexPhase::Running,
        Phase::Done => pb::IndexPhase::Done,
        Phase::Failed => pb::IndexPhase::Failed,
    };
    pb::IndexStatus {
        job_id: status.job_id.to_string(),
        phase: phase.into(),
        counts: Some(pb::IndexCounts {
            total: status.counts.total,
            ok: status.counts.ok,
            missing: status.counts.missing,
            failed: status.counts.failed,
        }),
        processed: status.processed,
        expected: status.expected,
        input_fingerprint: status.fingerprint.clone(),
        results_path: status.results_path.clone(),
        schema_version: u32::try_from(SCHEMA_VERSION).unwrap_or(u32::MAX),
        error: status.error.clone(),
        started_at: timestamp(status.started_at),
        finished_at: timestamp(status.finished_at),
        unchanged: status.unchanged,
    }
}

fn finished(phase: Phase) -> bool {
    matches!(phase, Phase::Done | Phase::Failed)
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::GetIndexStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IndexerApi for IndexerService {
    async fn index_job(&self, request: Request<pb::IndexJobRequest>) -> Result<Response<pb::IndexJobResponse>, Status> {
        let request = request.into_inner();
        let job = job_id(&request.job_id)?;
        let mut updates = self.indexer.subscribe();
        let queued = self.indexer.request(&job, request.force).await?;
        if !request.wait {
            return Ok(Response::new(pb::IndexJobResponse {
                status: Some(status_to_proto(&queued)),
            }));
        }
        loop {
            match updates.recv().await {
                Ok(status) if status.job_id == job && finished(status.phase) => {
                    return Ok(Response::new(pb::IndexJobResponse {
                        status: Some(status_to_proto(&status)),
                    }));
                }
                Ok(_) => {}
                // Updates were dropped, this job's last one maybe: ask for its status now.
                Err(RecvError::Lagged(_)) => {
                    let status = self.indexer.status(&job).await?;
                    if finished(status.phase) {
                        return Ok(Response::new(pb::IndexJobResponse {
                            status: Some(status_to_proto(&status)),
                        }));
                    }
                }
                Err(RecvError::Closed) => return Err(Status::unavailable("the indexer is shutting down")),
            }
        }
    }

    async fn get_index_status(&self, request: Request<pb::GetIndexStatusRequest>) -> Result<Response<pb::GetIndexStatusResponse>, Status> {
        let status = self.indexer.status(&job_id(&request.into_inner().job_id)?).await?;
        Ok(Response::new(pb::GetIndexStatusResponse {
            status: Some(status_to_proto(&status)),
        }))
    }

    type WatchIndexStatusStream = StatusStream;

    async fn watch_index_status(&self, request: Request<pb::GetIndexStatusRequest>) -> Result<Response<Self::WatchIndexStatusStream>, Status> {
        let job = job_id(&request.into_inner().job_id)?;
        let mut updates = self.indexer.subscribe();
        let current = self.indexer.status(&job).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let indexer = self.indexer.clone();
        tokio::spawn(async move {
            let done = finished(current.phase);
            if tx.send(Ok(pb::GetIndexStatusResponse { status: Some(status_to_proto(&current)) })).await.is_err() || done {
                return;
            }
            loop {
                let update = tokio::select! {
                    () = tx.closed() => return,
                    update = updates.recv() => update,
                };
                match update {
                    Ok(status) if status.job_id == job => {
                        let done = finished(status.phase);
                        if tx.send(Ok(pb::GetIndexStatusResponse { status: Some(status_to_proto(&status)) })).await.is_err() || done {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Updates were dropped: send this job's status as it is now.
                    Err(RecvError::Lagged(_)) => {
                        let Ok(status) = indexer.status(&job).await else { return };
                        let done = finished(status.phase);
                        if tx.send(Ok(pb::GetIndexStatusResponse { status: Some(status_to_proto(&status)) })).await.is_err() || done {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
