//! Edges as Parquet (zstd), readable by any Parquet reader (`pyarrow.parquet.read_table`). The
//! writer's output depends only on the edges, so identical edge sets give identical bytes.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt64Type, TimestampMicrosecondType};
use bytes::Bytes;
use chrono::DateTime;
use modelops_core::job::JobId;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::edge::{Edge, Kind, Role, Source};

/// Why edge bytes cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Arrow refused the data.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet refused the data.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A column is missing or has an unexpected value.
    #[error("edge file: {0}")]
    Malformed(String),
}

/// The Arrow schema of edge files.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("param_id", DataType::Utf8, false),
        Field::new("seed", DataType::UInt64, true),
        Field::new("target", DataType::Utf8, true),
        Field::new("aggregation_id", DataType::Utf8, true),
        Field::new("role", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("recorded_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]))
}

/// The edges as one record batch.
pub fn to_record_batch(edges: &[Edge]) -> Result<RecordBatch, CodecError> {
    let strings = |f: &dyn Fn(&Edge) -> &str| -> ArrayRef { Arc::new(edges.iter().map(|e| Some(f(e))).collect::<StringArray>()) };
    let optional = |f: &dyn Fn(&Edge) -> Option<&str>| -> ArrayRef { Arc::new(edges.iter().map(f).collect::<StringArray>()) };
    let columns: Vec<ArrayRef> = vec![
        strings(&|e| e.job_id.as_str()),
        strings(&|e| e.kind.as_str()),
        strings(&|e| &e.path),
        strings(&|e| &e.param_id),
        Arc::new(edges.iter().map(|e| e.seed).collect::<UInt64Array>()),
        optional(&|e| e.target.as_deref()),
        optional(&|e| e.aggregation_id.as_deref()),
        strings(&|e| e.role.as_str()),
        strings(&|e| e.source.as_str()),
        Arc::new(TimestampMicrosecondArray::from(edges.iter().map(|e| e.recorded_at.timestamp_micros()).collect::<Vec<_>>()).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// The edges as a Parquet file.
pub fn to_parquet(edges: &[Edge]) -> Result<Bytes, CodecError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(128 * 1024))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(properties))?;
    for chunk in edges.chunks(64 * 1024) {
        writer.write(&to_record_batch(chunk)?)?;
    }
    writer.close()?;
    Ok(Bytes::from(out))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::StringArray, CodecError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| CodecError::Malformed(format!("missing utf8 column {name}")))
}

/// An aggregation edge as a table builder needs it, borrowed from a decoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggEdgeRef<'a> {
    /// The parameter-set id.
    pub param_id: &'a str,
    /// The target entrypoint.
    pub target: &'a str,
    /// The aggregation directory.
    pub path: &'a str,
    /// Computed, cache hit or unknown.
    pub role: Role,
}

/// The columns [`visit_agg_edges`] reads.
pub const AGG_EDGE_COLUMNS: [&str; 5] = ["kind", "path", "param_id", "target", "role"];

/// Hands every aggregation edge with a target in `batch` (which needs at least
/// [`AGG_EDGE_COLUMNS`]) to `visit`, in row order.
pub fn visit_agg_edges(batch: &RecordBatch, mut visit: impl FnMut(AggEdgeRef<'_>)) -> Result<(), CodecError> {
    let (kind, path, param_id, target, role) = (
        strings(batch, "kind")?,
        strings(batch, "path")?,
        strings(batch, "param_id")?,
        strings(batch, "target")?,
        strings(batch, "role")?,
    );
    for row in 0..batch.num_rows() {
        if kind.value(row) != Kind::Agg.as_str() || target.is_null(row) {
            continue;
        }
        visit(AggEdgeRef {
            param_id: param_id.value(row),
            target: target.value(row),
            path: path.value(row),
            role: Role::parse(role.value(row)).ok_or_else(|| CodecError::Malformed(format!("row {row}: invalid role")))?,
        });
    }
    Ok(())
}

/// Reads a Parquet edge file.
pub fn from_parquet(bytes: Bytes) -> Result<Vec<Edge>, CodecError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut edges = Vec::new();
    for batch in reader {
        edges.extend(edges_of(&batch?)?);
    }
    Ok(edges)
}

/// The edges of one batch of an edge file.
pub fn edges_of(batch: &RecordBatch) -> Result<Vec<Edge>, CodecError> {
    let (job_id, kind, path, param_id) = (strings(batch, "job_id")?, strings(batch, "kind")?, strings(batch, "path")?, strings(batch, "param_id")?);
    let (target, aggregation_id, role, source) = (strings(batch, "target")?, strings(batch, "aggregation_id")?, strings(batch, "role")?, strings(batch, "source")?);
    let seed = batch
        .column_by_name("seed")
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| CodecError::Malformed("missing uint64 column seed".into()))?;
    let recorded_at = batch
        .column_by_name("recorded_at")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| CodecError::Malformed("missing timestamp column recorded_at".into()))?;
    let bad = |what: &str, row: usize| CodecError::Malformed(format!("row {row}: invalid {what}"));
    let mut edges = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let text = |array: &StringArray| (!array.is_null(row)).then(|| array.value(row).to_owned());
        edges.push(Edge {
            job_id: JobId::new(job_id.value(row)).map_err(|_| bad("job_id", row))?,
            kind: Kind::parse(kind.value(row)).ok_or_else(|| bad("kind", row))?,
            path: path.value(row).to_owned(),
            param_id: param_id.value(row).to_owned(),
            seed: (!seed.is_null(row)).then(|| seed.value(row)),
            target: text(target),
            aggregation_id: text(aggregation_id),
            role: Role::parse(role.value(row)).ok_or_else(|| bad("role", row))?,
            source: Source::parse(source.value(row)).ok_or_else(|| bad("source", row))?,
            recorded_at: DateTime::from_timestamp_micros(recorded_at.value(row)).ok_or_else(|| bad("recorded_at", row))?,
        });
    }
    Ok(edges)
}
