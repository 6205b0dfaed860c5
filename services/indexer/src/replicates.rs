//! The per-replicate table, `replicates.parquet`: one row per replicate loss of every
//! aggregation whose `result.json` carries `diagnostics.per_replicate_losses`, upstream's job
//! view of the same name (UPSTREAM-FORMAT §7.2) with the target entrypoint as `target`.
//! Replicate `i` of a parameter set is its `i`-th task in spec order, so it has that task's seed.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `job_id` | utf8 | the job |
//! | `param_id` | utf8 | parameter-set id |
//! | `target` | utf8 | target entrypoint |
//! | `replicate_idx` | int64 | position in `per_replicate_losses`, from 0 |
//! | `seed` | int64 | the seed of the set's `replicate_idx`-th task; null when the list is longer than the set's tasks (or the seed is over 2^63-1) |
//! | `loss` | float64 | the replicate's loss; null when not finite |

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The version of the replicates schema, part of the input fingerprint of a job that has one.
pub const REPLICATES_VERSION: u64 = 1;

/// The per-replicate losses of one aggregation and the seeds of its parameter set's tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateLosses {
    /// `diagnostics.per_replicate_losses`, in order.
    pub losses: Vec<f64>,
    /// The seeds of the parameter set's tasks, in spec order.
    pub seeds: Arc<[u64]>,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateRow {
    /// The parameter-set id.
    pub param_id: String,
    /// The target entrypoint.
    pub target: String,
    /// Position in the aggregation's list.
    pub replicate_idx: i64,
    /// The seed of the replicate's task.
    pub seed: Option<i64>,
    /// The loss, when finite.
    pub loss: Option<f64>,
}

/// The rows of one aggregation's replicates.
pub fn rows(param_id: &str, target: &str, replicates: &ReplicateLosses) -> impl Iterator<Item = ReplicateRow> {
    replicates.losses.iter().enumerate().map(move |(i, loss)| ReplicateRow {
        param_id: param_id.to_owned(),
        target: target.to_owned(),
        replicate_idx: i as i64,
        seed: replicates.seeds.get(i).and_then(|&seed| i64::try_from(seed).ok()),
        loss: Some(*loss).filter(|l| l.is_finite()),
    })
}

/// The table's Arrow schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("param_id", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("replicate_idx", DataType::Int64, false),
        Field::new("seed", DataType::Int64, true),
        Field::new("loss", DataType::Float64, true),
    ]))
}

/// `rows` as one record batch of [`schema`].
pub fn to_batch(schema: &SchemaRef, job_id: &str, rows: &[ReplicateRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![job_id; rows.len()])),
        Arc::new(rows.iter().map(|r| Some(r.param_id.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.target.as_str())).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.replicate_idx)).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.seed).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| r.loss).collect::<Float64Array>()),
    ];
    RecordBatch::try_new(Arc::clone(schema), arrays)
}
