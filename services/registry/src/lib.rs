//! The ModelOps job registry.
//!
//! Jobs' state (upstream's `state.json`) lives in a [`store::VersionedStore`] and changes only by
//! compare-and-swap; see the crate README for the RPCs and configuration.

pub mod retry;
pub mod store;
