//! The end-to-end scenarios, compiled into one test binary. Each starts its own devnet (a real
//! nats-server and the real service binaries on run-time ports); the harness runs them one at a
//! time so timing on a small machine stays predictable.

#![allow(clippy::unwrap_used)]

mod bus;
mod conformance;
mod contract;
mod crash_recovery;
mod devnet;
mod errors;
mod eth_namespace;
mod failover;
mod fraud;
mod grpc_auth;
mod kill_nine;
mod limits;
mod load_generator;
mod nats_cluster;
mod overload;
mod proving;
mod realtime;
mod storage_full;
mod subscriptions;
mod trace;
mod transfer;
