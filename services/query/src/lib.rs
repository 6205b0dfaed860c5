//! The query service: Arrow Flight and Flight SQL over every indexed job's loss table.
//!
//! [`catalog`] knows every indexed job from its manifest and keeps itself current, and the
//! compacted parts ([`parts`]) that [`compaction`] writes of many small jobs; [`footers`]
//! opens a table to decode it (small ones read whole, large ones from a kept footer); [`command`] parses the JSON commands of
//! `proto/modelops/query/v1/FLIGHT_COMMANDS.md`; [`engine`] prunes jobs on the catalog and
//! streams the answer (one table straight from Parquet through
//! [`modelops_core::parquet_file`] or [`table_cache`], everything else through DataFusion);
//! [`service`] serves it all as `arrow.flight.protocol.FlightService`, Flight SQL included,
//! its DoGet answers encoded by [`flight_body`] with each Arrow buffer copied once.

mod budgeted;
pub mod catalog;
pub mod command;
pub mod compaction;
pub mod engine;
pub mod error;
pub mod flight_body;
pub mod footers;
pub mod parts;
pub mod service;
pub mod table_cache;

pub use catalog::Catalog;
pub use command::Command;
pub use engine::Engine;
pub use error::QueryError;
pub use service::QueryService;
pub use table_cache::TableCache;

#[cfg(test)]
mod tests;
