//! Test support for Verity's crates, kept in a crate of its own so that it is only ever a
//! dev-dependency: a test helper that lived behind a feature of a crate the services link
//! (`verity-kube`'s `mock`, `verity-telemetry`'s `test-collector`) changed that crate's feature
//! set between `cargo build --bins` and `cargo test`, so the test build compiled it and every
//! crate above it again, and it could reach a production binary through feature unification.
//!
//! - [`chain`]: valid signed chains built by hand, for the tests of `verity-chain` and of each
//!   node's way of applying the chain;
//! - [`kube_api`]: a scripted Kubernetes API server (tests drive the real kube client at it);
//! - [`otlp`]: an in-process OTLP/gRPC trace receiver (tests check what services export).

pub mod chain;
pub mod kube_api;
pub mod otlp;
