//! Byte-exact model of what the Python ModelOps writes, shared by every service.
//!
//! - [`pyjson`]: JSON read and written exactly as Python's `json` module does;
//! - [`ids`]: param_id, seeds, task and aggregation ids, shards, bundle digests;
//! - [`paths`]: the `token/v1` and `bundle/v1` provenance layouts and the other keys;
//! - [`loss_table`]: the loss table's results paths, manifest and summary;
//! - [`param_columns`]: the loss table's parameter columns, typed from a job's spec;
//! - [`records`]: simulation and aggregation records through `object_store`;
//! - [`job`]: job ids, statuses, transitions and `state.json`;
//! - [`study`]: Calabaria studies expanded to SimJobs, and the SimJob spec JSON;
//! - [`flight_command`]: the JSON commands and tickets of the query service's Flight API;
//! - [`page_token`]: the registry's `ListJobs` page token;
//! - `parquet_file`: Parquet files read from a store by byte ranges (feature `stores`);
//! - `confined_fs`: `file://` stores that read only regular files beneath their root, for the
//!   provenance store that runners write (feature `stores`);
//! - `store`: store URLs (`file://`, `memory://`, `az://`, `s3://`, `gs://`) to object stores
//!   (feature `stores`);
//! - [`time`]: Python `isoformat()` timestamps;
//! - [`synthetic`]: upstream-layout results for a job, for tests, benchmarks and examples.
//!
//! The `stores` feature (on by default) brings the object store backends and Parquet; without
//! it the crate is its parsers and formats alone, which is what the fuzz targets in `fuzz/` build.

pub mod compacted;
#[cfg(feature = "stores")]
pub mod confined_fs;
pub mod flight_command;
pub mod ids;
pub mod job;
pub mod loss_table;
pub mod page_token;
pub mod param_columns;
#[cfg(feature = "stores")]
pub mod parquet_file;
pub mod paths;
pub mod pyjson;
pub mod records;
#[cfg(feature = "stores")]
pub mod store;
pub mod study;
pub mod synthetic;
pub mod time;

#[cfg(test)]
mod upstream_fixtures;
