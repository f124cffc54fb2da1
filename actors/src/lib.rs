//! lanmesh-actors: the domain.
//!
//! - [`model`]: pure types and state machines — no I/O, no async, deterministic; time is
//!   passed in as an argument.
//! - `entities/` (actix actors wrapping the models) and the entity host arrive with the
//!   sharded entity layer.
//!
//! Dependency direction: this crate uses `lanmesh-bus` and `lanmesh-storage`; neither knows it.

pub mod model;
