//! End-to-end tests, one binary (modules below). Run them with `scripts/test`, which installs and
//! starts etcd, Azurite and moto and provides grpcurl and Python.

#![expect(unused_crate_dependencies, reason = "the fixture library's dependencies are linked into this binary too")]

mod attribution;
mod corpus;
mod dashboard;
mod demo;
mod deployment;
mod indexer;
mod query;
mod readme;
mod registry;
mod serve;
mod stores;
mod traces;
