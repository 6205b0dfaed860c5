//! A job's rows streamed from its stored inputs, so an index run's memory does not grow with
//! the job: the spec blob is streamed twice from the registry (`ReadJobSpec`), never held whole (first for the
//! parameter columns, which task opens each parameter set and each set's seeds, then for the
//! rows), and the aggregation edges are held in an [`EdgeIndex`] of about 50 bytes an edge.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use futures::stream::BoxStream;
use modelops_core::job::JobId;
use modelops_core::study::{JobSpec, SimJobSpec, SimTaskSpec};
use modelops_registry_client::SharedRegistry;
use tokio::runtime::Handle;

use crate::build::{RowSource, TableSpec};
use crate::columns::ColumnTypes;
use crate::error::IndexError;
use crate::locate::{AggLocation, EdgeIndex, key128};

/// Bytes read from the blob at a time.
const READ_BUFFER: usize = 256 * 1024;
/// Rows handed from the spec reader to the table builder at a time.
const ROW_CHUNK: usize = 512;
/// Row chunks waiting for the table builder, at most.
const CHUNKS_AHEAD: usize = 4;

/// A job's spec blob, read through the registry: each read streams it again.
#[derive(Debug, Clone)]
pub struct SpecBlob {
    registry: SharedRegistry,
    job: JobId,
}

/// A blocking reader over a byte stream (for the spec reader's thread). A status that breaks
/// the stream is kept in `broke`, so the build can tell an unavailable registry (retried) from a
/// refusal once the parser reports a read error.
struct BlockingStreamRead {
    handle: Handle,
    stream: BoxStream<'static, Result<Bytes, tonic::Status>>,
    current: Bytes,
    broke: Arc<std::sync::Mutex<Option<tonic::Status>>>,
}

impl Read for BlockingStreamRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(status)) => {
                    let error = std::io::Error::other(status.message().to_owned());
                    *self.broke.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
                    return Err(error);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

impl SpecBlob {
    /// `job`'s spec blob, as `registry` serves it.
    pub fn new(registry: SharedRegistry, job: JobId) -> Self {
        Self { registry, job }
    }

    /// Opens the blob; runs on a blocking thread (`handle` drives the stream). Also returns where
    /// the status that broke the stream midway is left.
    #[expect(clippy::type_complexity, reason = "a reader and its error slot")]
    fn open(&self, handle: &Handle) -> Result<(Box<dyn BufRead + Send>, Arc<std::sync::Mutex<Option<tonic::Status>>>), IndexError> {
        let spec = handle.block_on(self.registry.read_spec(&self.job)).map_err(|e| IndexError::registry(&e))?;
        if spec.job_type != "simulation" {
            return Err(IndexError::Invalid(format!(
                "job {} is a {} job; only simulation jobs have loss tables",
                self.job, spec.job_type
            )));
        }
        let broke = Arc::default();
        let read = BlockingStreamRead {
            handle: handle.clone(),
            stream: spec.chunks,
            current: Bytes::new(),
            broke: Arc::clone(&broke),
        };
        Ok((Box::new(BufReader::with_capacity(READ_BUFFER, read)), broke))
    }

    /// Reads the blob once, handing every task to `on_task(index, task)` (also those of the old
    /// `batches[].tasks[]` form, which the scan keeps in the spec); returns the spec without them.
    fn for_each_task(&self, handle: &Handle, mut on_task: impl FnMut(usize, SimTaskSpec) -> Result<(), IndexError>) -> Result<SimJobSpec, IndexError> {
        let mut count = 0;
        let (reader, broke) = self.open(handle)?;
        let spec = JobSpec::scan(reader, |index, task| {
            count = index + 1;
            on_task(index, task)
        })
        .map_err(|e| match broke.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Some(status) => IndexError::registry(&status),
            None => e,
        })?;
        let mut job = match spec {
            JobSpec::Simulation(job) => job,
            JobSpec::Calibration { job_id, .. } => {
                return Err(IndexError::Invalid(format!(
                    "job {job_id} is a calibration job; only simulation jobs have loss tables"
                )));
            }
        };
        for (offset, task) in std::mem::take(&mut job.tasks).into_iter().enumerate() {
            on_task(count + offset, task)?;
        }
        Ok(job)
    }
}

/// What the first read of a spec finds: the table's columns and the parameter sets.
#[derive(Debug)]
pub struct SpecOutline {
    /// The table the job's rows go into.
    pub table: TableSpec,
    /// How many parameter sets the job has.
    pub groups: usize,
    /// For each task in spec order, whether it is the first of its parameter set.
    opens_group: Vec<bool>,
    /// The seeds of each parameter set's tasks.
    seeds: Arc<GroupSeeds>,
}

impl SpecOutline {
    /// How many rows the table has: parameter sets × targets.
    pub fn rows(&self) -> usize {
        self.groups * self.table.targets.len()
    }
}

/// The seeds of every parameter set's tasks, in spec order (replicate `i` of a set is its
/// `i`-th task): 8 bytes a task, plus 8 a set.
#[derive(Debug, Default)]
pub struct GroupSeeds {
    /// Where each set's seeds start in `seeds`, and where the last one's end.
    starts: Vec<usize>,
    /// Every task's seed, grouped by parameter set.
    seeds: Vec<u64>,
}

impl GroupSeeds {
    /// Groups `seeds` (one per task, in spec order) by `group_of` (each task's set, numbered in
    /// first-seen order from 0 to `groups`), keeping spec order within a set.
    fn new(groups: usize, group_of: &[u32], seeds: &[u64]) -> Self {
        let mut starts = vec![0; groups + 1];
        for &group in group_of {
            starts[group as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut grouped = vec![0; seeds.len()];
        for (&group, &seed) in group_of.iter().zip(seeds) {
            grouped[next[group as usize]] = seed;
            next[group as usize] += 1;
        }
        Self { starts, seeds: grouped }
    }

    /// The seeds of set `group`'s tasks, in spec order (empty for an unknown set).
    pub fn get(&self, group: usize) -> &[u64] {
        match (self.starts.get(group), self.starts.get(group + 1)) {
            (Some(&start), Some(&end)) => &self.seeds[start..end],
            _ => &[],
        }
    }
}

/// Reads `blob` once for its outline: the columns typed from every parameter set (tasks
/// grouped by param_id in first-seen order, as upstream's `get_task_groups`) and each set's
/// seeds.
pub async fn outline(blob: &SpecBlob) -> Result<SpecOutline, IndexError> {
    let blob = blob.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut seen = std::collections::HashMap::new();
        let mut opens_group = Vec::new();
        let mut group_of: Vec<u32> = Vec::new();
        let mut seeds = Vec::new();
        let mut types = ColumnTypes::default();
        let job = blob.for_each_task(&handle, |_, task| {
            let next = u32::try_from(seen.len()).map_err(|_| IndexError::Invalid("more than 2^32 parameter sets".into()))?;
            let group = *seen.entry(key128(&[&task.param_id])).or_insert(next);
            let first = group == next;
            if first {
                types.add(&task.values);
            }
            opens_group.push(first);
            group_of.push(group);
            seeds.push(task.seed);
            Ok(())
        })?;
        let seeds = GroupSeeds::new(seen.len(), &group_of, &seeds);
        Ok(SpecOutline {
            groups: seen.len(),
            table: TableSpec {
                targets: job.target_entrypoints(),
                job_id: job.job_id,
                bundle_ref: job.bundle_ref,
                columns: types.finish(),
            },
            opens_group,
            seeds: Arc::new(seeds),
        })
    })
    .await
    .map_err(|e| IndexError::Invalid(format!("spec reader failed: {e}")))?
}

/// The rows of the job in table order (parameter sets in task order, targets in spec order),
/// located by `edges`: `blob` is read a second time on a blocking thread, a few chunks of rows
/// ahead of the consumer.
pub fn rows(blob: SpecBlob, outline: &SpecOutline, edges: Arc<EdgeIndex>) -> BoxStream<'static, Result<RowSource, IndexError>> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<RowSource>, IndexError>>(CHUNKS_AHEAD);
    let opens_group = outline.opens_group.clone();
    let group_seeds = Arc::clone(&outline.seeds);
    let targets = outline.table.targets.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(ROW_CHUNK);
        let mut group = 0;
        let stopped = || IndexError::Invalid("the table builder stopped".into());
        let read = blob.for_each_task(&handle, |index, task| {
            if !*opens_group
                .get(index)
                .ok_or_else(|| IndexError::Invalid("the job spec changed between reads".into()))?
            {
                return Ok(());
            }
            let seeds: Arc<[u64]> = Arc::from(group_seeds.get(group));
            for target in &targets {
                let edge = edges.get(&task.param_id, target);
                chunk.push(RowSource {
                    param_id: task.param_id.clone(),
                    values: task.values.clone(),
                    seeds: Arc::clone(&seeds),
                    location: AggLocation {
                        group,
                        target: target.clone(),
                        cache_hit: edge.as_ref().is_some_and(|(_, cache_hit)| *cache_hit),
                        path: edge.map(|(path, _)| path),
                    },
                });
                if chunk.len() >= ROW_CHUNK {
                    sender
                        .blocking_send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(ROW_CHUNK))))
                        .map_err(|_| stopped())?;
                }
            }
            group += 1;
            Ok(())
        });
        // A consumer that stopped has its own error.
        let _ = sender.blocking_send(read.map(|_| chunk));
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
        .flat_map(|chunk| {
            let rows: Vec<Result<RowSource, IndexError>> = match chunk {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(rows)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::GroupSeeds;

    #[test]
    fn seeds_are_grouped_by_parameter_set_in_spec_order() {
        // Tasks of sets 0, 1, 0, 2, 1 (interleaved, as a spec may list them).
        let seeds = GroupSeeds::new(3, &[0, 1, 0, 2, 1], &[10, 20, 11, 30, 21]);
        assert_eq!(seeds.get(0), [10, 11]);
        assert_eq!(seeds.get(1), [20, 21]);
        assert_eq!(seeds.get(2), [30]);
        assert_eq!(seeds.get(3), [] as [u64; 0]);
    }
}
