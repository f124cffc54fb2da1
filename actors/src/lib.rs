//! lanmesh-actors: the domain and the entity host.
//!
//! - [`model`]: pure types and state machines — no I/O, no async, deterministic; time is
//!   passed in as an argument.
//! - [`entities`]: each entity kind's wire messages and its [`host::behavior::EntityBehavior`].
//! - [`host`]: runs entities as actix actors — spawn on first message, restore, persist with
//!   an epoch fence, de-duplicate, passivate — and owns this node's share of the shards.
//!
//! Dependency direction: this crate uses `lanmesh-bus` and `lanmesh-storage`; neither knows it.

pub mod entities;
pub mod host;
pub mod model;
