//! The loss table: its Arrow schema (version
//! [`SCHEMA_VERSION`](modelops_core::loss_table::SCHEMA_VERSION)) and rows.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `job_id` | utf8 | the job |
//! | `param_id` | utf8 | parameter-set id |
//! | `param_<name>` | float64, int64, utf8 or bool | one per parameter (see [`crate::columns`]); null where a set lacks it; a parameter named `id` is `param_id_` |
//! | `loss` | float64 | null unless status is ok |
//! | `n_replicates` | int64 | null unless status is ok |
//! | `target` | utf8 | target entrypoint |
//! | `bundle_digest` | utf8 | the job's bundle ref |
//! | `computed_at` | timestamp[µs, UTC] | the aggregation's write time (null when missing) |
//! | `cache_hit` | bool | the job found the aggregation in the cache |
//! | `status` | utf8 | ok, missing or failed |

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use modelops_core::pyjson::{PyObject, PyValue};

use crate::columns::{ParamColumn, ParamType, text_of};

/// A row's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    /// The aggregation has a finite loss.
    Ok,
    /// The job has no aggregation for this parameter set and target.
    Missing,
    /// The aggregation's result is malformed or its loss is not finite.
    Failed,
}

impl RowStatus {
    /// `ok`, `missing` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Failed => "failed",
        }
    }
}

/// One row: a parameter set × target.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The parameter-set id.
    pub param_id: String,
    /// Its parameter values.
    pub values: PyObject,
    /// The target entrypoint.
    pub target: String,
    /// The loss (ok rows).
    pub loss: Option<f64>,
    /// Replicates (ok rows).
    pub n_replicates: Option<i64>,
    /// Write time of the aggregation, µs since the epoch.
    pub computed_at: Option<i64>,
    /// Found in the cache.
    pub cache_hit: bool,
    /// Status.
    pub status: RowStatus,
}

/// The table's Arrow schema for these parameter columns.
pub fn schema(columns: &[ParamColumn]) -> SchemaRef {
    let mut fields = vec![Field::new("job_id", DataType::Utf8, false), Field::new("param_id", DataType::Utf8, false)];
    for column in columns {
        let data_type = match column.kind {
            ParamType::Int => DataType::Int64,
            ParamType::Float => DataType::Float64,
            ParamType::Text => DataType::Utf8,
            ParamType::Bool => DataType::Boolean,
        };
        fields.push(Field::new(column.column_name(), data_type, true));
    }
    fields.extend([
        Field::new("loss", DataType::Float64, true),
        Field::new("n_replicates", DataType::Int64, true),
        Field::new("target", DataType::Utf8, false),
        Field::new("bundle_digest", DataType::Utf8, false),
        Field::new("computed_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("cache_hit", DataType::Boolean, false),
        Field::new("status", DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}

fn param_array(column: &ParamColumn, rows: &[Row]) -> ArrayRef {
    let value = |row: &Row| row.values.get(&column.name).filter(|v| !v.is_null()).cloned();
    match column.kind {
        ParamType::Int => Arc::new(rows.iter().map(|r| value(r).and_then(|v| v.as_i64())).collect::<Int64Array>()),
        ParamType::Float => Arc::new(rows.iter().map(|r| value(r).and_then(|v| v.as_f64())).collect::<Float64Array>()),
        ParamType::Bool => Arc::new(rows.iter().map(|r| value(r).and_then(|v| v.as_bool())).collect::<BooleanArray>()),
        ParamType::Text => Arc::new(rows.iter().map(|r| value(r).map(|v: PyValue| text_of(&v))).collect::<StringArray>()),
    }
}

/// `rows` as one record batch of `schema`.
pub fn to_batch(schema: &SchemaRef, columns: &[ParamColumn], job_id: &str, bundle_ref: &str, rows: &[Row]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let repeat = |text: &str| -> ArrayRef { Arc::new(StringArray::from(vec![text; rows.len()])) };
    let mut arrays: Vec<ArrayRef> = vec![repeat(job_id), Arc::new(rows.iter().map(|r| Some(r.param_id.as_str())).collect::<StringArray>())];
    arrays.extend(columns.iter().map(|c| param_array(c, rows)));
    arrays.extend([
        Arc::new(rows.iter().map(|r| r.loss).collect::<Float64Array>()) as ArrayRef,
        Arc::new(rows.iter().map(|r| r.n_replicates).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|r| Some(r.target.as_str())).collect::<StringArray>()),
        repeat(bundle_ref),
        Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| r.computed_at).collect::<Vec<_>>()).with_timezone("UTC")),
        Arc::new(rows.iter().map(|r| Some(r.cache_hit)).collect::<BooleanArray>()),
        Arc::new(rows.iter().map(|r| Some(r.status.as_str())).collect::<StringArray>()),
    ]);
    RecordBatch::try_new(Arc::clone(schema), arrays)
}
