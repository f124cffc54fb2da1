//! The `lanmesh` crate: the composition root of the product and its binaries.
//!
//! - `lanmesh-node` ([`node`]): one node process — storage, bus, entity host, the client
//!   edge ([`edge`]) and HTTP — configured by [`config`];
//! - `lanmesh-load` ([`load`]): load scenarios and benchmarks against a running broker, and
//!   the pieces that drive real nodes from outside (node processes, a local cluster, a probe
//!   client, `/metrics` reading), which the integration suite (`lanmesh-tests`) reuses.
//!
//! This crate wires the other crates together and owns nothing domain-specific.

pub mod config;
pub mod edge;
pub mod env_vars;
pub mod http;
pub mod load;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod partner;
pub mod telemetry;
